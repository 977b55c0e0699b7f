"""Seconds for K evaluation networks × S training steps (§9), batched against one at a time.

    python -m bench.evaluation [--nets 8] [--steps 300] [--width 32] [--profile]

Batched is what `ppodd.method.evaluate` runs: the K nets' weights stacked, one `networks.forward`
gradient and one Adam update per step. Sequential trains one net at a time with `forward` and the
same explicit Adam. Both draw b = 96 patches per net and step from a pool of 5 CIFAR-10-sized
posters (153 × 60) and augment them, as evaluation does. Test-set scoring is not timed.
The two take turns in blocks of --block steps (batched first, then sequential first, and so on;
in a sequential block net 1 takes its steps, then net 2, ...), so that a change in the shared
machine's speed during the run weighs on both alike. The result's ratio is total sequential over
total batched seconds (above 1: batching pays), with the spread of the blocks' own ratios. With
--profile, 2 more steps of each run under torch.profiler, and the result lists each one's ops by
self CPU time, to show where the two differ.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch.profiler import profile

from bench.common import machine, parser, pick_device, spread, timed, write_result
from ppodd.method.class_order import identity_order
from ppodd.method.evaluate import EvalSettings, train_step
from ppodd.method.labels import fixed_labels
from ppodd.cell.malloc import reuse_freed_memory
from ppodd.method.model import init_params
from ppodd.method.networks import Weights
from ppodd.method.poster import PosterGeometry, init_poster, make_geometry
from ppodd.method.unroll import AdamState, draw_step, inner_step

POOL = 5
LR, BATCH = 1e-3, 96      # the paper's evaluation learning rate and patches per net and step


def top_ops(fn, top: int = 10) -> list[dict]:
    """The `top` aten ops of one call of fn by self CPU time, in ms, with their call counts."""
    with profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count}
            for e in events[:top]]


def poster_pool(device: torch.device) -> tuple[PosterGeometry, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Geometry, posters (POOL, 3, 60, 153), labels and uniform π of a 5-poster CIFAR-10-sized pool."""
    geom = make_geometry(0.9, 10, 32)
    labels = fixed_labels(geom, identity_order(geom.rows, geom.cols)).expand(POOL, -1, -1).contiguous().to(device)
    posters = torch.stack([init_poster(geom, torch.Generator().manual_seed(i)) for i in range(POOL)]).to(device)
    return geom, posters, labels, torch.full((POOL,), 1.0 / POOL)


def batched_runner(nets: int, width: int, steps: int, device: torch.device, bf16: bool = False,
                   compile: bool = False):
    """Train `nets` stacked ConvNets of `width` on the pool as `ppodd.method.evaluate` does (with
    `eval.compile` when `compile`); each call `run(count)` advances them by `count` steps."""
    geom, posters, labels, pi = poster_pool(device)
    gen = torch.Generator().manual_seed(0)
    weights = Weights(init_params(10, width, 3, geom.tile, gen, nets=nets, device=device), [])
    state = AdamState.zeros_like(weights.params)
    settings = EvalSettings(nets, (steps,), LR, BATCH, True, 10, width, 3, 2000, bf16=bf16, compile=compile)
    spec = settings.spec(geom.tile)

    def run(count: int) -> None:
        nonlocal weights, state
        with torch.no_grad():
            for _ in range(count):
                draw = draw_step(pi, BATCH, geom.num_patches, True, gen, nets=nets)
                weights, state = train_step(spec, weights, state, posters, labels, draw, geom, settings)
    return run


def sequential_runner(nets: int, width: int, device: torch.device):
    """Train `nets` single ConvNets one after another; each call advances every net by `count` steps."""
    geom, posters, labels, pi = poster_pool(device)
    gen = torch.Generator().manual_seed(0)
    singles = [init_params(10, width, 3, geom.tile, gen, device=device) for _ in range(nets)]
    states = [AdamState.zeros_like(p) for p in singles]

    def run(count: int) -> None:
        with torch.no_grad():
            for k in range(nets):
                for _ in range(count):
                    singles[k], states[k] = inner_step(singles[k], states[k], posters, labels,
                                                       draw_step(pi, BATCH, geom.num_patches, True, gen), geom, LR)
    return run


def main(argv: list[str] | None = None) -> None:
    """Time batched and sequential training of the evaluation nets and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--nets", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--block", type=int, default=10, help="steps per block; blocks of the two alternate")
    p.add_argument("--plain-malloc", action="store_true",
                   help="glibc's default allocation, not ppodd.cell.malloc.reuse_freed_memory as evaluation runs")
    p.add_argument("--profile", action="store_true", help="also profile 2 steps of each")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    steps = 3 if args.quick else args.steps
    repeats = args.repeats or 1
    runners = {"batched": batched_runner(args.nets, args.width, steps, device),
               "sequential": sequential_runner(args.nets, args.width, device)}
    allocator = contextlib.nullcontext(False) if args.plain_malloc else reuse_freed_memory()
    with allocator as reused:
        payload = compare(runners, steps, repeats, args.block, device)
        if args.profile:
            for mode, run in runners.items():
                payload[f"profile_{mode}"] = ops = top_ops(lambda: run(2))
                print(f"{mode}, 2 steps:", *(f"  {o['op']:32s} {o['self_ms']:8.1f} ms" for o in ops), sep="\n")
    payload.update(nets=args.nets, width=args.width, batch_patches=BATCH, pool=POOL, quick=args.quick,
                   malloc="reuse_freed_memory" if reused else "glibc default")
    name = f"evaluation_w{args.width}_k{args.nets}_s{steps}{'_plain_malloc' if args.plain_malloc else ''}"
    write_result(args.out, name, device, start, payload)


def compare(runners: dict, steps: int, repeats: int, block: int, device: torch.device) -> dict:
    """Seconds of the batched and sequential runners over `steps` steps, and their ratio.

    One untimed step each first, so neither pays the one-off kernel and allocator warm-up. Then
    blocks of steps alternate between the two (and which goes first), so that a change in the
    shared machine's speed during the run weighs on both alike.
    """
    for run in runners.values():
        run(1)
    block = min(block, steps)
    totals = {name: 0.0 for name in runners}
    block_ratios = []
    for r in range(repeats):
        done = 0
        while done < steps:
            count = min(block, steps - done)
            order = list(runners) if (done // block) % 2 == 0 else list(reversed(runners))
            seconds = {name: timed(lambda: runners[name](count), device) for name in order}
            for name in runners:
                totals[name] += seconds[name]
            block_ratios.append(seconds["sequential"] / seconds["batched"])
            done += count
        print(f"repeat {r}: batched {totals['batched']:.2f} s, sequential {totals['sequential']:.2f} s so far",
              flush=True)
    ratio = spread(block_ratios)
    return {"steps": steps, "repeats": repeats, "block_steps": block,
            "batched_s": round(totals["batched"] / repeats, 3),
            "sequential_s": round(totals["sequential"] / repeats, 3),
            "ratio_sequential_over_batched": round(totals["sequential"] / totals["batched"], 3),
            "block_ratio": {"median": ratio["median_s"], "min": ratio["min_s"], "max": ratio["max_s"]}}


if __name__ == "__main__":
    main(sys.argv[1:])
