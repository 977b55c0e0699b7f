"""Seconds of `ppodd summarize` over 1,000 result files, the whole command in a fresh process.

    python -m bench.summarize [--files 1000] [--repeats 3] [--workers 0]

Writes `--files` run files into a temporary folder: CIFAR-10 runs of configs/cifar10.yaml
(153 × 60 posters, 8 nets, checkpoints 300/600/1000/2000), alternately P-PoDD with 5 stages and
2 in-stage evaluations each and PoDD, over 5 IPCs and files/10 seeds. One file per (method, IPC)
is written by `writer.write_run` with made-up accuracies; the others are its copies with the seed
changed in the root attribute, the stored config and /seeds (compressing a thousand sets of
posters would take minutes of CPU). The layout and sizes are a real run's. Then times
`python -m ppodd.cli summarize FOLDER --format json --out FILE` (start-up and imports included;
the files are in the page cache after being written). The target is a few seconds (issue 4: 5 s).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml

from bench.common import RESULTS, machine, spread, write_result
from ppodd.storage import writer
from ppodd.config import build_config, load_config, to_dict
from ppodd.storage.record import EvalResult, RunRecord, StageRecord
from ppodd.cell.identity import result_name

CHECKPOINTS = [300, 600, 1000, 2000]
IPCS = (0.6, 0.7, 0.8, 0.9, 1.0)
NETS, STAGES, K, H, W, N = 8, 5, 10, 60, 153, 96


def _evaluation(gen: torch.Generator, members: list[int], level: float) -> EvalResult:
    per_net = (level + 2 * torch.randn(len(CHECKPOINTS), NETS, generator=gen)).double()
    return EvalResult(list(CHECKPOINTS), per_net, members, [1.0 / len(members)] * len(members),
                      H * W * len(members), H * W * len(members) / (K * 32 * 32), 60.0)


def make_record(method: str, ipc: float, seed: int) -> RunRecord:
    """A run record with the layout and sizes of a CIFAR-10 run of configs/cifar10.yaml."""
    cfg = build_config(to_dict(load_config("configs/cifar10.yaml",
                                           [f"method={method}", f"poster.ipc={ipc}", f"seed={seed}"])))
    gen = torch.Generator().manual_seed(seed * 100 + IPCS.index(ipc) * 2 + (method == "podd"))
    stages = []
    count = cfg.num_stages
    for t in range(1, count + 1):
        members = list(range(1, t)) + [0]
        acc = _evaluation(gen, members, 40 + t)
        stages.append(StageRecord(
            t, 150 // count, torch.randn(3, H, W, generator=gen), torch.rand(N, K, generator=gen), None,
            [1.0 / t] * t, [1.0 / (t + 1)] * (t + 1), acc, acc.best, H * W * t,
            in_stage=[(e, _evaluation(gen, members, 38 + t)) for e in (10, 20)] if count > 1 else []))
    live = _evaluation(gen, [0], 50)
    pool = _evaluation(gen, list(range(1, count)) + [0], 52) if count > 1 else live
    steps = 150 * 10
    return RunRecord(
        to_dict(cfg), {"height": H, "width": W, "tile": 32, "rows": 2, "cols": 5, "n_x": 16, "n_y": 6,
                       "pixels": H * W, "effective_ipc": H * W / (K * 32 * 32)},
        [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                              "horse", "ship", "truck"],
        torch.randn(3, H, W, generator=gen), stages, live, pool,
        {"loss": torch.rand(steps, generator=gen), "grad_norm": torch.rand(steps, generator=gen),
         "stage": torch.arange(steps) // (steps // count) + 1},
        {"ppodd_version": "bench", "git_commit": None, "torch_version": str(torch.__version__),
         "device": "cuda", "host": "bench", "start_time": "", "end_time": "",
         "seconds": {"data": 5.0, "distill": 3000.0, "eval": 600.0}},
        "0123456789abcdef", {"run": seed})


def write_files(folder: Path, count: int) -> list[Path]:
    """`count` run files in `folder`: methods alternate, IPCs cycle, then seeds."""
    templates: dict[tuple[str, float], RunRecord] = {}
    paths = []
    for i in range(count):
        method = ("ppodd", "podd")[i % 2]
        ipc = IPCS[(i // 2) % len(IPCS)]
        seed = i // (2 * len(IPCS))
        if (method, ipc) not in templates:
            record = make_record(method, ipc, seed)
            templates[(method, ipc)] = record
            paths.append(writer.write_run(record, folder / result_name(build_config(record.config))))
            continue
        config = {**templates[(method, ipc)].config, "seed": seed}
        path = folder / result_name(build_config(config))
        shutil.copyfile(paths[list(templates).index((method, ipc))], path)
        with h5py.File(path, "r+") as f:
            f.attrs["seed"] = np.int64(seed)
            f["config_yaml"][()] = yaml.safe_dump(config, sort_keys=False)
            f["seeds"].attrs["run"] = np.int64(seed)
        paths.append(path)
    return paths


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    """Generate the files, time `ppodd summarize` over them, and write the result JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="summarize --workers (0: one per CPU)")
    p.add_argument("--quick", action="store_true", help="100 files, 1 repeat")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    files, repeats = (100, 1) if args.quick else (args.files, args.repeats)
    start = machine(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="ppodd-bench-summarize-") as tmp:
        folder = Path(tmp) / "runs"
        began = time.perf_counter()
        paths = write_files(folder, files)
        generate_s = time.perf_counter() - began
        megabytes = sum(path.stat().st_size for path in paths) / 2**20
        print(f"wrote {files} files ({megabytes:.0f} MiB) in {generate_s:.1f} s", flush=True)
        command = [sys.executable, "-m", "ppodd.cli", "summarize", str(folder), "--format", "json",
                   "--out", str(Path(tmp) / "summary.json"), "--workers", str(args.workers)]
        seconds, cpu = [], []
        for i in range(repeats):
            before = _child_cpu()
            began = time.perf_counter()
            subprocess.run(command, check=True)
            seconds.append(time.perf_counter() - began)
            cpu.append(_child_cpu() - before)
            print(f"repeat {i}: {seconds[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU", flush=True)
        runs = (Path(tmp) / "summary.json").stat().st_size
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    result = {"settings": {"files": files, "stages_ppodd": STAGES, "nets": NETS, "checkpoints": CHECKPOINTS,
                           "poster": [3, H, W], "workers": args.workers, "format": "json",
                           "command": "python -m ppodd.cli summarize FOLDER --format json --out FILE"},
              "repeats": repeats, **spread(seconds),
              "ms_per_file": round(1000 * statistics.median(seconds) / files, 3),
              # CPU seconds of the command (all its processes): on a busy shared machine the wall
              # time shows the load as much as the command, this does far less.
              "cpu_s": [round(c, 3) for c in cpu], "cpu_median_s": round(statistics.median(cpu), 3),
              "files_mib": round(megabytes, 1), "generate_s": round(generate_s, 1), "json_bytes": runs,
              "summarize_peak_rss_gib": round(child_rss, 3), "target_s": 5.0}
    write_result(args.out, "summarize", torch.device("cpu"), start, result)
    print(f"median {result['median_s']:.2f} s wall, {result['cpu_median_s']:.2f} s CPU for {files} files "
          f"({result['ms_per_file']} ms a file); load {start['load_1min_at_start']} at start")


if __name__ == "__main__":
    main(sys.argv[1:])
