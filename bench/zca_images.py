"""Seconds and peak memory of the ZCA fit for larger images: 64 × 64 (D = 12,288) by default.

    python -m bench.zca_images [--image-size 64] [--images 4096]

Fits ZCA (§1, `ppodd.datasets.zca.load_or_fit_zca`, a cache miss: fit and save) on the built-in
synthetic data set at Tiny-ImageNet's image size, then reads the cache back. The fit is split into
its phases by timing the eigensolver call inside it: the covariance Σ (linear in the number of
images), `torch.linalg.eigh` and the two products that form M and M⁻¹ (both cubic in D). Memory:
the process's RSS before the fit (the images) and its high-water mark during the fit, also in
units of one (D, D) float64 matrix. With fewer images than D, Σ has rank n rather than D; the
covariance time scales with n, the other phases do not depend on it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import machine, parser, reset_rss_peak, rss_peak_gib, timed, write_result
from ppodd.config import SyntheticConfig
from ppodd.datasets.synthetic import make_synthetic
from ppodd.datasets.zca import load_or_fit_zca


def _rss_gib() -> float:
    """The process's resident memory now, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    """Time one ZCA fit and save, and the cached load; write the result JSON."""
    p = parser(__doc__)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--images", type=int, default=4096)
    args = p.parse_args(argv)
    device = torch.device("cpu")
    start = machine(device)
    side, count = (16, 500) if args.quick else (args.image_size, args.images)
    spec = SyntheticConfig(num_classes=10, image_size=side, train_per_class=max(1, count // 10), test_per_class=1)
    x = make_synthetic(spec).train_x
    dim = 3 * side * side
    square_gib = 8 * dim * dim / 2**30

    marks: dict[str, float] = {}
    eigh = torch.linalg.eigh

    def marked_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        marks["eigh_start"] = time.perf_counter()
        out = eigh(a)
        marks["eigh_end"] = time.perf_counter()
        return out

    with tempfile.TemporaryDirectory() as cache:
        before = _rss_gib()
        reset_rss_peak()
        torch.linalg.eigh = marked_eigh
        try:
            began = time.perf_counter()
            load_or_fit_zca(x, "bench-zca-images", 0.1, Path(cache))
            fit_and_save = time.perf_counter() - began
        finally:
            torch.linalg.eigh = eigh
        peak = rss_peak_gib()
        hit = timed(lambda: load_or_fit_zca(x, "bench-zca-images", 0.1, Path(cache)), device)
    phases = {"covariance_s": marks["eigh_start"] - began, "eigh_s": marks["eigh_end"] - marks["eigh_start"],
              "products_and_save_s": began + fit_and_save - marks["eigh_end"]}
    print(f"ZCA {side} x {side} (D = {dim}) on {len(x)} images: fit + save {fit_and_save:.1f} s "
          f"({', '.join(f'{k[:-2]} {v:.1f} s' for k, v in phases.items())}), cached load {hit:.1f} s; "
          f"RSS {before:.2f} GiB before, peak {peak:.2f} GiB ({(peak - before) / square_gib:.2f} D^2 float64 above)",
          flush=True)
    payload = {"quick": args.quick, "image_size": side, "dim": dim, "images": len(x),
               "zca_fit_and_save_s": round(fit_and_save, 3), **{k: round(v, 3) for k, v in phases.items()},
               "zca_cached_load_s": round(hit, 3), "rss_before_fit_gib": round(before, 3),
               "rss_peak_during_fit_gib": round(peak, 3), "covariance_gib": round(square_gib, 3),
               "peak_above_before_in_dsquare": round((peak - before) / square_gib, 2),
               "median_s": round(fit_and_save, 3)}
    write_result(args.out, f"zca_images_{side}", device, start, payload)


if __name__ == "__main__":
    main(sys.argv[1:])
