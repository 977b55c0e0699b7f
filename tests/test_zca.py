"""ZCA whitening (docs/method.md §1): fit against a numpy reference, whitening, round trip, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ppodd.datasets.zca as zca
from ppodd.errors import ConfigError
from ppodd.datasets.zca import apply_zca, fit_zca, load_or_fit_zca, unapply_zca, zca_fingerprint


def _images(n: int = 200, a: int = 4, seed: int = 0) -> torch.Tensor:
    """Random images (n, 3, a, a) in [0, 1] with correlated pixels, so Σ is far from identity."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((n, 1, a, a), generator=g)
    return (0.6 * base + 0.4 * torch.rand((n, 3, a, a), generator=g)).clamp(0, 1)


def _reference_fit(x: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """§1 steps 1-6 written out directly in float64 numpy: (M, M_inv, Σ)."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    sigma = flat.T @ flat / flat.shape[0]
    lam, v = np.linalg.eigh(sigma)
    s = np.sqrt(lam + reg * lam.mean())
    return v @ np.diag(1 / s) @ v.T, v @ np.diag(s) @ v.T, sigma


def _normalised(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).double()
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.norm(dim=1, keepdim=True)


def test_fit_zca_tiny_set_matches_numpy_reference():
    x = _images()
    m, m_inv = fit_zca(x, reg=0.1, chunk_size=64)  # several chunks, one partial
    ref_m, ref_inv, _ = _reference_fit(x.numpy(), 0.1)
    assert m.dtype == torch.float64 and m.shape == (48, 48)
    np.testing.assert_allclose(m.numpy(), ref_m, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m_inv.numpy(), ref_inv, rtol=1e-9, atol=1e-9)


def test_fit_zca_regulariser_is_reg_times_mean_eigenvalue_one_over_d():
    # Unit-norm rows give trace(Σ) = 1, so mean(λ) = 1/D and M⁻² = Σ + (reg/D)·I (§1 step 5).
    x = _images()
    _, m_inv = fit_zca(x, reg=0.1)
    *_, sigma = _reference_fit(x.numpy(), 0.1)
    assert np.trace(sigma) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose((m_inv @ m_inv).numpy(), sigma + 0.1 / 48 * np.eye(48), atol=1e-12)


def test_fit_zca_matrix_symmetric_and_inverse_of_matrix_inv():
    m, m_inv = fit_zca(_images(), reg=0.1)
    torch.testing.assert_close(m, m.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(m @ m_inv, torch.eye(48, dtype=torch.float64), rtol=0, atol=1e-9)


def test_apply_zca_train_covariance_has_eigenvalues_lambda_over_lambda_plus_eps():
    # Whitened covariance is Σ(Σ + εI)⁻¹ with ε = reg·mean(λ): eigenvalues λ/(λ + ε), near 1 for
    # strong directions, 0 for the direction removed by centring, never above 1.
    x = _images(n=400)
    m, _ = fit_zca(x, reg=0.1)
    z = apply_zca(x, m).reshape(400, -1).double()
    cov = z.T @ z / 400
    *_, sigma = _reference_fit(x.numpy(), 0.1)
    lam = np.linalg.eigvalsh(sigma)
    expected = lam / (lam + 0.1 * lam.mean())
    np.testing.assert_allclose(np.linalg.eigvalsh(cov.numpy()), expected, atol=1e-5)
    assert expected.max() < 1.0 and np.sort(expected)[1] > 0.5


def test_apply_zca_output_float32_same_shape_and_chunking_invariant():
    x = _images(n=50)
    m, _ = fit_zca(x, reg=0.1)
    whole = apply_zca(x, m)
    chunked = apply_zca(x, m, chunk_size=7)
    assert whole.dtype == torch.float32 and whole.shape == x.shape
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-6)  # BLAS blocking differs
    expected = (_normalised(x) @ m.T).reshape(x.shape).float()
    torch.testing.assert_close(whole, expected, rtol=1e-4, atol=1e-5)


def test_apply_zca_then_unapply_gives_normalised_images():
    x = _images(n=30)
    m, m_inv = fit_zca(x, reg=0.1)
    back = unapply_zca(apply_zca(x, m), m_inv)
    torch.testing.assert_close(back.reshape(30, -1).double(), _normalised(x), rtol=0, atol=1e-5)


def test_apply_zca_constant_image_gives_zeros_not_nan():
    x = _images(n=20)
    m, _ = fit_zca(x, reg=0.1)
    out = apply_zca(torch.full((1, 3, 4, 4), 0.5), m)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("reg", [0.0, -0.1, float("nan")])
def test_fit_zca_nonpositive_reg_raises_config_error(reg):
    with pytest.raises(ConfigError, match="data.zca_reg"):
        fit_zca(_images(n=10), reg=reg)


def test_zca_fingerprint_depends_on_data_and_reg():
    key = zca_fingerprint("abc", 0.1)
    assert key == zca_fingerprint("abc", 0.1)
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != zca_fingerprint("abd", 0.1)
    assert key != zca_fingerprint("abc", 0.2)


def test_load_or_fit_zca_miss_then_hit_reuses_file_without_refit(tmp_path: Path, monkeypatch):
    x = _images(n=60)
    m1, inv1, key = load_or_fit_zca(x, "data-fp", 0.1, tmp_path)
    path = tmp_path / f"zca-{key}.pt"
    assert key == zca_fingerprint("data-fp", 0.1) and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    stamp = path.stat().st_mtime_ns

    def no_refit(*args, **kwargs):
        raise AssertionError("cache hit must not refit")

    monkeypatch.setattr(zca, "fit_zca", no_refit)
    m2, inv2, key2 = load_or_fit_zca(x, "data-fp", 0.1, tmp_path)
    assert key2 == key and path.stat().st_mtime_ns == stamp
    assert torch.equal(m1, m2) and torch.equal(inv1, inv2)


def test_load_or_fit_zca_other_reg_is_a_miss(tmp_path: Path):
    x = _images(n=60)
    _, _, k1 = load_or_fit_zca(x, "data-fp", 0.1, tmp_path)
    m2, _, k2 = load_or_fit_zca(x, "data-fp", 0.2, tmp_path)
    assert k1 != k2 and len(list(tmp_path.glob("zca-*.pt"))) == 2
    torch.testing.assert_close(m2, fit_zca(x, 0.2)[0])


def test_load_or_fit_zca_corrupt_cache_refits_and_replaces(tmp_path: Path):
    x = _images(n=60)
    key = zca_fingerprint("data-fp", 0.1)
    path = tmp_path / f"zca-{key}.pt"
    path.write_bytes(b"not a torch file")
    m, m_inv, _ = load_or_fit_zca(x, "data-fp", 0.1, tmp_path)
    expected, _ = fit_zca(x, 0.1)
    torch.testing.assert_close(m, expected)
    entry = torch.load(path, weights_only=True)
    assert torch.equal(entry["matrix"], m) and torch.equal(entry["matrix_inv"], m_inv)


def test_load_or_fit_zca_wrong_shape_cache_refits(tmp_path: Path):
    x = _images(n=60)
    key = zca_fingerprint("data-fp", 0.1)
    bad = torch.eye(3, dtype=torch.float64)
    torch.save({"format": 1, "key": key, "matrix": bad, "matrix_inv": bad}, tmp_path / f"zca-{key}.pt")
    m, _, _ = load_or_fit_zca(x, "data-fp", 0.1, tmp_path)
    assert m.shape == (48, 48)


def test_load_or_fit_zca_without_cache_dir_fits(tmp_path: Path):
    x = _images(n=60)
    m, _, key = load_or_fit_zca(x, "data-fp", 0.1, None)
    torch.testing.assert_close(m, fit_zca(x, 0.1)[0])
    assert key == zca_fingerprint("data-fp", 0.1)
