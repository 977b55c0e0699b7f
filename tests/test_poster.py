"""Tests for ppodd.method.poster: pos, geometry, sizes per IPC, fade blending, patch extraction."""

import pytest
import torch
from helpers import cifar10_geometry

from ppodd.errors import ConfigError
from ppodd.method.poster import (
    blend_strip,
    extract_patches,
    fade_mask,
    grid_shape,
    init_poster,
    init_tiles,
    make_geometry,
    patch_counts,
    patch_origins_on,
    pos,
    poster_size,
    reference_strides,
)

# §2.3: (IPC, CIFAR-10 W, CIFAR-10 H, CIFAR-100 side).
SIZE_TABLE = [
    (0.3, 87, 35, 175),
    (0.4, 102, 40, 202),
    (0.5, 113, 45, 226),
    (0.6, 125, 49, 247),
    (0.7, 135, 53, 267),
    (0.8, 143, 57, 286),
    (0.9, 153, 60, 303),
    (1.0, 160, 64, 320),
]


def test_pos_cifar10_patches_match_spec():
    assert pos(153, 32, 16) == [0, 8, 16, 24, 32, 40, 48, 56, 65, 73, 81, 89, 97, 105, 113, 121]
    assert pos(60, 32, 6) == [0, 6, 11, 17, 22, 28]


def test_pos_rounds_half_to_even():
    # linspace(0, 1, 3) = 0, 0.5, 1 and linspace(0, 3, 3) = 0, 1.5, 3: 0.5 -> 0, 1.5 -> 2.
    assert pos(2, 1, 3) == [0, 0, 1]
    assert pos(4, 1, 3) == [0, 2, 3]


def test_pos_single_position_is_zero():
    assert pos(153, 32, 1) == [0]


def test_pos_many_sizes_match_numpy():
    np = pytest.importorskip("numpy")
    for length in range(32, 330, 7):
        for n in range(1, 25):
            expected = np.round(np.linspace(0, length - 32, n)).astype(int).tolist()
            assert pos(length, 32, n) == expected, (length, n)


def test_geometry_cifar10_matches_spec():
    geom = cifar10_geometry()
    assert (geom.height, geom.width, geom.rows, geom.cols) == (60, 153, 2, 5)
    assert (geom.n_x, geom.n_y) == (16, 6)
    assert geom.tile_x == [0, 30, 60, 91, 121]
    assert geom.tile_y == [0, 28]
    assert geom.num_patches == 96 and geom.pixels == 9180
    assert geom.effective_ipc == pytest.approx(0.8965, abs=1e-4)


def test_geometry_cifar100_matches_spec():
    geom = make_geometry(0.9, 100, 32, size_rule="square")
    assert (geom.height, geom.width, geom.rows, geom.cols) == (303, 303, 10, 10)
    assert (geom.n_x, geom.n_y) == (20, 20)
    tiles = [0, 30, 60, 90, 120, 151, 181, 211, 241, 271]
    assert geom.tile_x == tiles and geom.tile_y == tiles
    patches = [0, 14, 29, 43, 57, 71, 86, 100, 114, 128]
    patches += [143, 157, 171, 185, 200, 214, 228, 242, 257, 271]
    assert geom.patch_x == patches and geom.patch_y == patches


def test_patch_origins_x_major_order():
    geom = cifar10_geometry()
    origins = geom.patch_origins
    assert origins.shape == (96, 2) and origins.dtype == torch.long
    # patch k = i_x * n_y + i_y; k = 7 is i_x = 1, i_y = 1.
    assert origins[7].tolist() == [6, 8]
    assert origins[95].tolist() == [28, 121]
    assert origins[:6, 1].tolist() == [0] * 6


@pytest.mark.parametrize("ipc, width, height, side", SIZE_TABLE)
def test_poster_size_table_matches_spec(ipc, width, height, side):
    assert poster_size(ipc, 10, 32, 2, 5, "rows") == (height, width)
    assert poster_size(ipc, 100, 32, 10, 10, "square") == (side, side)


