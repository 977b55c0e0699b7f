"""Patch labels: fixed overlap labels and the learned label map (docs/method.md §5)."""

from __future__ import annotations

import math

import torch

from ppodd.errors import ConfigError
from ppodd.method.poster import PosterGeometry, linspace, pos
from ppodd.method.transfer import to_device

FIXED_LABEL_MODES = ("softmax_counts", "proportional")


def _overlap(starts_a: list[int], starts_b: list[int], size: int) -> torch.Tensor:
    # Length of the intersection of [p, p + a) and [t, t + a) for every pair: (len_a, len_b).
    a = torch.tensor(starts_a, dtype=torch.long)[:, None]
    b = torch.tensor(starts_b, dtype=torch.long)[None, :]
    return (torch.minimum(a, b) + size - torch.maximum(a, b)).clamp(min=0)


def overlap_counts(geom: PosterGeometry, order: list[list[int]]) -> torch.Tensor:
    """Return n_c(k), the pixels of class c's tile box inside patch k, (N, K), x-major (§5.1).

    Overlapping tile boxes count for both classes; each count is at most a².
    """
    overlap_x = _overlap(geom.patch_x, geom.tile_x, geom.tile)  # (n_x, Q)
    overlap_y = _overlap(geom.patch_y, geom.tile_y, geom.tile)  # (n_y, R)
    # counts[i_x, i_y, j, i] = pixels of grid box (row j, column i) inside patch (i_x, i_y).
    per_box = overlap_x[:, None, None, :] * overlap_y[None, :, :, None]  # (n_x, n_y, R, Q)
    per_box = per_box.reshape(geom.num_patches, geom.rows * geom.cols)
    counts = torch.zeros(geom.num_patches, geom.num_classes, dtype=torch.long)
    counts[:, [c for row in order for c in row]] = per_box
    return counts


def fixed_labels(
    geom: PosterGeometry,
    order: list[list[int]],
    mode: str = "softmax_counts",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the fixed overlap label of every patch, (N, K) float32 in x-major order (§5.1).

    mode "softmax_counts" (default) is softmax of the raw pixel counts, one-hot in practice
    (every 153 × 60 / 16 × 6 label has max probability 1.000); "proportional" is n / Σn.
    """
    counts = overlap_counts(geom, order).to(device=device, dtype=torch.float32)
    if mode == "softmax_counts":
        return torch.softmax(counts, dim=1)
    if mode == "proportional":
        return counts / counts.sum(dim=1, keepdim=True)
    raise ConfigError(
        f"fixed_label_mode {mode!r} is unknown; allowed: {', '.join(FIXED_LABEL_MODES)}"
    )


def learned_label_shape(
    height: int, width: int, num_classes: int, comp_ipc: int = 1, exact_square: bool = False
) -> tuple[int, int]:
    """Return the learned label map's spatial shape (h_l, w_l) (§5.2).

    With m = K·comp_ipc and (h, w) = (H, W)/√(H·W/m) in float64, the candidate among
    (⌈h⌉,⌈w⌉), (⌈h⌉,⌊w⌋), (⌊h⌋,⌈w⌉), (⌊h⌋,⌊w⌋) with the largest product strictly below m wins,
    ties to the earlier one: 303 × 303 gives (10, 9), 60 × 153 gives (1, 6). exact_square = True
    (open question 9) also admits a product equal to m, so 303 × 303 gives (10, 10).
    """
    m = num_classes * comp_ipc
    scale = 1 / math.sqrt(height * width / m)
    h, w = height * scale, width * scale
    candidates = [
        (math.ceil(h), math.ceil(w)),
        (math.ceil(h), math.floor(w)),
        (math.floor(h), math.ceil(w)),
        (math.floor(h), math.floor(w)),
    ]
    allowed = [c for c in candidates if c[0] * c[1] < m or (exact_square and c[0] * c[1] == m)]
    best = max(allowed, key=lambda c: c[0] * c[1], default=None)  # max keeps the earliest tie
    if best is None or best[0] < 1 or best[1] < 1:
        raise ConfigError(
            f"poster {width} x {height} with {m} label cells gives an empty learned label map;"
            f" use fixed labels"
        )
    return best


def init_label_map(
    h_l: int,
    w_l: int,
    order: list[list[int]],
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the initial learned label map Y, (K, h_l, w_l) float32 (§5.2).

    Grid block (row j, column i) sets channel order[j][i] to 1, with column cuts
    round(linspace(0, w_l, Q+1)) and row cuts round(linspace(0, h_l, R+1)); for w_l = 9 and
    Q = 10 the cuts are 0 1 2 3 4 4 5 6 7 8 9, so one grid column gets no cells.
    num_classes defaults to the number of entries in order.
    """
    rows, cols = len(order), len(order[0])
    num_classes = rows * cols if num_classes is None else num_classes
    row_cuts = [round(v) for v in linspace(0.0, float(h_l), rows + 1)]
    col_cuts = [round(v) for v in linspace(0.0, float(w_l), cols + 1)]
    label_map = torch.zeros(num_classes, h_l, w_l, device=device)
    for j in range(rows):
        for i in range(cols):
            label_map[order[j][i], row_cuts[j] : row_cuts[j + 1], col_cuts[i] : col_cuts[i + 1]] = 1
    return label_map


def label_windows(
    h_l: int, w_l: int, geom: PosterGeometry
) -> tuple[list[int], list[int], int, int]:
    """Return the label-map window origins and size (ys, xs, k_y, k_x) for the patch grid (§5.2).

    (k_y, k_x) = (max(1, ⌊a·h_l/H⌋), max(1, ⌊a·w_l/W⌋)); ys = pos(h_l, k_y, n_y) and
    xs = pos(w_l, k_x, n_x). For CIFAR-100 xs = 0 0 1 1 2 2 3 3 3 4 4 5 5 5 6 6 7 7 8 8.
    """
    k_y = max(1, geom.tile * h_l // geom.height)
    k_x = max(1, geom.tile * w_l // geom.width)
    return pos(h_l, k_y, geom.n_y), pos(w_l, k_x, geom.n_x), k_y, k_x


def read_patch_labels(
    label_map: torch.Tensor, geom: PosterGeometry, eps: float = 0.0
) -> torch.Tensor:
    """Return every patch's label read from the learned map, (N, K) in x-major order (§5.2).

    label_map is Y, (K, h_l, w_l). Each label is the window sum over space divided by its own
    total plus eps (L1 normalisation, no softmax); an all-zero window needs eps > 0. One gather,
    differentiable with respect to Y.
    """
    _, h_l, w_l = label_map.shape
    ys, xs, k_y, k_x = label_windows(h_l, w_l, geom)
    device = label_map.device
    row_start = to_device(torch.tensor(ys).repeat(geom.n_x), device)  # (N,) x-major
    col_start = to_device(torch.tensor(xs).repeat_interleave(geom.n_y), device)  # (N,)
    rows = row_start[:, None, None] + torch.arange(k_y, device=device)[None, :, None]  # (N, k_y, 1)
    cols = col_start[:, None, None] + torch.arange(k_x, device=device)[None, None, :]  # (N, 1, k_x)
    sums = label_map[:, rows, cols].sum(dim=(-2, -1)).T  # (N, K)
    return sums / (sums.sum(dim=1, keepdim=True) + eps)
