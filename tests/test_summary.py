"""`ppodd summarize`: records, groups over seeds, paired differences, ablations, formats, bad files."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import cli, set_args

from ppodd.report import records as record_fields
from ppodd.report import stats, summary, tables
from ppodd.storage import writer as store
from ppodd.config import build_config, load_config, to_dict
from ppodd.storage.record import EvalResult, RunRecord, StageRecord
from ppodd.cell.identity import result_name

H, W, TILE, K = 15, 38, 8, 10
CHECKPOINTS = [2, 4]


def fake_run(out: Path, method: str = "ppodd", ipc: float = 0.9, seed: int = 0, sets: tuple = (),
             accuracy: float = 50.0, nets: int = 3, zca_key: str = "") -> Path:
    """A complete run file of configs/demo.yaml with `sets`, written by store.write_run with
    made-up accuracies around `accuracy` (seeded by the cell), without distilling."""
    cfg = to_dict(load_config("configs/demo.yaml", [f"method={method}", f"poster.ipc={ipc}", f"seed={seed}",
                                                    *sets]))
    stages = 1 if method == "podd" else cfg["ppodd"]["stages"]
    gen = torch.Generator().manual_seed(zlib.crc32(repr((method, ipc, seed, sets)).encode()))

    def evaluation(members: list[int], pi: list[float], level: float) -> EvalResult:
        per_net = (level + 3 * torch.randn(len(CHECKPOINTS), nets, generator=gen)).double()
        return EvalResult(list(CHECKPOINTS), per_net, members, pi, H * W * len(members),
                          H * W * len(members) / (K * TILE**2), 1.0)

    records = []
    for t in range(1, stages + 1):
        pi_before = [1.0 / t] * t
        pi_after = [1.0 / (t + 1)] * (t + 1)
        acc = evaluation(list(range(1, t)) + [0], pi_before, accuracy - 5 + t)
        records.append(StageRecord(t, 2, torch.randn(3, H, W, generator=gen), torch.rand(16, K, generator=gen),
                                   None, pi_before, pi_after, acc, acc.best, H * W * t))
    live = evaluation([0], [1.0], accuracy - 2)
    pool = evaluation(list(range(1, stages)) + [0], [1.0 / stages] * stages, accuracy) if stages > 1 else live
    record = RunRecord(cfg, {"height": H, "width": W, "tile": TILE, "rows": 2, "cols": 5, "n_x": 8, "n_y": 2,
                             "pixels": H * W, "effective_ipc": H * W / (K * TILE**2)},
                       [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], [f"class {i}" for i in range(K)],
                       torch.randn(3, H, W, generator=gen), records, live, pool, {"loss": torch.rand(4)},
                       {"seconds_total": 30.0 + seed}, zca_key, {"run": seed})
    return store.write_run(record, out / result_name(build_config(cfg)))


def fake_grid(out: Path, seeds=(0, 1), ipcs=(0.6, 0.9)) -> list[Path]:
    return [fake_run(out, method, ipc, seed, accuracy=40 + 10 * ipc + (3 if method == "ppodd" else 0))
            for method in ("ppodd", "podd") for ipc in ipcs for seed in seeds]


# --- numbers recomputed straight from the files, without ppodd's readers ------------------------


def recompute(folder: Path) -> dict:
    """{(method, ipc): {"pool": (mean, std), "live": ..., "eff_pool", "eff_live", "seeds"}} and
    {ipc: {"pool": (mean, low, high), "live": ...}} for P-PoDD − PoDD paired by seed."""
    values: dict = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as f:
            a = f.attrs
            key = (str(a["method"]), float(a["ipc"]))
            entry = values.setdefault(key, {"runs": {}})
            entry["runs"][int(a["seed"])] = {s: float(f[f"final/{s}/per_net"][-1].mean()) for s in ("pool", "live")}
            entry["eff_pool"], entry["eff_live"] = float(a["effective_ipc_pool"]), float(a["effective_ipc_live"])
    groups = {}
    for key, entry in values.items():
        groups[key] = dict(entry, seeds=sorted(entry["runs"]))
        for score in ("pool", "live"):
            xs = [r[score] for r in entry["runs"].values()]
            groups[key][score] = (float(np.mean(xs)), float(np.std(xs, ddof=1)))
    diffs = {}
    for (method, ipc), entry in groups.items():
        if method != "ppodd" or ("podd", ipc) not in groups:
            continue
        other = groups[("podd", ipc)]["runs"]
        seeds = [s for s in entry["runs"] if s in other]
        diffs[ipc] = {}
        for score in ("pool", "live"):
            d = np.array([entry["runs"][s][score] - other[s][score] for s in seeds])
            half = {1: 12.706, 2: 4.303}[len(d) - 1] * d.std(ddof=1) / math.sqrt(len(d))
            diffs[ipc][score] = (float(d.mean()), float(d.mean() - half), float(d.mean() + half))
    return {"groups": groups, "diffs": diffs}


_CELL = re.compile(r"^(-?\d+\.\d+) ± (-?\d+\.\d+) \(n=(\d+), (\d+\.\d+)\)$")
_DIFF = re.compile(r"^([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\] \(n=(\d+)\)$")


def check_main_rows(rows: list[list[str]], header: list[str], expected: dict) -> None:
    """Rows of the main table (method, variant, setting, score, one cell per IPC) against `expected`."""
    ipcs = [float(h.split()[1]) for h in header[4:]]
    seen = 0
    for row in rows:
        method, score = row[0], row[3]
        for ipc, cell in zip(ipcs, row[4:]):
            if score in ("pool", "live"):
                m = _CELL.match(cell)
                assert m, cell
                mean, std = expected["groups"][(method, ipc)][score]
                assert abs(float(m[1]) - mean) <= 0.0051 and abs(float(m[2]) - std) <= 0.0051
                assert int(m[3]) == 2
                assert abs(float(m[4]) - expected["groups"][(method, ipc)][f"eff_{score}"]) <= 0.00051
            else:
                m = _DIFF.match(cell)
                assert m and method == "ppodd", cell
                mean, low, high = expected["diffs"][ipc][score.split()[1]]
                assert max(abs(float(m[1]) - mean), abs(float(m[2]) - low), abs(float(m[3]) - high)) <= 0.0051
            seen += 1
    assert seen == 6 * 2  # (pool, live) × 2 methods + 2 Δ rows, for each of 2 IPCs


def parse_text_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.split("\n\n")[0].splitlines()
    return re.split(r"\s{2,}", lines[1]), [re.split(r"\s{2,}", line) for line in lines[3:]]


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    block = text.split("\n\n")[1].splitlines()  # after the bold title
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in block]
    return cells[0], cells[2:]


def check_json(document: dict, expected: dict, folder: Path) -> None:
    assert document["format"] == "ppodd-summary" and document["bad_files"] == []
    groups = {(g["method"], g["ipc"]): g for g in document["groups"]}
    assert groups.keys() == expected["groups"].keys()
    for key, g in groups.items():
        want = expected["groups"][key]
        assert g["n"] == 2 and g["seeds"] == want["seeds"] and g["missing_seeds"] == []
        for score in ("pool", "live"):
            assert g[score]["mean"] == pytest.approx(want[score][0], abs=1e-9)
            assert g[score]["std"] == pytest.approx(want[score][1], abs=1e-9)
            assert g[score]["effective_ipc"] == want[f"eff_{score}"]
        if key[0] == "ppodd":
            for score in ("pool", "live"):
                d = g["difference"][score]
                assert (d["mean"], d["low"], d["high"]) == pytest.approx(expected["diffs"][key[1]][score], abs=1e-9)
        else:
            assert g["difference"] is None
    assert len(document["runs"]) == 8
    for run in document["runs"]:
        with h5py.File(run["file"], "r") as f:
            assert Path(run["file"]).parent == folder
            assert run["final_accuracy"] == float(f.attrs["final_accuracy"])
            assert run["final_accuracy_live_at"] == {
                str(c): pytest.approx(m) for c, m in zip(f["final/live/checkpoints"][()], f["final/live/mean"][()])}
            assert run["pi_history"] == [f[f"stages/{n}/pi_after"][()].tolist() for n in sorted(f["stages"])]
            assert run["poster_shape"] == list(f["initial_poster"].shape)
            assert run["complete"] is True and run["seed"] == int(f.attrs["seed"])


def check_csv(text: str, expected: dict) -> None:
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["table"] == "group"]
    assert len(rows) == 8
    for r in rows:
        want = expected["groups"][(r["method"], float(r["ipc"]))]
        assert float(r["mean"]) == pytest.approx(want[r["score"]][0], abs=1e-9)
        assert float(r["std"]) == pytest.approx(want[r["score"]][1], abs=1e-9)
        assert r["seeds"] == "0 1" and r["n"] == "2"
        if r["method"] == "ppodd":
            d = expected["diffs"][float(r["ipc"])][r["score"]]
            assert (float(r["diff_mean"]), float(r["diff_low"]), float(r["diff_high"])) == pytest.approx(d, abs=1e-9)


def check_every_format(folder: Path) -> None:
    expected = recompute(folder)
    outputs = {}
    for fmt in ("table", "markdown", "csv", "json"):
        result = cli("summarize", str(folder), "--format", fmt)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        outputs[fmt] = result.stdout
    check_main_rows(*reversed(parse_text_table(outputs["table"])), expected)
    check_main_rows(*reversed(parse_markdown_table(outputs["markdown"])), expected)
    check_csv(outputs["csv"], expected)
    check_json(json.loads(outputs["json"]), expected, folder)


def test_summarize_fabricated_grid_every_format_matches_files(tmp_path):
    fake_grid(tmp_path)
    check_every_format(tmp_path)


@pytest.mark.slow
def test_summarize_submitted_demo_grid_every_format_matches_files(tmp_path, tiny_overrides):
    out = tmp_path / "grid"
    sets = set_args(tiny_overrides + ["distill.batch_patches=32"])
    submitted = cli("submit", "--config", "configs/demo.yaml", *sets, "--ipc", "0.6,0.9",
                    "--seeds", "0-1", "--method", "ppodd,podd", "--out", str(out),
                    "--cluster", "local")
    assert submitted.exit_code == 0, submitted.output
    check_every_format(out)
    table = cli("summarize", str(out))
    assert "Δ pool vs podd" in table.stdout and "!" not in table.stdout


def test_summarize_out_file_and_plots_written(tmp_path):
    fake_grid(tmp_path / "runs")
    result = cli("summarize", str(tmp_path / "runs" / "*.h5"), "--format", "markdown",
                 "--out", str(tmp_path / "t.md"), "--plots", str(tmp_path / "fig"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.md").read_text().startswith("**synthetic: final accuracy")
    from PIL import Image

    from ppodd.report import plots
    for name in ("accuracy-vs-ipc-synthetic.png", "checkpoints-synthetic.png"):
        with Image.open(tmp_path / "fig" / name) as image:
            assert image.size == (plots.WIDTH_PX, plots.CHART_HEIGHT_PX)


# --- flags: missing seeds, incomplete runs ------------------------------------------------------


def test_summarize_missing_seed_flagged_not_averaged(tmp_path):
    fake_grid(tmp_path, ipcs=(0.9,))
    next(tmp_path.glob("podd-*seed1-*.h5")).unlink()
    document = json.loads(cli("summarize", str(tmp_path), "--format", "json").stdout)
    podd = next(g for g in document["groups"] if g["method"] == "podd")
    assert podd["n"] == 1 and podd["seeds"] == [0] and podd["missing_seeds"] == [1]
    ppodd = next(g for g in document["groups"] if g["method"] == "ppodd")
    assert ppodd["difference"]["n"] == 1 and ppodd["difference"]["pool"]["low"] is None
    text = cli("summarize", str(tmp_path)).stdout
    assert "! podd, ipc 0.9: missing seeds 1" in text


def test_summarize_manifest_cell_without_result_flagged_incomplete(tmp_path):
    paths = fake_grid(tmp_path, ipcs=(0.9,))
    cells = {}
    for path in paths:
        with h5py.File(path, "r") as f:
            config = __import__("yaml").safe_load(f["config_yaml"][()])
        cells[path.stem] = {"file": path.name, "overrides": [], "config": config}
    unfinished = paths[1]  # ppodd seed 1
    unfinished.rename(unfinished.with_suffix(".ckpt"))
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "ppodd-manifest", "format_version": 1, "cells": cells, "submissions": []}))
    result = cli("summarize", str(tmp_path), "--format", "json")
    assert result.exit_code == 0 and result.stderr == ""
    document = json.loads(result.stdout)
    ppodd = next(g for g in document["groups"] if g["method"] == "ppodd")
    assert ppodd["n"] == 1 and ppodd["incomplete_seeds"] == [1] and ppodd["missing_seeds"] == []
    pending = [r for r in document["runs"] if not r["complete"]]
    assert [(r["method"], r["seed"], r["reason"], r["final_accuracy"]) for r in pending] == \
        [("ppodd", 1, "no result file", None)]


# --- bad files ------------------------------------------------------------------------------------


def _bad_files(folder: Path, good: Path) -> dict[str, str]:
    """One file of every bad kind in `folder`, copied from `good`; name -> expected reason."""
    data = good.read_bytes()
    (folder / "truncated.h5").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64 + data[200:400])
    with h5py.File(folder / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    for name, attr, value in (("running.h5", "complete", False), ("newer.h5", "format_version", np.int64(2))):
        (folder / name).write_bytes(data)
        with h5py.File(folder / name, "r+") as f:
            f.attrs[attr] = value
    return {"truncated.h5": "corrupt", "corrupt.h5": "corrupt", "foreign.h5": "foreign",
            "running.h5": "incomplete", "newer.h5": "newer"}


def test_summarize_bad_files_one_line_each_good_files_still_summarised(tmp_path):
    good = fake_grid(tmp_path / "runs", seeds=(0,), ipcs=(0.9,))
    bad = _bad_files(tmp_path / "runs", good[0])
    missing = tmp_path / "gone.h5"
    result = cli("summarize", str(tmp_path / "runs"), str(missing))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad) + 1 and "Traceback" not in result.output
    for name, reason in bad.items():
        line = next(line for line in lines if f"/{name}:" in line)
        assert line.startswith(f"skipped ({reason}): {tmp_path / 'runs' / name}: ")
    assert any(line == f"skipped (missing): {missing}: no such file" for line in lines)
    assert "podd" in result.stdout and "ppodd" in result.stdout
    allowed = cli("summarize", str(tmp_path / "runs"), "--allow-bad", "--format", "json")
    assert allowed.exit_code == 0
    document = json.loads(allowed.stdout)
    assert sorted(b["reason"] for b in document["bad_files"]) == sorted(bad.values())
    # The still-running file counts as an incomplete run of its cell, never in the averages.
    ppodd = next(g for g in document["groups"] if g["method"] == "ppodd")
    assert ppodd["n"] == 1 and ppodd["incomplete_seeds"] == []  # its seed 0 has a complete run
    assert [r["file"] for r in document["runs"] if not r["complete"]] == [str(tmp_path / "runs" / "running.h5")]


def test_summarize_nothing_found_or_bad_format_exits_2(tmp_path):
    empty = cli("summarize", str(tmp_path))
    assert empty.exit_code == 2 and "no run files" in empty.stderr
    fake_run(tmp_path)
    wrong = cli("summarize", str(tmp_path), "--format", "xml")
    assert wrong.exit_code == 2 and "allowed table, markdown, csv, json" in wrong.stderr


def test_summarize_unmatched_glob_reported_and_exit_1(tmp_path):
    fake_run(tmp_path)
    result = cli("summarize", str(tmp_path / "*.h5"), str(tmp_path / "nope*.h5"))
    assert result.exit_code == 1 and result.stderr.strip() == f"skipped (missing): {tmp_path / 'nope*.h5'}: no file matches"


# --- ablations and references ---------------------------------------------------------------------


def test_summarize_boost_and_stage_ablations_drop_from_default(tmp_path):
    for seed in (0, 1):
        for boost, acc in ((0.0, 45.0), (1.5, 50.0)):
            fake_run(tmp_path, sets=(f"ppodd.boost={boost}",), seed=seed, accuracy=acc)
        for stages, acc in ((3, 47.0), (4, 49.0)):
            fake_run(tmp_path, sets=(f"ppodd.stages={stages}",), seed=seed, accuracy=acc)
    document = json.loads(cli("summarize", str(tmp_path), "--format", "json").stdout)
    groups = {json.dumps(g["setting"], sort_keys=True): g for g in document["groups"]}
    tables = {a["axis"]: a for a in document["ablations"]}
    assert sorted(tables) == ["ppodd.boost", "ppodd.stages"]
    boost = tables["ppodd.boost"]
    # demo.yaml runs 3 stages; the boost table holds the stages axis there only if 3 is a default.
    assert boost["reference"] == 1.5 and boost["reference_rule"] == "default"
    rows = {r["value"]: r for r in boost["rows"]}
    for value in (0.0, 1.5):
        key = json.dumps({"ppodd.boost": value, "ppodd.stages": 3}, sort_keys=True)
        base = json.dumps({"ppodd.boost": 1.5, "ppodd.stages": 3}, sort_keys=True)
        assert rows[value]["pool"]["drop"] == pytest.approx(groups[key]["pool"]["mean"] - groups[base]["pool"]["mean"])
    assert rows[1.5]["reference"] and rows[1.5]["pool"]["drop"] == 0
    stages = tables["ppodd.stages"]
    # 5 (the paper's default) is not in the grid, so the drop is from the best value.
    assert stages["reference_rule"] == "best" and stages["fixed"] == {"ppodd.boost": 1.5}
    best = max(stages["rows"], key=lambda r: r["pool"]["mean"])
    assert best["reference"] and all(r["pool"]["drop"] <= 0 for r in stages["rows"])
    given = json.loads(cli("summarize", str(tmp_path), "--format", "json",
                           "--default", "ppodd.stages=3").stdout)
    assert next(a for a in given["ablations"] if a["axis"] == "ppodd.stages")["reference"] == 3
    typo = cli("summarize", str(tmp_path), "--default", "ppodd.stage=3")
    assert typo.exit_code == 2 and typo.stderr.strip() == (
        "error: --default ppodd.stage: not a setting of these runs (settings: ppodd.boost, ppodd.stages)")
    text = cli("summarize", str(tmp_path)).stdout
    assert "ablation of ppodd.boost" in text and "1.5 (reference)" in text


def test_summarize_podd_ignores_ppodd_options_in_its_setting(tmp_path):
    for boost in (0.0, 1.5):
        fake_run(tmp_path, "ppodd", sets=(f"ppodd.boost={boost}",))
        fake_run(tmp_path, "podd", sets=(f"ppodd.boost={boost}",))
    document = json.loads(cli("summarize", str(tmp_path), "--format", "json").stdout)
    podd = [g for g in document["groups"] if g["method"] == "podd"]
    assert len(podd) == 1 and podd[0]["setting"] == {} and podd[0]["variant"] == "-"
    assert podd[0]["n"] == 1 and podd[0]["duplicate_seeds"] == [0]
    ppodd = [g for g in document["groups"] if g["method"] == "ppodd"]
    assert [g["setting"] for g in ppodd] == [{"ppodd.boost": 0.0}, {"ppodd.boost": 1.5}]
    assert all(g["difference"]["n"] == 1 for g in ppodd)


def test_summarize_reference_json_becomes_a_row(tmp_path):
    fake_run(tmp_path)
    fake_run(tmp_path, seed=1)
    (tmp_path / "initial.json").write_text(json.dumps({
        "poster": "initial", "checkpoints": [2, 4], "mean": [10.0, 12.5], "per_net": [[9, 11], [12, 13]],
        "pixels": 570, "effective_ipc": 0.89, "seconds": 3.0, "dataset": "synthetic", "ipc": 0.9, "seed": 0}))
    document = json.loads(cli("summarize", str(tmp_path), "--format", "json").stdout)
    ref = next(g for g in document["groups"] if g["method"] == "reference:initial")
    assert ref["pool"]["mean"] == ref["live"]["mean"] == 12.5 and ref["pool"]["at"]["2"]["mean"] == 10.0
    assert ref["missing_seeds"] == [] and (ref["ipc"], ref["seeds"]) == (0.9, [0])


# --- pure parts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("df, value", [(1, 12.706), (4, 2.776), (30, 2.042), (40, 2.0211), (120, 1.9799)])
def test_t_quantile_975_matches_tables(df, value):
    assert stats.t_quantile_975(df) == pytest.approx(value, abs=2e-4)


def test_paired_interval_three_differences():
    result = stats.paired_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (result["mean"], result["std"]) == (2.0, 1.0)
    assert (result["low"], result["high"]) == pytest.approx((2 - half, 2 + half))
    single = stats.paired_interval([1.5])
    assert single["mean"] == 1.5 and single["low"] is None and single["std"] is None


def test_setting_keys_ignore_variant_implied_options_and_run_places():
    def record(variant: str, *sets: str) -> dict:
        config = record_fields.flatten(to_dict(build_config({"ppodd": {"variant": variant}} | {})))
        for text in sets:
            key, value = text.split("=")
            config[key] = value
        return {"kind": "run", "method": "ppodd", "config": config}

    records = [record("paper", "data.root=/a"), record("code", "data.root=/b")]
    # The D-options differ, but each is its variant's preset; data.root says where, not what.
    assert summary.setting_keys(records) == []
    records.append(record("paper", "ppodd.max_slots=3"))
    assert summary.setting_keys(records) == ["ppodd.max_slots"]


def test_read_files_in_processes_same_as_one_by_one(tmp_path, monkeypatch):
    from ppodd.report import gather

    paths = fake_grid(tmp_path, ipcs=(0.9,)) + [tmp_path / "absent.h5"]
    serial = gather.read_files(paths, workers=1)
    monkeypatch.setattr(gather, "_PARALLEL_FROM", 2)
    assert gather.read_files(paths, workers=2) == serial
    assert len(serial[0]) == 4 and [p.reason for p in serial[1]] == ["missing"]


def test_summarize_unwritable_out_one_line_exit_1(tmp_path):
    fake_run(tmp_path)
    (tmp_path / "file").write_text("")
    result = cli("summarize", str(tmp_path), "--out", str(tmp_path / "file" / "t.md"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'file' / 't.md'}: ")


def _reference(poster, pixels, means, checkpoints=(300,)):
    row = {"poster": poster, "checkpoints": list(checkpoints), "mean": means, "pixels": pixels,
           "effective_ipc": pixels / 10240, "dataset": "cifar10", "ipc": 0.9, "seed": 0}
    if poster == "random-real":  # as many whole 32 x 32 images as the budget holds
        row.update(budget_pixels=pixels, pixels=pixels // 1024 * 1024)
    return record_fields.reference_record(row, f"{poster}.json")


def test_gain_over_random_real_at_each_scores_own_pixel_count_and_step():
    records = [_reference("a_poster.pt", 9180, [40.0]), _reference("random-real", 9180, [25.0]),
               _reference("random-real", 45900, [35.0]), _reference("late_poster.pt", 9180, [50.0], (2000,))]
    result = summary.summarize(records)
    groups = {g["method"]: g for g in result["groups"]}
    assert set(groups) >= {"reference:random-real-9180px", "reference:random-real-45900px"}
    gain = groups["reference:a_poster.pt"]["gain_over_random_real"]
    assert gain["pool"] == {"gain": 15.0, "random_real": 25.0, "random_real_n": 1, "pixels": 9180, "step": 300}
    assert groups["reference:late_poster.pt"]["gain_over_random_real"] is None  # no random real at 2000 steps
    assert groups["reference:random-real-9180px"]["gain_over_random_real"] is None
    text = tables.render(result, [], "table")
    assert "pool − random real" in text and "+15.00 (random real 25.00 at 9180 px)" in text
