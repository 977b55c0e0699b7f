"""Tests for ppodd.method.class_order: anti-diagonal visiting, greedy PoCO, fallbacks, JSON orders."""

import json

import pytest
import torch

from ppodd.method.class_order import (
    CIFAR10_POCO,
    CIFAR100_SUPERCLASSES,
    antidiagonal_cells,
    greedy_order,
    identity_order,
    superclass_order_cifar100,
)
from ppodd.cell.class_grid import load_order_json, resolve_class_order
from ppodd.errors import ConfigError

# §4: the derived CIFAR-100 superclass fallback, order[row][col].
CIFAR100_FALLBACK = [
    [0, 53, 1, 67, 91, 5, 25, 94, 16, 23],
    [51, 83, 32, 73, 4, 20, 84, 15, 38, 49],
    [57, 3, 42, 88, 30, 55, 95, 31, 33, 71],
    [2, 35, 43, 8, 48, 72, 22, 40, 60, 50],
    [11, 98, 97, 13, 90, 21, 39, 87, 47, 56],
    [46, 7, 24, 58, 19, 29, 86, 41, 52, 96],
    [6, 18, 12, 37, 27, 78, 36, 69, 59, 79],
    [14, 10, 17, 76, 44, 93, 65, 80, 77, 99],
    [9, 61, 68, 34, 64, 75, 74, 70, 92, 85],
    [28, 26, 45, 63, 66, 54, 62, 82, 81, 89],
]


def test_antidiagonal_cells_2x5_matches_spec():
    assert antidiagonal_cells(2, 5) == [
        (0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3), (0, 4), (1, 4)
    ]


def test_antidiagonal_cells_cover_every_cell_once():
    for rows, cols in [(10, 10), (3, 7), (7, 3), (1, 4)]:
        cells = antidiagonal_cells(rows, cols)
        assert sorted(cells) == [(r, c) for r in range(rows) for c in range(cols)]


def test_greedy_order_all_ties_follow_visit_order():
    order = greedy_order(torch.zeros(10, 10), 2, 5)
    assert order == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_greedy_order_picks_smallest_neighbour_sum():
    # Class 2 is closest to 0, so it takes cell (1, 0), the second visited.
    distance = torch.ones(4, 4) - torch.eye(4)
    distance[0, 2] = distance[2, 0] = 0.1
    assert greedy_order(distance, 2, 2)[1][0] == 2


def test_greedy_order_wrong_size_raises():
    with pytest.raises(ConfigError, match="2 x 5"):
        greedy_order(torch.zeros(9, 9), 2, 5)


def test_superclasses_partition_cifar100():
    assert len(CIFAR100_SUPERCLASSES) == 20
    assert sorted(c for group in CIFAR100_SUPERCLASSES for c in group) == list(range(100))


def test_superclass_order_cifar100_matches_spec():
    assert superclass_order_cifar100() == CIFAR100_FALLBACK


def test_identity_order_row_major():
    assert identity_order(2, 3) == [[0, 1, 2], [3, 4, 5]]


def test_resolve_class_order_auto_per_dataset():
    assert resolve_class_order("auto", "cifar10", 2, 5, 10) == [list(r) for r in CIFAR10_POCO]
    assert resolve_class_order("auto", "cifar100", 10, 10, 100) == CIFAR100_FALLBACK
    assert resolve_class_order("auto", "cifar10", 1, 10, 10) == identity_order(1, 10)


def test_resolve_class_order_named_specs():
    assert resolve_class_order("poco_cifar10", "cifar10", 2, 5, 10)[0] == [0, 8, 5, 7, 4]
    assert resolve_class_order("identity", "cifar10", 2, 5, 10) == identity_order(2, 5)
    assert resolve_class_order("superclass", "cifar100", 10, 10, 100) == CIFAR100_FALLBACK


def test_resolve_class_order_unknown_spec_lists_allowed():
    with pytest.raises(ConfigError, match="'clip'.*auto, poco_cifar10, superclass, identity"):
        resolve_class_order("clip", "cifar10", 2, 5, 10)


def test_resolve_class_order_poco_on_wrong_grid_raises():
    with pytest.raises(ConfigError, match="2 x 5 grid"):
        resolve_class_order("poco_cifar10", "cifar10", 1, 10, 10)


def test_load_order_json_valid_file(tmp_path):
    path = tmp_path / "order.json"
    path.write_text(json.dumps([[4, 3, 2, 1, 0], [5, 6, 7, 8, 9]]))
    assert load_order_json(path, 2, 5, 10) == [[4, 3, 2, 1, 0], [5, 6, 7, 8, 9]]
    assert resolve_class_order(str(path), "cifar10", 2, 5, 10)[0] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    "content, problem",
    [
        ([[0, 1, 2, 3, 4], [5, 6, 7, 8, 8]], "permutation of 0..9"),
        ([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], "2 rows of 5 ints"),
        ([[0, 1, 2, 3, 4], [5, 6, 7, 8, "9"]], "only integers"),
    ],
)
def test_load_order_json_bad_content_raises(tmp_path, content, problem):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=problem) as err:
        load_order_json(path, 2, 5, 10)
    assert str(path) in str(err.value)


def test_load_order_json_missing_or_broken_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_order_json(tmp_path / "absent.json", 2, 5, 10)
    broken = tmp_path / "broken.json"
    broken.write_text("[[0, 1")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_order_json(broken, 2, 5, 10)
