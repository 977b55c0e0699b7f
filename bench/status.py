"""Seconds of `ppodd status` over a 1,000-cell results folder, and how many times it asks Slurm.

    python -m bench.status [--cells 1000] [--repeats 3]

Fabricates a grid submitted to Slurm as one array: 60 % of the cells done (CIFAR-10 run files
written as `bench.summarize` writes them), 10 % running, 10 % pending, 10 % failed with the task's
error in their state record and a 256 KiB log, 10 % gone from the queue without a word (a log
that ends with slurmstepd's time-limit line). `squeue`, `sacct`, `scontrol` and `scancel` are
small scripts put first on PATH that print recorded-style listings of the array and count their
calls. Then times the whole command, `python -m ppodd.cli status FOLDER` in a fresh process (start-up
and imports included), first as on a cluster without accounting (one squeue), then with
accounting recorded in the manifest (one sacct); and `cell_statuses` alone in this process. The
target (issue 17): under 5 s, at most one Slurm query.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import RESULTS, machine, spread, write_result
from bench.summarize import write_files
from ppodd.atomic import write_json
from ppodd.cell.identity import CellFiles
from ppodd.cluster import slurm, status
from ppodd.config import load_config, to_dict
from ppodd.storage.manifest import read_manifest, write_manifest

ARRAY = "4242"
_FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> {calls}
cat {listing}
"""


def fabricate(out: Path, cells: int) -> dict[str, str]:
    """The results folder and Slurm's view of it: job id -> state (for the fake commands)."""
    done = write_files(out, cells * 6 // 10)
    template = to_dict(load_config("configs/cifar10.yaml"))
    names = [p.stem for p in done] + [f"ppodd-cifar10-ipc0.9-seed{1000 + i}-{i:010x}" for i in range(cells - len(done))]
    manifest = read_manifest(out)
    manifest["cells"] = {n: {"file": f"{n}.h5", "overrides": [], "config": {**template, "seed": i}}
                         for i, n in enumerate(names)}
    tasks = [{"array_index": i, "job_id": f"{ARRAY}_{i}", "cell": n} for i, n in enumerate(names)]
    manifest["submissions"] = [{"time": "2026-11-25T00:00:00+00:00", "cluster": "slurm", "slurm": {"gpus_per_node": 1},
                                "accounting": False, "log_folder": "logs", "tasks": tasks, "skipped": []}]
    write_manifest(out, manifest)
    states = {}
    filler = ('{"event": "outer_step", "step": 1, "loss": 2.3}\n' * 5000)[:256 * 1024]
    for i, name in enumerate(names[len(done):]):
        job = f"{ARRAY}_{len(done) + i}"
        files = CellFiles(out / f"{name}.h5")
        kind = i * 4 // (cells - len(done))  # 0 running, 1 pending, 2 failed, 3 gone
        started = {"started": "2026-11-25T00:00:00+00:00", "gpus": 1}
        if kind == 0:
            states[job] = "RUNNING"
            write_json(files.state, {"state": "running", "job_id": job, "restarts": 0, "attempts": [started]})
        elif kind == 1:
            states[job] = "PENDING"
        else:
            log = out / "logs" / job / f"{job}_0_log.err"
            log.parent.mkdir(parents=True, exist_ok=True)
            end = ("slurmstepd: error: *** JOB 1 ON n01 CANCELLED AT 2026-11-25T01:00:00 DUE TO TIME LIMIT ***\n"
                   if kind == 3 else "")
            log.write_text(filler + end)
            if kind == 2:
                write_json(files.state, {"state": "failed", "job_id": job, "error": "ValueError: bad",
                                         "attempts": [{**started, "stopped": "2026-11-25T01:00:00+00:00"}]})
    return states


def fake_slurm(folder: Path, states: dict[str, str]) -> tuple[Path, Path]:
    """A bin folder of fake Slurm commands and the file that counts their calls."""
    bin_dir, calls = folder / "bin", folder / "calls.txt"
    bin_dir.mkdir()
    listings = {"squeue": "".join(f"{j}|{s}|None\n" for j, s in states.items()),
                "sacct": "".join(f"{j}|{s}|0:0|3600|billing=1,cpu=1,gres/gpu=1,node=1|None\n" for j, s in states.items()),
                "scontrol": "AccountingStorageType = accounting_storage/slurmdbd\n", "scancel": ""}
    for name, text in listings.items():
        (folder / f"{name}.txt").write_text(text)
        script = bin_dir / name
        script.write_text(_FAKE.format(calls=calls, listing=folder / f"{name}.txt"))
        script.chmod(0o755)
    return bin_dir, calls


def _count(calls: Path) -> list[str]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return [line.split()[0] for line in lines]


def main(argv: list[str] | None = None) -> None:
    """Fabricate the folder, time `ppodd status` over it, and write the result JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="100 cells, 1 repeat")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cells, repeats = (100, 1) if args.quick else (args.cells, args.repeats)
    start = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="ppodd-bench-status-") as tmp:
        out = Path(tmp) / "grid"
        began = time.perf_counter()
        states = fabricate(out, cells)
        generate_s = time.perf_counter() - began
        bin_dir, calls = fake_slurm(Path(tmp), states)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        command = [sys.executable, "-m", "ppodd.cli", "status", str(out)]
        figures = {}
        for mode in ("squeue", "sacct"):
            manifest = read_manifest(out)
            manifest["submissions"][0]["accounting"] = mode == "sacct"
            write_manifest(out, manifest)
            seconds, queries = [], []
            for i in range(repeats):
                began = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                seconds.append(time.perf_counter() - began)
                queries.append(_count(calls))
                print(f"{mode} repeat {i}: {seconds[-1]:.2f} s, Slurm calls {queries[-1]}", flush=True)
            figures[mode] = {**spread(seconds), "slurm_calls": queries, "summary": done.stdout.splitlines()[-2:]}
        os.environ["PATH"] = env["PATH"]  # the in-process run asks the same fake commands
        inner = []
        for _ in range(repeats):
            began = time.perf_counter()
            rows = status.cell_statuses(out, slurm.grid_jobs(read_manifest(out)))
            inner.append(time.perf_counter() - began)
        figures["cell_statuses_in_process"] = {**spread(inner), "slurm_calls": _count(calls),
                                               "states": {s: sum(r.state == s for r in rows) for s in status.STATES}}
        shutil.rmtree(out / "logs")
    slowest = max(("squeue", "sacct"), key=lambda mode: figures[mode]["median_s"])
    result = {"settings": {"cells": cells, "done": cells * 6 // 10, "command": "python -m ppodd.cli status FOLDER",
                           "log_bytes": 256 * 1024},
              "repeats": repeats, "generate_s": round(generate_s, 1),
              # The table's row: the slower of the two ways of asking Slurm.
              "median_s": figures[slowest]["median_s"], "spread_s": figures[slowest]["spread_s"],
              **figures, "target_s": 5.0, "target_slurm_calls": 1}
    write_result(args.out, "status", torch.device("cpu"), start, result)
    print(json.dumps({k: figures[k]["median_s"] for k in figures}), figures["sacct"]["summary"])


if __name__ == "__main__":
    main(sys.argv[1:])