def test_poster_size_rows_rule_on_cifar100_differs():
    # §2.3: the CIFAR-10 rule would give 304 x 303 on CIFAR-100.
    assert poster_size(0.9, 100, 32, 10, 10, "rows") == (303, 304)


def test_poster_size_unknown_rule_raises():
    with pytest.raises(ConfigError, match="rows, square"):
        poster_size(0.9, 10, 32, 2, 5, "diagonal")


def test_grid_shape_most_square():
    assert grid_shape(10) == (2, 5)
    assert grid_shape(100) == (10, 10)
    assert grid_shape(12) == (3, 4)
    assert grid_shape(7) == (1, 7)


def test_patch_counts_fixed_count_returns_base():
    assert patch_counts(35, 87, 32, (16, 6), "fixed_count") == (16, 6)


def test_patch_counts_fixed_stride_keeps_reference_strides():
    strides = reference_strides(60, 153, 32, (16, 6))
    assert strides == pytest.approx((121 / 15, 5.6))
    assert patch_counts(60, 153, 32, (16, 6), "fixed_stride", strides) == (16, 6)
    # 0.3 IPC: (87 - 32) / 8.07 = 6.8 -> 8 patches; (35 - 32) / 5.6 = 0.54 -> 2.
    assert patch_counts(35, 87, 32, (16, 6), "fixed_stride", strides) == (8, 2)


def test_patch_counts_unknown_mode_raises():
    with pytest.raises(ConfigError, match="fixed_count, fixed_stride"):
        patch_counts(60, 153, 32, (16, 6), "adaptive")


def test_make_geometry_fixed_stride_uses_reference_poster():
    geom = make_geometry(0.3, 10, 32, patch_stride_mode="fixed_stride")
    assert (geom.width, geom.height, geom.n_x, geom.n_y) == (87, 35, 8, 2)


def test_make_geometry_default_patches_capped_for_small_poster():
    geom = make_geometry(0.3, 10, 32)
    assert (geom.n_x, geom.n_y) == (16, 4)


def test_make_geometry_over_budget_raises():
    with pytest.raises(ConfigError, match=r"153 x 61 has 9333 pixels.*9216"):
        make_geometry(0.9, 10, 32, height=61, width=153)


def test_make_geometry_grid_not_holding_classes_raises():
    with pytest.raises(ConfigError, match="3 x 3 does not hold 10 classes"):
        make_geometry(0.9, 10, 32, rows=3, cols=3)


def test_make_geometry_too_many_patches_raises():
    with pytest.raises(ConfigError, match="n_y = 30 patches"):
        make_geometry(0.9, 10, 32, n_y=30)


def test_make_geometry_tile_larger_than_poster_raises():
    with pytest.raises(ConfigError, match="smaller than one 32 x 32 tile"):
        make_geometry(0.9, 10, 32, height=20, width=400)


def test_make_geometry_nonpositive_ipc_raises():
    with pytest.raises(ConfigError, match="ipc must be > 0"):
        make_geometry(0.0, 10, 32)


def test_make_geometry_half_size_raises():
    with pytest.raises(ConfigError, match="both poster height and width"):
        make_geometry(0.9, 10, 32, height=60)


def test_fade_mask_overlaps_match_spec():
    assert fade_mask(62, 60, 92)[60:62] == [1.0, 0.0]
    assert fade_mask(92, 91, 123)[90:93] == [1.0, 1.0, 0.0]
    assert fade_mask(32, 28, 60)[28:32] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert fade_mask(32, 28, 60)[:28] == [1.0] * 28 and fade_mask(32, 28, 60)[32:] == [0.0] * 28


def test_blend_strip_gap_becomes_zeros():
    pieces = [torch.full((1, 1, 2), 5.0), torch.full((1, 1, 2), 7.0)]
    strip = blend_strip(pieces, [0, 4], axis=-1)
    assert strip.flatten().tolist() == [5, 5, 0, 0, 7, 7]


