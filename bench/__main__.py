"""Run ppodd's benchmarks, each in a fresh process, and print a table of their results.

    python -m bench [NAME ...] [--repeats N] [--quick] [-- ARGS ...]

With no NAME every benchmark runs, in the order listed by --list; ARGS after `--` go to each
named benchmark as they are (e.g. `python -m bench gpu -- --data DIR`). Each writes one JSON file under
bench/results/ (or --out); GPU-only benchmarks are skipped when no CUDA device is visible. A
separate process per benchmark keeps each one's peak RSS its own. Benchmarks assert nothing.
Run heavy sittings under the shared lock: flock /tmp/ppodd-heavy.lock python -m bench
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import RESULTS


@dataclass(frozen=True)
class Benchmark:
    """One runnable benchmark: a module of bench/, its arguments, and whether it needs a GPU."""

    module: str
    args: tuple[str, ...]
    about: str
    gpu_only: bool = False
    common_args: bool = True       # takes --repeats, --quick and --out
    needs: str | None = None       # an optional package it imports


BENCHMARKS = {
    "reference": Benchmark("bench.reference", (), "ConvNet-128 fwd+bwd at batch 96: the GFLOP/s limit"),
    "outer1": Benchmark("bench.outer_step", ("--setting", "1", "--flops", "--device", "cpu"),
                        "outer step, setting 1 (ω 10, c 10, B 256, ConvNet-128)"),
    "higher": Benchmark("bench.higher_step", (), "setting 1 side by side: ppodd (plain, checkpointed) and higher, in turns",
                        needs="higher"),
    "outer1_ckpt": Benchmark("bench.outer_step", ("--setting", "1", "--device", "cpu", "--name", "outer_step_1_ckpt",
                                                  "--set", "distill.checkpoint_window=true"),
                             "outer step, setting 1 with window checkpointing"),
    "outer2": Benchmark("bench.outer_step", ("--setting", "2", "--flops"), "outer step, configs/cpu.yaml"),
    "outer3": Benchmark("bench.outer_step", ("--setting", "paper", "--device", "cuda",
                                             "--set", "distill.checkpoint_window=false"),
                        "outer step, paper settings on a GPU", gpu_only=True),
    "paper_cpu": Benchmark("bench.outer_step", ("--setting", "paper", "--device", "cpu"),
                           "outer step, paper settings on the CPU (memory check)"),
    "eval": Benchmark("bench.evaluation", ("--nets", "8", "--steps", "300"),
                      "evaluation, 8 nets x 300 steps, batched vs one at a time"),
    "eval_plain_malloc": Benchmark("bench.evaluation", ("--nets", "8", "--steps", "100", "--plain-malloc"),
                                   "evaluation, 8 nets x 100 steps, with glibc's default allocation"),
    "eval128": Benchmark("bench.evaluation", ("--nets", "8", "--steps", "10", "--width", "128", "--block", "2"),
                         "evaluation, 8 ConvNet-128 x 10 steps, batched vs one at a time"),
    "eval_gpu": Benchmark("bench.evaluation", ("--nets", "8", "--steps", "2000", "--width", "128",
                                               "--device", "cuda"),
                          "evaluation, 8 ConvNet-128 x 2000 steps on a GPU", gpu_only=True),
    "archs": Benchmark("bench.architectures", (),
                       "evaluation, 8 nets of each architecture, trained together vs one after another"),
    "compile": Benchmark("bench.compile_eval", (), "torch.compile against eager, evaluation gradient"),
    "precision": Benchmark("bench.precision", (), "setting-1 poster gradient: float32 against float64"),
    "profile": Benchmark("bench.profile_step", ("--device", "cpu"), "torch.profiler of one outer step, setting 1"),
    "data": Benchmark("bench.data_path", (), "patch batch from a 5-poster pool; ZCA fit, cache, apply"),
    "zca64": Benchmark("bench.zca_images", (), "ZCA fit and save for 64 x 64 images (D = 12,288): phases, peak RSS"),
    "summary": Benchmark("bench.summarize", (), "ppodd summarize over 1,000 result files"),
    "status": Benchmark("bench.status", (), "ppodd status over a 1,000-cell results folder, Slurm calls counted"),
    "gpu": Benchmark("bench.gpu_check", (), "the GPU check: device tests, paper outer step, 8-net evaluation, GPU "
                     "against CPU gradient, a short CIFAR-10 run; toy sizes on the CPU (--quick, or no GPU)"),
}


def _available(bench: Benchmark) -> str | None:
    """Why `bench` cannot run here, or None when it can."""
    if bench.gpu_only and not torch.cuda.is_available():
        return "needs a CUDA device"
    if importlib.util.find_spec(bench.module) is None:
        return f"{bench.module} is not there"
    if bench.needs and importlib.util.find_spec(bench.needs) is None:
        return f"needs {bench.needs}: pip install -e '.[bench]'"
    return None


def _run(name: str, bench: Benchmark, extra: list[str]) -> list[Path]:
    """Run one benchmark in a fresh Python process; the result files it reports."""
    code = f"import sys, {bench.module} as m; sys.exit(m.main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, *bench.args, *extra]
    print(f"== {name}: {bench.about}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    paths = []
    for line in proc.stdout:
        print(f"   {line}", end="", flush=True)
        if line.startswith("RESULT "):
            paths.append(Path(line.split(" ", 1)[1].strip()))
    if proc.wait() != 0:
        print(f"   {name} failed with exit status {proc.returncode}", flush=True)
    return paths


def _row(name: str, result: dict) -> str:
    median = result.get("median_s")
    peak = result.get("peak_cuda_gib", result.get("peak_rss_gib"))
    notes = []
    if "achieved_gflops" in result:
        notes.append(f"{result['achieved_gflops']} GFLOP/s")
    if "convnet_gflops" in result:
        notes.append(f"convnet {result['convnet_gflops']} GFLOP/s, matmul {result['matmul_gflops']} GFLOP/s")
    if "ratio_sequential_over_batched" in result:
        notes.append(f"batched {result['batched_s']:.1f} s, sequential {result['sequential_s']:.1f} s, "
                     f"ratio {result['ratio_sequential_over_batched']}")
    if "pairs" in result:
        notes.append("; ".join(f"{k}: cos {v['cosine']}" for k, v in result["pairs"].items()))
    if "variants" in result:
        notes.append("; ".join(f"{k} {v['median_s']:.1f} s, {v['peak_gib']:.2f} GiB" for k, v in result["variants"].items()))
    if "compile_first_call_s" in result:
        notes.append(f"compiled {result['compiled']['median_s']} s per call after a {result['compile_first_call_s']} s compile")
    if "aten_ops_per_unrolled_step" in result:
        notes.append(f"aten ops per step: {result['aten_ops_per_outer_step']} outer, "
                     f"{result['aten_ops_per_unrolled_step']} unrolled inner")
    if "zca_images" in result:
        notes.append(f"patch batch {result['patch_batch_1net']['ms_per_call']} ms; ZCA {result['zca_images']}: "
                     f"cached load {result['zca_cached_load_s']} s, apply {result['zca_apply_train_and_test_s']} s")
    if "rss_peak_during_fit_gib" in result:
        notes.append(f"D {result['dim']}, {result['images']} images: covariance {result['covariance_s']:.1f} s, "
                     f"eigh {result['eigh_s']:.1f} s, products + save {result['products_and_save_s']:.1f} s; "
                     f"RSS {result['rss_before_fit_gib']} -> {result['rss_peak_during_fit_gib']} GiB")
    notes.append(f"load {result.get('load_1min_at_start', '?')}")
    med = f"{median:9.2f}" if isinstance(median, (int, float)) else f"{'-':>9}"
    spread = result.get("spread_s")
    spr = f"{spread:7.2f}" if isinstance(spread, (int, float)) else f"{'-':>7}"
    pk = f"{peak:7.2f}" if isinstance(peak, (int, float)) else f"{'-':>7}"
    return f"{name:<11} {med} {spr} {pk}  {'; '.join(notes)}"


def main(argv: list[str] | None = None) -> None:
    """Run the chosen benchmarks and print their table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--repeats", type=int, help="timed repeats, for every benchmark that repeats")
    p.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.list:
        for name, bench in BENCHMARKS.items():
            why = _available(bench)
            print(f"{name:<10} {bench.about}{f'  (skipped: {why})' if why else ''}")
        return
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; allowed: {', '.join(BENCHMARKS)}")
    extra = [*(["--repeats", str(args.repeats)] if args.repeats else []), *(["--quick"] if args.quick else []),
             "--out", str(args.out), *passed]
    rows, results = [], {}
    began = time.monotonic()
    for name in args.names or list(BENCHMARKS):
        bench = BENCHMARKS[name]
        why = _available(bench)
        if why:
            print(f"== {name}: skipped, {why}", flush=True)
            rows.append(f"{name:<10} skipped: {why}")
            continue
        paths = _run(name, bench, extra if bench.common_args else [])
        if not paths:
            rows.append(f"{name:<10} no result file reported (see its output above)")
        for path in paths:
            results[name] = json.loads(path.read_text())
            rows.append(_row(name, results[name]))
    print(f"\n{'benchmark':<11} {'median s':>9} {'spread':>7} {'peak GiB':>7}  notes")
    print("\n".join(rows))
    ref = results.get("reference", {}).get("convnet_gflops")
    for name in ("outer1", "outer2"):
        got = results.get(name, {}).get("achieved_gflops")
        if ref and got:
            print(f"{name}: {got} GFLOP/s is {got / ref:.0%} of the ConvNet-128 fwd+bwd rate ({ref} GFLOP/s)")
    print(f"total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
