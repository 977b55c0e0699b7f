"""The GPU check (issue 16): what a lent GPU must show, measured in one sitting of a few minutes.

    python -m bench gpu [--quick] [-- --data DIR ...]       # from the repository root
    python -m bench.gpu_check [--toy] [--data DIR] [--parts tests,outer,eval,gradient,distill]

Each part writes one JSON, `gpu_PART_DEVICENAME-DEVICE-STAMP.json`, as soon as it ends, and a part
that fails writes its error and lets the next one run:

  tests     pytest tests/test_device.py (no host sync in a step; GPU = CPU for the same draws)
  outer     the paper's outer step (ω 60, c 70, B 5000 in sub-batches of 1000, ConvNet-128) with the
            plain window, with window checkpointing, and with `precision` tf32 and bf16; peak memory each
  eval      8 ConvNet-128 evaluation nets trained together, seconds per step and for 2,000 steps,
            under ieee, tf32 and bf16, and ieee with `eval.compile`
  gradient  one setting-1 outer step's poster gradient on the device against the CPU's, from the
            same draws: float32 (ieee, tf32, bf16) and float64; cosine and relative error
  distill   `ppodd run --config configs/cifar10.yaml --set device=...` for a few epochs of PoDD on
            the image-folder CIFAR-10 at --data, scored by the run's own 8-net evaluation
  summary   the issue's targets against these figures, and a whole Table I cell projected from them

On a GPU the parts fit in about 8 minutes: a part that would start after --seconds (450) is
recorded as not started, and the summary is still written. With --toy (--quick through
`python -m bench`), or when no CUDA device is visible, the same parts run on the CPU, on one
thread, at toy sizes (tiny images, widths and windows, synthetic data, or a few images of --data),
so CI runs the check (tests/test_gpu_check.py); toy figures show that the pipeline works, not how
fast it is. scripts/gpu-check.sh carries and runs all this on a bare GPU machine.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import machine, parser, reset_peak, reset_rss_peak, rss_peak_gib, spread, sync, timed, write_result
from bench.evaluation import batched_runner
from bench.outer_step import outer_step
from ppodd.cell.prepare import use_precision
from ppodd.cell.stages import settings_of
from ppodd.config import load_config, to_dict
from ppodd.method.distill import Pool, meta_gradient
from ppodd.method.seeding import generator

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("tests", "outer", "eval", "gradient", "distill")
# The targets on one H100/H200-class GPU, IEEE float32 unless named.
TARGETS = {"outer_step_s": 0.4, "eval_2000_steps_s": 20.0, "cell_s": 15 * 60, "cell_tf32_s": 6 * 60,
           "cell_compiled_eval_s": 15 * 60, "outer_plain_peak_gb": 40.0}
# Toy sizes: 8 × 8 synthetic images, narrow nets, windows of 2 (outer_step's --quick adds its own).
TOY_DATA = ["data.name=synthetic", "data.synthetic.image_size=8", "data.synthetic.train_per_class=12",
            "data.synthetic.test_per_class=4"]
TOY_STEP = TOY_DATA + ["distill.real_subbatch=16", "distill.batch_patches=8"]
TOY_RUN = ["model.width=4", "model.depth=2", "distill.real_batch=40", "distill.batch_patches=8",
           "distill.window=2", "distill.total_window=4", "distill.real_subbatch=0", "eval.nets=2",
           "eval.checkpoints=[2,4]"]


def start_peak(device: torch.device) -> None:
    """Start a new peak-memory window: the GPU allocator's, or the process's RSS high-water mark."""
    if device.type == "cuda":
        reset_peak(device)
    else:
        reset_rss_peak()


def peak_gib(device: torch.device) -> float:
    """Peak memory since `start_peak`: tensors allocated on the GPU, or the process's RSS on the CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(rss_peak_gib(), 3)