def test_blend_strip_cifar10_rows_and_columns():
    geom = cifar10_geometry()
    tiles = [torch.full((1, 32, 32), float(k + 1)) for k in range(5)]
    row = blend_strip(tiles, geom.tile_x, axis=-1)[0, 0]
    assert row.shape == (153,)
    # Overlaps at 30-31 (2 px) and 91 (1 px): (1, 0) keeps left then right; (1) keeps the left.
    assert row[29:33].tolist() == [1, 1, 2, 2]
    assert row[90:93].tolist() == [3, 3, 4]
    strips = [torch.zeros(1, 32, 3), torch.full((1, 32, 3), 3.0)]
    column = blend_strip(strips, geom.tile_y, axis=-2)[0, :, 0]
    assert column.shape == (60,)
    assert column[27:33].tolist() == pytest.approx([0, 0, 1, 2, 3, 3])


def test_init_tiles_unit_norm():
    tiles = init_tiles(10, 32, torch.Generator().manual_seed(0))
    assert tiles.shape == (10, 3, 32, 32)
    assert tiles.flatten(1).norm(dim=1) == pytest.approx(torch.ones(10))


def test_init_poster_shape_determinism_and_tile_placement():
    geom = cifar10_geometry()
    poster = init_poster(geom, torch.Generator().manual_seed(3))
    assert poster.shape == (3, 60, 153) and poster.dtype == torch.float32
    assert torch.equal(poster, init_poster(geom, torch.Generator().manual_seed(3)))
    tiles = init_tiles(10, 32, torch.Generator().manual_seed(3))
    # Top-left corner keeps tile 0; bottom-right corner keeps tile 9 (row 1, column 4).
    assert torch.equal(poster[:, :28, :30], tiles[0][:, :28, :30])
    assert torch.equal(poster[:, 32:, 123:], tiles[9][:, 4:, 2:])


def _extract_patches_loop(pool, member, patch, geom):
    origins = geom.patch_origins.tolist()
    a = geom.tile
    crops = []
    for m, k in zip(member.tolist(), patch.tolist()):
        y, x = origins[k]
        crops.append(pool[m, :, y : y + a, x : x + a])
    return torch.stack(crops)


def test_extract_patches_matches_loop_reference_and_gradient():
    geom = cifar10_geometry()
    gen = torch.Generator().manual_seed(1)
    pool = torch.randn(3, 3, 60, 153, generator=gen, requires_grad=True)
    member = torch.randint(0, 3, (40,), generator=gen)
    patch = torch.randint(0, 96, (40,), generator=gen)
    weights = torch.randn(40, 3, 32, 32, generator=gen)
    fast = extract_patches(pool, member, patch, geom)
    slow = _extract_patches_loop(pool, member, patch, geom)
    assert torch.equal(fast, slow)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), pool)
    (grad_slow,) = torch.autograd.grad((slow * weights).sum(), pool)
    assert torch.allclose(grad_fast, grad_slow, atol=1e-5)


@pytest.fixture
def two_threads():
    """Two intra-op threads, where PyTorch's parallel CPU kernels kick in."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_extract_patches_gradient_bitwise_repeatable_on_two_threads(two_threads):
    # Demo-config size: 96 patches of 16 px, 73,728 values, above PyTorch's parallel grain of
    # 32,768, where advanced indexing's backward adds with racing atomics.
    geom = make_geometry(0.9, 10, 16)
    gen = torch.Generator().manual_seed(3)
    pool = torch.randn(3, 3, geom.height, geom.width, generator=gen, requires_grad=True)
    member = torch.randint(0, 3, (96,), generator=gen)
    patch = torch.randint(0, geom.num_patches, (96,), generator=gen)
    weights = torch.randn(96, 3, geom.tile, geom.tile, generator=gen)
    grads = [torch.autograd.grad((extract_patches(pool, member, patch, geom) * weights).sum(), pool)[0]
             for _ in range(10)]
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_extract_patches_precomputed_origins_same_result():
    geom = cifar10_geometry()
    pool = torch.randn(2, 3, 60, 153, generator=torch.Generator().manual_seed(2))
    member = torch.tensor([0, 1, 1])
    patch = torch.tensor([0, 50, 95])
    origins = patch_origins_on(geom, pool.device)
    assert torch.equal(
        extract_patches(pool, member, patch, geom, origins=origins),
        extract_patches(pool, member, patch, geom),
    )
