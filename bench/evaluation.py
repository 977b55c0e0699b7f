"""Seconds for K evaluation networks × S training steps (§9), batched against one at a time.

    python -m bench.evaluation [--nets 8] [--steps 300] [--width 32] [--profile]

Batched is what `ppodd.evaluate` runs: the K nets' weights stacked, one `forward_stacked`
gradient and one Adam update per step. Sequential trains net 1 for S steps, then net 2, and so on,
with `forward` and the same explicit Adam. Both draw b = 96 patches per net and step from a pool of
5 CIFAR-10-sized posters (153 × 60) and augment them, as evaluation does. Test-set scoring is not
timed. The result's ratio is sequential / batched seconds: above 1 means batching pays. With
--profile, one more run of each at 2 steps goes under torch.profiler, and the result lists each
one's ops by self CPU time, to show where the two differ.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import profile

from bench.common import machine, parser, pick_device, spread, timed, write_result
from ppodd.class_order import identity_order
from ppodd.evaluate import train_step
from ppodd.labels import fixed_labels
from ppodd.model import init_params
from ppodd.poster import init_poster, make_geometry
from ppodd.unroll import AdamState, draw_step, inner_step

POOL = 5


def top_ops(fn, top: int = 10) -> list[dict]:
    """The `top` aten ops of one call of fn by self CPU time, in ms, with their call counts."""
    with profile() as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 1), "calls": e.count}
            for e in events[:top]]


def main(argv: list[str] | None = None) -> None:
    """Time batched and sequential training of the evaluation nets and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--nets", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--profile", action="store_true", help="also profile 2 steps of each")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    steps = 3 if args.quick else args.steps
    repeats = args.repeats or 1
    geom = make_geometry(0.9, 10, 32)
    labels = fixed_labels(geom, identity_order(geom.rows, geom.cols)).expand(POOL, -1, -1).contiguous().to(device)
    posters = torch.stack([init_poster(geom, torch.Generator().manual_seed(i)) for i in range(POOL)]).to(device)
    pi = torch.full((POOL,), 1.0 / POOL)
    lr, b, n = 1e-3, 96, geom.num_patches

    def batched() -> None:
        gen = torch.Generator().manual_seed(0)
        params = init_params(10, args.width, 3, geom.tile, gen, nets=args.nets, device=device)
        state = AdamState.zeros_like(params)
        with torch.no_grad():
            for _ in range(steps):
                draw = draw_step(pi, b, n, True, gen, nets=args.nets)
                params, state = train_step(params, state, posters, labels, draw, geom, lr)

    def sequential() -> None:
        gen = torch.Generator().manual_seed(0)
        for _ in range(args.nets):
            params = init_params(10, args.width, 3, geom.tile, gen, device=device)
            state = AdamState.zeros_like(params)
            with torch.no_grad():
                for _ in range(steps):
                    params, state = inner_step(params, state, posters, labels, draw_step(pi, b, n, True, gen),
                                               geom, lr)

    # One untimed step each first, so neither pays the one-off kernel and allocator warm-up.
    saved, steps = steps, 1
    batched(), sequential()
    steps = saved
    times = {name: [] for name in ("batched", "sequential")}
    for r in range(repeats):
        for name, fn in (("batched", batched), ("sequential", sequential)):
            seconds = timed(fn, device)
            times[name].append(seconds)
            print(f"repeat {r} {name}: {seconds:.2f} s", flush=True)
    batched_s, sequential_s = spread(times["batched"]), spread(times["sequential"])
    payload = {"nets": args.nets, "steps": steps, "width": args.width, "batch_patches": b, "pool": POOL,
               "quick": args.quick, "repeats": repeats, **batched_s,
               "sequential": sequential_s,
               "ratio_sequential_over_batched": round(sequential_s["median_s"] / batched_s["median_s"], 3)}
    name = f"evaluation_w{args.width}_k{args.nets}_s{steps}"
    if args.profile:
        steps = 2
        for mode, fn in (("batched", batched), ("sequential", sequential)):
            payload[f"profile_{mode}"] = ops = top_ops(fn)
            print(f"{mode}, 2 steps:", *(f"  {o['op']:32s} {o['self_ms']:8.1f} ms" for o in ops), sep="\n")
    write_result(args.out, name, device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