def release(device: torch.device) -> None:
    """Hand cached GPU memory back, so the next variant's peak and the child runs start clean."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def child_env() -> dict:
    """The environment of the check's child processes: ppodd importable from this tree, installed or not."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def tests_part(device: torch.device, toy: bool, args) -> dict:
    """Run tests/test_device.py in a child pytest; its counts and the first line of each failure."""
    report = args.work / "device-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device", "tests/test_device.py",
           f"--junitxml={report}"]
    began = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=args.left or 600)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failures = []
    if report.exists():
        junit = ET.parse(report).getroot()
        for suite in junit.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
        for case in junit.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                failures.append(f"{case.get('name')}: {(bad.get('message') or '').splitlines()[0][:300]}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:], flush=True)
    return {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "seconds": round(time.monotonic() - began, 1),
            "passed": passed, "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"],
            "failure_lines": failures}


def outer_part(device: torch.device, toy: bool, args) -> dict:
    """Median seconds and peak memory of the paper's outer step: plain, checkpointed, tf32, bf16."""
    variants = {"plain": ["distill.checkpoint_window=false"], "checkpointed": ["distill.checkpoint_window=true"],
                "tf32": ["distill.checkpoint_window=false", "precision=tf32"],
                "bf16": ["distill.checkpoint_window=false", "precision=bf16"]}
    repeats = 1 if toy else args.repeats or 3
    out, config = {}, None
    for name, sets in variants.items():
        cfg, prep, _, step = outer_step("paper", device.type, (TOY_STEP if toy else []) + sets, toy)
        config = config or to_dict(cfg)
        start_peak(device)
        times = [timed(lambda i=i: step(i), device) for i in range(repeats + 1)][1:]   # the first warms up
        out[name] = {**spread(times), "peak_gib": peak_gib(device)}
        print(f"outer {name}: median {out[name]['median_s']:.3f} s, peak {out[name]['peak_gib']} GiB", flush=True)
        del prep, step
        release(device)
    use_precision("ieee")
    return {"setting": "paper", "repeats": repeats, "config": config, "variants": out}


def _time_evaluation(mode: str, nets: int, width: int, steps: int, budget: float, block: int,
                     device: torch.device, toy: bool) -> dict:
    """Seconds per evaluation step under `mode` (a precision, `_compiled` for `eval.compile`)."""
    precision = mode.removesuffix("_compiled")
    use_precision(precision)
    run = batched_runner(nets, width, steps, device, bf16=precision == "bf16", compile=mode.endswith("_compiled"))
    start_peak(device)
    warmup = timed(lambda: run(1 if toy else 3), device)
    done, seconds, blocks = 0, 0.0, []
    while done < steps and seconds < budget:
        count = min(block, steps - done)
        took = timed(lambda: run(count), device)
        done, seconds = done + count, seconds + took
        blocks.append(took / count)
    per_step = seconds / done
    print(f"eval {mode}: {per_step * 1e3:.2f} ms per step, 2000 steps {per_step * 2000:.1f} s", flush=True)
    return {"steps_timed": done, "seconds": round(seconds, 3), "s_per_step": round(per_step, 5),
            "s_per_step_blocks": spread(blocks), "projected_2000_steps_s": round(per_step * 2000, 2),
            "peak_gib": peak_gib(device), "warmup_s": round(warmup, 2)}


def eval_part(device: torch.device, toy: bool, args) -> dict:
    """Seconds per step of 8 stacked ConvNet-128 evaluation nets, and for 2,000 steps.

    ieee runs all 2,000 steps unless that takes more than 45 s; tf32, bf16 and ieee with
    `eval.compile` run 300 (at most 15 s). The time per step is the total over the steps timed (in
    blocks of 50), without 3 warm-up steps; the compiled mode's warm-up, which builds its kernels,
    is recorded as `warmup_s`.
    """
    nets, width, block = (2, 4, 2) if toy else (8, 128, 50)
    short = (2, 15.0) if toy else (300, 15.0)
    limits = {"ieee": (4 if toy else 2000, 45.0), "tf32": short, "bf16": short, "ieee_compiled": short}
    modes = {}
    for mode, (steps, budget) in limits.items():
        try:
            modes[mode] = _time_evaluation(mode, nets, width, steps, budget, block, device, toy)
        except Exception as err:  # noqa: BLE001 - one mode failing (say, no Triton to compile) leaves the others
            modes[mode] = {"error": f"{type(err).__name__}: {err}"[:500]}
            print(f"eval {mode} failed: {modes[mode]['error']}", flush=True)
        release(device)
    use_precision("ieee")
    return {"nets": nets, "width": width, "batch_patches": 96, "modes": modes}


