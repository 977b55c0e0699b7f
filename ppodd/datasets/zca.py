"""ZCA whitening of real images (§1): fit on the train set, apply to train and test, cache on disk.

Images are flattened in PyTorch's native C, H, W order. The reference flattens H, W, C; §1 allows
any fixed order, and the whitened images are the same either way (M only changes by a permutation
of its rows and columns). Fit and application share `normalise_rows`, so they always agree.

Before whitening every image is centred by its own mean and scaled to unit L2 norm (§1 steps 2-3).
That per-image map is not invertible, so `unapply_zca` returns the normalised image, not the
original pixels; visualisation rescales it for display.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import Tensor

from ppodd.datasets.images import save_cached
from ppodd.errors import ConfigError

# Bump when the cached matrices would change for the same data and reg (fit maths, flatten order).
_ZCA_FORMAT = 1
_CHUNK = 4096


def normalise_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Flattened images (n, D), each centred by its own mean and scaled to unit L2 norm (§1 steps 1-3).

    A constant image centres to zero; its norm is clamped so it stays zero instead of turning NaN.
    """
    flat = x.reshape(x.shape[0], -1).to(dtype)
    flat = flat - flat.mean(dim=1, keepdim=True)
    norm = flat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    return flat / norm


def _check_reg(reg: float) -> None:
    if not (math.isfinite(reg) and reg > 0):
        raise ConfigError(f"data.zca_reg: must be a finite number > 0 (got {reg!r})")


def fit_zca(x: Tensor, reg: float = 0.1, chunk_size: int = _CHUNK) -> tuple[Tensor, Tensor]:
    """The ZCA whitening matrix M = V diag(1/s) Vᵀ and its inverse V diag(s) Vᵀ, float64 (§1 steps 1-6).

    x: real training images (n, 3, a, a), all of them (n = 50,000 for CIFAR). Σ = XᵀX / n over the
    per-image centred, unit-norm rows, accumulated in float64 in chunks of `chunk_size` images so
    memory stays at D² plus one chunk; the whole fit peaks at about 4 D² float64. Σ = V diag(λ) Vᵀ
    by a symmetric solver and s = sqrt(λ + reg · mean(λ)); with unit-norm rows mean(λ) = 1/D. Both
    matrices are (D, D) with D = 3a², on x's device.
    """
    _check_reg(reg)
    n = x.shape[0]
    if n == 0:
        raise ConfigError("data: cannot fit ZCA on an empty training set")
    d = math.prod(x.shape[1:])
    sigma = torch.zeros((d, d), dtype=torch.float64, device=x.device)  # (D, D)
    for start in range(0, n, chunk_size):
        rows = normalise_rows(x[start:start + chunk_size], torch.float64)  # (chunk, D)
        sigma.addmm_(rows.T, rows)
    sigma /= n
    eigvals, eigvecs = torch.linalg.eigh(sigma)  # λ ascending (D,), V (D, D)
    # Memory (D = 12,288 for 64 × 64 images, D² float64 = 1.2 GB): eigh holds Σ, V and about 2 D² of
    # workspace; Σ goes before the products, whose operand buffer serves both, so they hold 4 D² too.
    del sigma
    # Centring leaves one λ ≈ 0 that round-off can push a hair below zero; reg · mean(λ) > 0 covers it.
    s = torch.sqrt(eigvals + reg * eigvals.mean())  # (D,)
    scaled = eigvecs / s
    matrix = scaled @ eigvecs.T
    matrix_inv = torch.mul(eigvecs, s, out=scaled) @ eigvecs.T
    return matrix, matrix_inv


def apply_zca(x: Tensor, matrix: Tensor, chunk_size: int = _CHUNK) -> Tensor:
    """Whitened images M x after per-image centring and unit norm, float32 (n, 3, a, a) (§1 step 7).

    matrix: M (D, D) from `fit_zca`. Works in chunks of `chunk_size` images. The product is taken in
    float32: the result is float32 anyway, and it halves the cost of the 50k × D × D product.
    """
    m = matrix.to(device=x.device, dtype=torch.float32)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        rows = normalise_rows(x[start:start + chunk_size], torch.float64).to(torch.float32)  # (chunk, D)
        out[start:start + rows.shape[0]] = (rows @ m.T).reshape(rows.shape[0], *x.shape[1:])
    return out


def unapply_zca(x: Tensor, matrix_inv: Tensor) -> Tensor:
    """Whitened images mapped back by M⁻¹, float32 (n, 3, a, a), for visualising posters (§1 step 6).

    Only the whitening is undone: the result is the centred, unit-norm image, since the per-image
    mean and norm removed before whitening are not recoverable. Rescale it for display.
    """
    m_inv = matrix_inv.to(device=x.device, dtype=torch.float32)
    flat = x.reshape(x.shape[0], -1).to(torch.float32)  # (n, D)
    return (flat @ m_inv.T).reshape(x.shape)


def zca_fingerprint(data_fingerprint: str, reg: float) -> str:
    """The 16-hex-digit cache key of a ZCA fit: data fingerprint, reg and the fit's format version."""
    text = f"zca-v{_ZCA_FORMAT}|chw|{data_fingerprint}|{float(reg)!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str, d: int) -> tuple[Tensor, Tensor] | None:
    """(M, M⁻¹) from a cache file that holds a complete, finite fit for `key`, else None."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is refitted, never trusted
        return None
    if not isinstance(entry, dict) or entry.get("format") != _ZCA_FORMAT or entry.get("key") != key:
        return None
    pair = (entry.get("matrix"), entry.get("matrix_inv"))
    for m in pair:
        if not isinstance(m, Tensor) or m.dtype != torch.float64 or tuple(m.shape) != (d, d):
            return None
        if not torch.isfinite(m).all():
            return None
    return pair  # type: ignore[return-value]


def read_cached_zca(location: Path, key: str, d: int) -> tuple[Tensor, Tensor] | None:
    """(M, M⁻¹) of fit `key` for D = d from a cache file, or from `zca-<key>.pt` when `location`
    is a folder; None when absent, unusable or another fit.

    For readers of finished runs (figures), which know the key from the run file.
    """
    location = Path(location)
    return _read_cache(location / f"zca-{key}.pt" if location.is_dir() else location, key, d)


def load_or_fit_zca(
    x: Tensor, data_fingerprint: str, reg: float, cache_dir: Path | None,
) -> tuple[Tensor, Tensor, str]:
    """(M, M⁻¹, key): the ZCA fit of training images x, read from `cache_dir` when cached (§1).

    The cache file is `cache_dir/zca-<key>.pt` with key = `zca_fingerprint(data_fingerprint, reg)`;
    a hit is returned without refitting. A missing, corrupt or mismatched file is refitted and
    replaced atomically. With `cache_dir` None it always fits. Matrices are float64 on x's device.
    """
    _check_reg(reg)
    key = zca_fingerprint(data_fingerprint, reg)
    path = Path(cache_dir) / f"zca-{key}.pt" if cache_dir is not None else None
    cached = _read_cache(path, key, math.prod(x.shape[1:])) if path is not None else None
    if cached is not None:
        matrix, matrix_inv = (m.to(x.device) for m in cached)
        return matrix, matrix_inv, key
    matrix, matrix_inv = fit_zca(x, reg)
    if path is not None:
        save_cached(
            {
                "format": _ZCA_FORMAT, "key": key, "data_fingerprint": data_fingerprint,
                "reg": float(reg), "matrix": matrix.cpu(), "matrix_inv": matrix_inv.cpu(),
            },
            path,
        )
    return matrix, matrix_inv, key
