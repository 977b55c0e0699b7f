"""Class order on the poster grid, PoCO and its fallbacks (docs/method.md §4).

The CLIP-based PoCO order itself is not computed here: CLIP weights are an optional, external
dependency. Compute it elsewhere (§4 steps 1–2 give the distance) and name the grid's JSON file in
`poster.class_order` (`ppodd.cell.class_grid`), or pass the distance matrix to `greedy_order`.
"""

from __future__ import annotations

import torch

from ppodd.errors import ConfigError

# §4 known result: the PoCO grid of every P-PoDD run, order[row][col] on the 2 × 5 grid.
CIFAR10_POCO = ((0, 8, 5, 7, 4), (1, 9, 3, 2, 6))

# §4: the 20 CIFAR-100 superclasses as fine-label indices (they equal the coarse labels 0–19).
CIFAR100_SUPERCLASSES = (
    (4, 30, 55, 72, 95),  # aquatic mammals
    (1, 32, 67, 73, 91),  # fish
    (54, 62, 70, 82, 92),  # flowers
    (9, 10, 16, 28, 61),  # food containers
    (0, 51, 53, 57, 83),  # fruit and vegetables
    (22, 39, 40, 86, 87),  # household electrical devices
    (5, 20, 25, 84, 94),  # household furniture
    (6, 7, 14, 18, 24),  # insects
    (3, 42, 43, 88, 97),  # large carnivores
    (12, 17, 37, 68, 76),  # large man-made outdoor things
    (23, 33, 49, 60, 71),  # large natural outdoor scenes
    (15, 19, 21, 31, 38),  # large omnivores and herbivores
    (34, 63, 64, 66, 75),  # medium mammals
    (26, 45, 77, 79, 99),  # non-insect invertebrates
    (2, 11, 35, 46, 98),  # people
    (27, 29, 44, 78, 93),  # reptiles
    (36, 50, 65, 74, 80),  # small mammals
    (47, 52, 56, 59, 96),  # trees
    (8, 13, 48, 58, 90),  # vehicles 1
    (41, 69, 81, 85, 89),  # vehicles 2
)

def antidiagonal_cells(rows: int, cols: int) -> list[tuple[int, int]]:
    """Return the R·Q grid cells (row, col) in PoCO's anti-diagonal visiting order (§4 step 3).

    For 2 × 5: (0,0), (1,0), (0,1), (1,1), (0,2), (1,2), (0,3), (1,3), (0,4), (1,4).
    """
    cells = []
    for line in range(1, rows + cols):
        start_col = max(0, line - rows)
        for j in range(min(line, cols - start_col, rows)):
            cells.append((min(rows, line) - 1 - j, start_col + j))
    return cells


def greedy_order(distance: torch.Tensor, rows: int, cols: int) -> list[list[int]]:
    """Return the class grid order[row][col] placed greedily by distance, (K, K) → R × Q (§4 4–5).

    The first visited cell gets class 0; each later cell gets the unused class with the smallest
    sum of distances to its already-filled 4-neighbours, ties to the earliest remaining class.
    """
    num_classes = distance.shape[0]
    if tuple(distance.shape) != (num_classes, num_classes) or rows * cols != num_classes:
        raise ConfigError(
            f"class grid {rows} x {cols} needs a {rows * cols} x {rows * cols} distance matrix"
            f" (got {tuple(distance.shape)})"
        )
    dist = distance.tolist()
    grid: list[list[int | None]] = [[None] * cols for _ in range(rows)]
    remaining = list(range(num_classes))
    for row, col in antidiagonal_cells(rows, cols):
        neighbours = [
            grid[r][c]
            for r, c in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1))
            if 0 <= r < rows and 0 <= c < cols and grid[r][c] is not None
        ]
        # min() keeps the first of equal scores, i.e. the earliest remaining class.
        best = min(remaining, key=lambda k: sum(dist[k][n] for n in neighbours))
        grid[row][col] = best
        remaining.remove(best)
    return [list(map(int, r)) for r in grid]


def superclass_distance(groups=CIFAR100_SUPERCLASSES, num_classes: int = 100) -> torch.Tensor:
    """Return the fallback distance, 0 within a superclass and 1 across, (K, K) (§4)."""
    group_of = torch.empty(num_classes, dtype=torch.long)
    for index, members in enumerate(groups):
        group_of[list(members)] = index
    return (group_of[:, None] != group_of[None, :]).double()


def superclass_order_cifar100() -> list[list[int]]:
    """Return the deterministic CIFAR-100 fallback order on the 10 × 10 grid (§4).

    Its first row is 0 53 1 67 91 5 25 94 16 23 (apple, orange, aquarium fish, ...).
    """
    return greedy_order(superclass_distance(), 10, 10)


def identity_order(rows: int, cols: int) -> list[list[int]]:
    """Return the row-major order 0 … K−1 on the R × Q grid (§4)."""
    return [[r * cols + c for c in range(cols)] for r in range(rows)]


def validate_order(order, rows: int, cols: int, num_classes: int, source: str) -> list[list[int]]:
    """Return order as int lists after checking it is an R × Q permutation of 0 … K−1 (§4 step 5).

    source names where the order came from in the error message.
    """
    if (
        not isinstance(order, list)
        or len(order) != rows
        or any(not isinstance(r, list) or len(r) != cols for r in order)
    ):
        raise ConfigError(f"class order in {source} must be a list of {rows} rows of {cols} ints")
    flat = [v for r in order for v in r]
    if any(isinstance(v, bool) or not isinstance(v, int) for v in flat):
        raise ConfigError(f"class order in {source} must hold only integers")
    if sorted(flat) != list(range(num_classes)):
        raise ConfigError(
            f"class order in {source} must be a permutation of 0..{num_classes - 1}"
            f" (missing {sorted(set(range(num_classes)) - set(flat))},"
            f" got {len(flat)} entries)"
        )
    return [list(r) for r in order]