def _poster_gradient(device: str, sets: list[str], toy: bool, wide: bool) -> tuple[torch.Tensor, float]:
    """One setting-1 outer step's poster gradient (float64, on the CPU) and its seconds."""
    cfg, prep, pool, _ = outer_step("1", device, sets, toy)
    settings, _ = settings_of(cfg, prep.data.num_classes)
    real_x, real_y = prep.train_x[:cfg.distill.real_batch], prep.train_y[:cfg.distill.real_batch]
    if wide:
        pool = Pool(pool.live.detach().double().requires_grad_(), None, pool.fixed_labels.double(),
                    pool.frozen.double(), pool.frozen_labels.double())
        real_x = real_x.double()
    began = time.perf_counter()
    meta_gradient(pool, torch.tensor([1.0]), prep.geom, real_x, real_y, cfg.distill.warmup, settings,
                  generator(cfg.seed, "bench", 0))
    sync(prep.device)
    return pool.live.grad.double().cpu(), round(time.perf_counter() - began, 2)


def gradient_part(device: torch.device, toy: bool, args) -> dict:
    """The device's poster gradient against the CPU's for the same draws (all draws are made on the CPU)."""
    base = TOY_STEP if toy else []
    runs = {"cpu_float32": ("cpu", [], False), "cpu_float64": ("cpu", [], True),
            "device_ieee": (device.type, [], False), "device_float64": (device.type, [], True),
            "device_tf32": (device.type, ["precision=tf32"], False),
            "device_bf16": (device.type, ["precision=bf16"], False)}
    grads, seconds = {}, {}
    for name, (where, sets, wide) in runs.items():
        grads[name], seconds[name] = _poster_gradient(where, base + sets, toy, wide)
        release(device)
    use_precision("ieee")
    pairs = {}
    for a, b in (("device_ieee", "cpu_float32"), ("device_float64", "cpu_float64"), ("device_tf32", "cpu_float32"),
                 ("device_bf16", "cpu_float32"), ("cpu_float32", "cpu_float64"), ("device_ieee", "cpu_float64")):
        ga, gb = grads[a], grads[b]
        pairs[f"{a}_vs_{b}"] = {"cosine": round(F.cosine_similarity(ga.flatten(), gb.flatten(), dim=0).item(), 8),
                                "rel_error": float(f"{((ga - gb).norm() / gb.norm()).item():.3e}")}
        print(f"gradient {a} against {b}: {pairs[f'{a}_vs_{b}']}", flush=True)
    return {"setting": "1", "device": str(device), "seconds": seconds, "pairs": pairs,
            "grad_norm": {k: round(g.norm().item(), 6) for k, g in grads.items()}}


