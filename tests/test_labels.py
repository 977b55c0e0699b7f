"""Tests for ppodd.method.labels: fixed overlap labels and the learned label map."""

import pytest
import torch
from helpers import cifar10_geometry

from ppodd.method.class_order import CIFAR10_POCO, superclass_order_cifar100
from ppodd.errors import ConfigError
from ppodd.method.labels import (
    fixed_labels,
    init_label_map,
    label_windows,
    learned_label_shape,
    overlap_counts,
    read_patch_labels,
)
from ppodd.method.poster import make_geometry

POCO = [list(r) for r in CIFAR10_POCO]


def cifar100_geometry():
    return make_geometry(0.9, 100, 32, size_rule="square")


def _overlap_counts_loop(geom, order):
    # §5.1 literally: a K × H × W count map summed over each patch box.
    count_map = torch.zeros(geom.num_classes, geom.height, geom.width, dtype=torch.long)
    a = geom.tile
    for j, y in enumerate(geom.tile_y):
        for i, x in enumerate(geom.tile_x):
            count_map[order[j][i], y : y + a, x : x + a] += 1
    rows = [
        count_map[:, y : y + a, x : x + a].sum(dim=(1, 2))
        for x in geom.patch_x
        for y in geom.patch_y
    ]
    return torch.stack(rows)


def test_overlap_counts_match_count_map_reference():
    geom = cifar10_geometry()
    assert torch.equal(overlap_counts(geom, POCO), _overlap_counts_loop(geom, POCO))
    small = make_geometry(0.4, 10, 32, n_x=7, n_y=3)
    assert torch.equal(overlap_counts(small, POCO), _overlap_counts_loop(small, POCO))


def test_fixed_labels_majority_table_matches_spec():
    labels = fixed_labels(cifar10_geometry(), POCO)
    assert labels.shape == (96, 10)
    majority = labels.argmax(dim=1).view(16, 6).T  # rows y, columns x
    top = [0, 0, 8, 8, 8, 8, 5, 5, 5, 5, 7, 7, 7, 7, 4, 4]
    bottom = [1, 1, 9, 9, 9, 9, 3, 3, 3, 3, 2, 2, 2, 2, 6, 6]
    assert majority.tolist() == [top] * 3 + [bottom] * 3


def test_fixed_labels_softmax_counts_are_one_hot():
    labels = fixed_labels(cifar10_geometry(), POCO)
    assert torch.all(labels.max(dim=1).values.round(decimals=3) == 1.0)


def test_fixed_labels_proportional_are_count_shares():
    geom = cifar10_geometry()
    labels = fixed_labels(geom, POCO, mode="proportional")
    counts = overlap_counts(geom, POCO).float()
    assert torch.allclose(labels.sum(dim=1), torch.ones(96))
    assert torch.allclose(labels, counts / counts.sum(dim=1, keepdim=True))
    assert labels.max() < 1.0  # patch 0 straddles the vertical overlap


def test_fixed_labels_unknown_mode_raises():
    with pytest.raises(ConfigError, match="softmax_counts, proportional"):
        fixed_labels(cifar10_geometry(), POCO, mode="hard")


def test_learned_label_shape_strictly_below_rule():
    assert learned_label_shape(303, 303, 100) == (10, 9)
    assert learned_label_shape(60, 153, 10) == (1, 6)


def test_learned_label_shape_exact_square_admits_equal_product():
    assert learned_label_shape(303, 303, 100, exact_square=True) == (10, 10)


def test_init_label_map_cuts_and_one_hot_cells():
    order = superclass_order_cifar100()
    label_map = init_label_map(10, 9, order)
    assert label_map.shape == (100, 10, 9)
    assert torch.equal(label_map.sum(dim=0), torch.ones(10, 9))
    # Column cuts 0 1 2 3 4 4 5 6 7 8 9: grid column 4 is empty, so its ten classes get no mass.
    empty = [c for c in range(100) if label_map[c].sum() == 0]
    assert sorted(empty) == sorted(order[r][4] for r in range(10))
    assert label_map[order[3][5], 3, 4] == 1 and label_map[order[3][3], 3, 3] == 1


def test_label_windows_cifar100_cells_match_spec():
    ys, xs, k_y, k_x = label_windows(10, 9, cifar100_geometry())
    assert (k_y, k_x) == (1, 1)
    assert xs == [0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8]
    assert ys == [v for v in range(10) for _ in range(2)]


def test_read_patch_labels_cifar100_reads_x_major_cells():
    geom = cifar100_geometry()
    # Channel c marks cell c = row * 9 + col, so the argmax names the cell each patch reads.
    label_map = torch.eye(100)[:90].T.reshape(100, 10, 9)
    labels = read_patch_labels(label_map, geom)
    xs = [0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8]
    expected = [(i_y // 2) * 9 + xs[i_x] for i_x in range(20) for i_y in range(20)]
    assert labels.argmax(dim=1).tolist() == expected
    assert torch.allclose(labels.sum(dim=1), torch.ones(400))


def test_read_patch_labels_matches_loop_reference_and_is_differentiable():
    geom = cifar10_geometry()
    label_map = torch.rand(10, 20, 30, generator=torch.Generator().manual_seed(0))
    label_map.requires_grad_(True)
    ys, xs, k_y, k_x = label_windows(20, 30, geom)
    assert (k_y, k_x) == (10, 6)
    slow = torch.stack(
        [label_map[:, y : y + k_y, x : x + k_x].sum(dim=(1, 2)) for x in xs for y in ys]
    )
    slow = slow / slow.sum(dim=1, keepdim=True)
    fast = read_patch_labels(label_map, geom)
    assert torch.allclose(fast, slow, atol=1e-6)
    fast[:, 3].sum().backward()
    assert label_map.grad is not None and label_map.grad.abs().sum() > 0


def test_read_patch_labels_zero_window_eps_guard():
    geom = cifar100_geometry()
    label_map = torch.zeros(100, 10, 9)
    assert torch.isnan(read_patch_labels(label_map, geom)).all()
    assert torch.equal(read_patch_labels(label_map, geom, eps=1e-8), torch.zeros(400, 100))
