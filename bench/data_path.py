"""Seconds of the data path: one inner step's patch batch from a 5-poster pool, and ZCA fit and cache.

    python -m bench.data_path [--images 50000]

Patch batch: `draw_step` (pool sampler §10.1 plus the augmentation draw) and `synthetic_batch`
(extract 96 patches of 32 × 32 from five 153 × 60 posters, flip_rotate them), per call, for one
distillation net and for 8 evaluation nets at once. ZCA (§1): fitting on n random 32 × 32 images
and saving the cache (a cache miss), reading it back (a hit), and whitening n + n/5 images
(train plus test). The costs do not depend on pixel values, so random images stand in for CIFAR.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import machine, parser, pick_device, spread, timed, write_result
from ppodd.method.class_order import identity_order
from ppodd.method.labels import fixed_labels
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import draw_step, synthetic_batch
from ppodd.datasets.zca import apply_zca, load_or_fit_zca

POOL = 5


def _patch_batches(device: torch.device, nets: int | None, calls: int, repeats: int) -> dict:
    geom = make_geometry(0.9, 10, 32)
    labels = fixed_labels(geom, identity_order(geom.rows, geom.cols)).expand(POOL, -1, -1).contiguous().to(device)
    posters = torch.stack([init_poster(geom, torch.Generator().manual_seed(i)) for i in range(POOL)]).to(device)
    posters.requires_grad_(nets is None)       # the distillation path builds a graph to the poster
    pi = torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3])
    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        for _ in range(calls):
            synthetic_batch(posters, labels, draw_step(pi, 96, geom.num_patches, True, gen, nets=nets), geom)

    run()
    per_call = [timed(run, device) / calls for _ in range(repeats)]
    return {"calls": calls, **{k: v for k, v in spread(per_call).items() if k != "seconds"},
            "ms_per_call": round(1000 * statistics.median(per_call), 3)}


def main(argv: list[str] | None = None) -> None:
    """Time the patch batch and the ZCA fit, cache and apply; write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--images", type=int, default=50000)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    start = machine(device)
    repeats = args.repeats or 5
    calls = 10 if args.quick else 100
    images = 2000 if args.quick else args.images
    patch_one = _patch_batches(device, None, calls, repeats)
    patch_eval = _patch_batches(device, 8, calls, repeats)
    print(f"patch batch: {patch_one['ms_per_call']} ms (1 net), {patch_eval['ms_per_call']} ms (8 nets)", flush=True)

    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    test = x[: images // 5]
    with tempfile.TemporaryDirectory() as cache:
        result: dict = {}
        miss = timed(lambda: result.update(fit=load_or_fit_zca(x, "bench", 0.1, Path(cache))), device)
        hit = timed(lambda: load_or_fit_zca(x, "bench", 0.1, Path(cache)), device)
    matrix = result["fit"][0]
    apply_s = timed(lambda: (apply_zca(x, matrix), apply_zca(test, matrix)), device)
    print(f"ZCA on {images}: fit + save {miss:.1f} s, cached load {hit:.2f} s, apply {apply_s:.1f} s", flush=True)
    payload = {"quick": args.quick, "repeats": repeats, "pool": POOL, "batch_patches": 96,
               "patch_batch_1net": patch_one, "patch_batch_8nets": patch_eval,
               "zca_images": images, "zca_fit_and_save_s": round(miss, 3), "zca_cached_load_s": round(hit, 3),
               "zca_apply_train_and_test_s": round(apply_s, 3), "median_s": round(miss, 3)}
    write_result(args.out, "data_path", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
