"""The GPU check (`python -m bench gpu`) at toy sizes on the CPU, as CI runs it: one JSON per part,
with the keys a GPU sitting will fill and values that make sense."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import PARTS, TARGETS, paper_cell_counts

ROOT = Path(__file__).resolve().parent.parent


def test_a_table_one_cell_is_1500_outer_steps_and_17_evaluations():
    # 150 epochs of 50,000 / 5,000 steps; per stage of 30 epochs, tests at 10 and 20 and the stage
    # end, 5 stages, then the final live poster and pool.
    assert paper_cell_counts() == (1500, 17)


@pytest.mark.slow
def test_toy_check_writes_one_json_per_part_with_sane_figures(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PPODD_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "bench", "gpu", "--quick", "--out", str(out), "--",
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GPU check done: 5 part(s), failed: none" in proc.stdout, proc.stdout[-3000:]
    found = {}
    for part in PARTS + ("summary",):
        files = sorted(out.glob(f"gpu_{part}_toy-cpu-*.json"))
        assert len(files) == 1, (part, files)
        found[part] = json.loads(files[0].read_text())
        assert found[part]["device"] == "cpu" and found[part]["machine"] and "error" not in found[part]

    tests = found["tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == 0 and tests["skipped"] >= 1   # no CUDA here

    outer = found["outer"]["variants"]
    assert set(outer) == {"plain", "checkpointed", "tf32", "bf16"}
    assert all(v["median_s"] > 0 and v["peak_gib"] > 0 for v in outer.values())

    modes = found["eval"]["modes"]
    assert set(modes) == {"ieee", "tf32", "bf16", "ieee_compiled"}
    for mode in modes.values():
        assert mode["steps_timed"] > 0 and mode["s_per_step"] > 0 and mode["warmup_s"] > 0
        assert mode["projected_2000_steps_s"] == pytest.approx(2000 * mode["s_per_step"], rel=1e-3)

    pairs = found["gradient"]["pairs"]
    # On the CPU "device" is the CPU: the same draws give the same gradient, bit for bit.
    assert pairs["device_ieee_vs_cpu_float32"] == {"cosine": 1.0, "rel_error": 0.0}
    assert pairs["device_float64_vs_cpu_float64"] == {"cosine": 1.0, "rel_error": 0.0}
    assert pairs["cpu_float32_vs_cpu_float64"]["cosine"] > 0.99
    assert all(-1 <= p["cosine"] <= 1 and p["rel_error"] >= 0 for p in pairs.values())

    distill = found["distill"]
    assert distill["exit_code"] == 0 and distill["outer_steps"] == 3 and 0 <= distill["accuracy"] <= 100
    assert distill["phase_seconds"]["distill"] > 0 and distill["evaluation_s"] > 0

    summary = found["summary"]
    assert summary["toy"] is True and summary["parts_failed"] == []
    assert set(summary["targets"]) == set(TARGETS)
    assert all(t["met"] is None and t["measured"] > 0 for t in summary["targets"].values())
    assert summary["cell_outer_steps"] == 1500 and summary["cell_s_from_short_run"] > 0
