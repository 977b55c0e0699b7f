"""How much of one outer step's poster gradient survives float32 rounding: float32 against float64.

    python -m bench.precision [--set model.width=32 ...]

One setting-1 outer step (`bench.outer_step --setting 1`, same draws) is computed three times:
in float32 on all threads, in float32 on one thread (the same arithmetic summed in another order)
and in float64. The result gives the relative difference ‖a − b‖/‖b‖ and the cosine between the
poster gradients of each pair. Differentiating through Adam's m/(√v + ε) makes the step
sensitive to rounding, so this tells how far a change of summation order, of device, or of
precision (TF32, bf16) may move the gradient. Times are recorded but are not the point.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from bench.common import machine, parser, pick_device, write_result
from bench.outer_step import outer_step
from ppodd.method.distill import Pool, meta_gradient
from ppodd.cell.stages import settings_of
from ppodd.method.seeding import generator


def main(argv: list[str] | None = None) -> None:
    """Compute the three gradients, compare them and write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--set", action="append", default=[], help="extra config overrides KEY=VALUE")
    args = p.parse_args(argv)
    start = machine(pick_device(args.device))
    cfg, prep, pool, _ = outer_step("1", args.device, args.set, args.quick)
    settings, _ = settings_of(cfg, prep.data.num_classes)
    batch = cfg.distill.real_batch
    real_x, real_y = prep.train_x[:batch], prep.train_y[:batch]
    threads = torch.get_num_threads()

    def poster_grad(p: Pool, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        began = time.perf_counter()
        meta_gradient(p, torch.tensor([1.0]), prep.geom, x, real_y, cfg.distill.warmup, settings,
                      generator(cfg.seed, "bench", 0))
        grad, p.live.grad = p.live.grad.double(), None
        return grad, round(time.perf_counter() - began, 2)

    grads, seconds = {}, {}
    grads["float32"], seconds["float32"] = poster_grad(pool, real_x)
    torch.set_num_threads(1)
    grads["float32_1thread"], seconds["float32_1thread"] = poster_grad(pool, real_x)
    torch.set_num_threads(threads)
    wide = Pool(pool.live.detach().double().requires_grad_(), None, pool.fixed_labels.double(),
                pool.frozen.double(), pool.frozen_labels.double())
    grads["float64"], seconds["float64"] = poster_grad(wide, real_x.double())

    pairs = {}
    for a, b in (("float32", "float64"), ("float32_1thread", "float64"), ("float32", "float32_1thread")):
        ga, gb = grads[a], grads[b]
        pairs[f"{a}_vs_{b}"] = {"rel_diff": round(((ga - gb).norm() / gb.norm()).item(), 6),
                                "cosine": round(F.cosine_similarity(ga.flatten(), gb.flatten(), dim=0).item(), 6)}
        print(f"{a} against {b}: {pairs[f'{a}_vs_{b}']}", flush=True)
    payload = {"setting": "1", "quick": args.quick, "overrides": args.set, "seconds": seconds,
               "grad_norm": {k: round(g.norm().item(), 6) for k, g in grads.items()}, "pairs": pairs}
    write_result(args.out, "precision_1", prep.device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
