"""Where one outer step's time goes: a torch.profiler trace of setting 1 (window 10, warm-up 10).

    python -m bench.profile_step [--set distill.checkpoint_window=true ...]

Profiles one outer step after an unprofiled one, and separately one warm-up inner step and one
unrolled inner step, to count the aten ops each dispatches. Reports the ops that take the most
self CPU time, and the number of `aten::_local_scalar_dense` calls (what `.item()`, `float(t)` and
`bool(t)` dispatch: a host sync on a GPU) in the whole step. CPU-side tensors read on the CPU
(the augmentation's op choice, the sampler's argument checks) show up there too; none of them
touches a device tensor.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import machine, parser, pick_device, timed, write_result
from bench.outer_step import outer_step
from ppodd.config import to_dict
from ppodd.method.model import init_params
from ppodd.method.unroll import AdamState, draw_step, unroll, warm_up

SCALAR_READ = "aten::_local_scalar_dense"


def _ops(prof) -> tuple[int, int]:
    """(aten ops dispatched at top level or below, of which scalar reads) in a finished profile."""
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return len(events), sum(e.name == SCALAR_READ for e in events)


def main(argv: list[str] | None = None) -> None:
    """Profile one outer step at setting 1 and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    start = machine(pick_device(args.device))
    cfg, prep, pool, step = outer_step("1", args.device, args.set, args.quick)
    device = prep.device
    d, geom = cfg.distill, prep.geom
    pi = torch.tensor([1.0])

    unprofiled = timed(lambda: step(0), device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        profiled = timed(lambda: step(1), device)
    step_ops, step_scalar_reads = _ops(prof)
    table = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in table) or 1
    top = sorted(table, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.top), flush=True)

    gen = torch.Generator().manual_seed(1)
    params = init_params(prep.data.num_classes, cfg.model.width, cfg.model.depth, geom.tile, gen, device=device)
    adam = AdamState.zeros_like(params)
    posters, labels = pool.stacked(geom, cfg.poster.label_eps)
    draw = draw_step(pi, d.batch_patches, geom.num_patches, d.augment, gen)
    per_inner = {}
    for name, fn in (("warm_up", warm_up), ("unrolled", unroll)):
        with profile(activities=activities) as one:
            fn(params, adam, posters, labels, [draw], geom, d.inner_lr)
        per_inner[name] = _ops(one)[0]
    payload = {"quick": args.quick, "config": to_dict(cfg), "unprofiled_step_s": round(unprofiled, 3),
               "profiled_step_s": round(profiled, 3), "aten_ops_per_outer_step": step_ops,
               "scalar_reads_per_outer_step": step_scalar_reads,
               "aten_ops_per_warm_up_step": per_inner["warm_up"], "aten_ops_per_unrolled_step": per_inner["unrolled"],
               "top_self_cpu": [{"op": e.key, "calls": e.count, "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                                 "share": round(e.self_cpu_time_total / total, 4)} for e in top],
               "median_s": round(unprofiled, 3)}
    print(f"aten ops: {step_ops} per outer step ({step_scalar_reads} scalar reads), "
          f"{per_inner['warm_up']} per warm-up step, {per_inner['unrolled']} per unrolled step", flush=True)
    write_result(args.out, "profile_step", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