def toy_folder(data: Path, work: Path, train: int = 8, test: int = 4) -> Path:
    """A copy of the first few images of each class of an image folder, for a toy run of the real path."""
    root = work / "toy-images"
    for split, count in (("train", train), ("test", test)):
        for cls in sorted(p for p in (data / split).iterdir() if p.is_dir()):
            (root / split / cls.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(cls.iterdir())[:count]:
                shutil.copy(image, root / split / cls.name / image.name)
    return root


def _device_memory_peak(stop: threading.Event, peak: list[int]) -> None:
    # Device-wide memory in use, sampled: the child's allocations are not visible from here otherwise.
    while not stop.wait(0.2):
        free, total = torch.cuda.mem_get_info()
        peak[0] = max(peak[0], total - free)


def distill_part(device: torch.device, toy: bool, args) -> dict:
    """A few epochs of PoDD through `ppodd run` on the CIFAR-10 image folder, scored by the run itself."""
    from ppodd.storage.reader import read_run, read_scores

    sets = [f"device={device.type}", "method=podd", f"distill.epochs={args.epochs}", "eval.every_epochs=0"]
    if args.data:
        root = toy_folder(args.data, args.work) if toy else args.data.resolve()
        sets += ["data.name=imagefolder", f"data.root={root}"] + (["data.image_size=8"] if toy else [])
    elif toy:
        sets += TOY_DATA
    else:
        return {"skipped": "no --data: give the image-folder CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg)"}
    sets += TOY_RUN + ["threads=1"] if toy else []
    cmd = [sys.executable, "-m", "ppodd.cli", "run", "--config", str(ROOT / "configs/cifar10.yaml"),
           *[a for s in sets for a in ("--set", s)], "--out", str(args.work / "runs")]
    log = args.work / "distill.log"
    stop, peak = threading.Event(), [0]
    if device.type == "cuda":
        release(device)
        before = torch.cuda.mem_get_info()
        threading.Thread(target=_device_memory_peak, args=(stop, peak), daemon=True).start()
    began = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=args.left).returncode
    wall = time.monotonic() - began
    stop.set()
    lines = log.read_text().strip().splitlines()
    result = {"command": " ".join(cmd[1:]), "exit_code": code, "wall_s": round(wall, 1), "data": str(args.data)}
    if code != 0 or not lines or not lines[-1].endswith(".h5"):
        return {**result, "error": f"ppodd run exited {code}", "log_tail": lines[-8:]}
    scores, record = read_scores(Path(lines[-1])), read_run(Path(lines[-1]))
    steps = len(record.curves["loss"])
    phases = scores["phase_seconds"]
    result.update(accuracy=scores["final_accuracy_live"], accuracy_per_checkpoint=scores["final"]["live"]["mean"],
                  checkpoints=scores["final"]["live"]["checkpoints"], outer_steps=steps, epochs=args.epochs,
                  phase_seconds=phases, s_per_outer_step=round(phases.get("distill", 0.0) / steps, 4),
                  evaluation_s=round(phases.get("evaluate", 0.0), 2))
    if device.type == "cuda":
        result["peak_gpu_used_gib"] = round((peak[0] - (before[1] - before[0])) / 2**30, 3)
    print(f"distill: {steps} outer steps, {result['s_per_outer_step']} s each; evaluation {result['evaluation_s']} s; "
          f"accuracy {result['accuracy']:.2f} %", flush=True)
    return result


def paper_cell_counts() -> tuple[int, int]:
    """Outer steps and 8-net evaluations of one Table I cell (configs/cifar10.yaml, 50,000 images)."""
    cfg = load_config(ROOT / "configs/cifar10.yaml")
    stages, per_stage, every = cfg.num_stages, cfg.distill.epochs // cfg.num_stages, cfg.eval.every_epochs
    steps = cfg.distill.epochs * math.ceil(50_000 / cfg.distill.real_batch)
    in_stage = sum(1 for s in range(stages) for e in range(1, per_stage) if (s * per_stage + e) % every == 0)
    return steps, in_stage + stages + (2 if stages > 1 else 0)     # + stage ends + final live and pool


def summary_part(results: dict, toy: bool, failed: list[str]) -> dict:
    """The targets against the figures, and a Table I cell projected from the outer step and evaluation."""
    steps, evaluations = paper_cell_counts()
    outer = results.get("outer", {}).get("variants", {})
    modes = results.get("eval", {}).get("modes", {})

    def cell(outer_name: str, eval_mode: str) -> float | None:
        if outer_name not in outer or "projected_2000_steps_s" not in modes.get(eval_mode, {}):
            return None
        # A compiled evaluation builds its kernels once a process: its warm-up counts once a cell.
        build = modes[eval_mode]["warmup_s"] if eval_mode.endswith("_compiled") else 0.0
        return round(steps * outer[outer_name]["median_s"] + evaluations * modes[eval_mode]["projected_2000_steps_s"]
                     + build, 1)

    plain_peak = outer.get("plain", {}).get("peak_gib")
    measured = {"outer_step_s": outer.get("plain", {}).get("median_s"),
                "eval_2000_steps_s": modes.get("ieee", {}).get("projected_2000_steps_s"),
                "cell_s": cell("plain", "ieee"), "cell_tf32_s": cell("tf32", "tf32"),
                "cell_compiled_eval_s": cell("plain", "ieee_compiled"),
                "outer_plain_peak_gb": None if plain_peak is None else round(plain_peak * 2**30 / 1e9, 2)}
    targets = {k: {"measured": v, "target": TARGETS[k],
                   "met": None if toy or v is None else v <= TARGETS[k]} for k, v in measured.items()}
    distill = results.get("distill", {})
    from_run = None
    if "s_per_outer_step" in distill:
        from_run = round(steps * distill["s_per_outer_step"] + evaluations * distill["evaluation_s"], 1)
    for key, row in targets.items():
        print(f"target {key}: measured {row['measured']} against {row['target']}: met {row['met']}", flush=True)
    return {"toy": toy, "cell_outer_steps": steps, "cell_evaluations": evaluations, "targets": targets,
            "cell_s_from_short_run": from_run, "parts_failed": failed,
            "parts_skipped": sorted(k for k, v in results.items() if "skipped" in v)}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, write one JSON each and a summary; exit status 1 when a part failed."""
    p = parser(__doc__)
    p.add_argument("--toy", action="store_true", help="toy sizes on the CPU (the same as --quick)")
    p.add_argument("--data", type=Path, help="image-folder CIFAR-10 (train/, test/) for the distill part")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the distill part's run (default 2)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--work", type=Path, help="folder for the run files and logs (default: a temporary one)")
    p.add_argument("--seconds", type=float, default=450.0,
                   help="on a GPU, skip the parts that would start later than this (default 450), so the "
                   "summary is written inside the lease; the child runs are stopped at it")
    args = p.parse_args(argv)
    toy = args.toy or args.quick or not torch.cuda.is_available()
    device = torch.device("cpu" if toy else "cuda")
    if toy:
        torch.set_num_threads(1)     # toy steps are too small to share: threads would only contend
    args.epochs = 1 if toy else args.epochs
    args.work = args.work or Path(tempfile.mkdtemp(prefix="ppodd-gpu-check-"))
    args.work.mkdir(parents=True, exist_ok=True)
    slug = "toy" if toy else re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    parts = {"tests": tests_part, "outer": outer_part, "eval": eval_part, "gradient": gradient_part,
             "distill": distill_part}
    chosen = [name for name in args.parts.split(",") if name]
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        p.error(f"unknown part {', '.join(unknown)}; allowed: {', '.join(PARTS)}")
    print(f"GPU check on {machine(device)['machine']} ({'toy sizes' if toy else 'full sizes'}), work folder {args.work}",
          flush=True)
    results = {}
    deadline = None if toy else time.monotonic() + args.seconds
    for name in chosen:
        start = machine(device)
        began = time.monotonic()
        args.left = None if deadline is None else deadline - began
        try:
            if args.left is not None and args.left < 20:
                raise TimeoutError(f"not started: the check's {args.seconds:g} s were spent")
            results[name] = parts[name](device, toy, args)
        except Exception as err:   # one part's failure must not cost the others' figures
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                             "traceback": traceback.format_exc().splitlines()[-12:]}
            print(f"{name} failed: {results[name]['error']}", flush=True)
            release(device)
        results[name].update(toy=toy, part_s=round(time.monotonic() - began, 1))
        write_result(args.out, f"gpu_{name}_{slug}", device, start, results[name])
    failed = [k for k, v in results.items() if "error" in v or v.get("failed")]
    write_result(args.out, f"gpu_summary_{slug}", device, machine(device), summary_part(results, toy, failed))
    print(f"GPU check done: {len(results)} part(s), failed: {', '.join(failed) or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
