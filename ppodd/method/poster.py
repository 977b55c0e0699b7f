"""Poster geometry, pixel budget, initialisation and patch extraction (docs/method.md §0, §2, §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import torch

from ppodd.errors import ConfigError
from ppodd.method.transfer import to_device

SIZE_RULES = ("rows", "square")
PATCH_STRIDE_MODES = ("fixed_count", "fixed_stride")
# The 0.9-IPC patch grids of the source command lines (§2.3), keyed by class grid (rows, cols).
_SOURCE_PATCH_GRIDS = {(2, 5): (16, 6), (10, 10): (20, 20)}
# IPC of the sources' posters; fixed_stride mode keeps this poster's patch strides (§2.3).
REFERENCE_IPC = 0.9


def linspace(start: float, stop: float, n: int) -> list[float]:
    """Return n evenly spaced float64 values from start to stop inclusive, as numpy.linspace does.

    Each value is start + i·((stop − start)/(n − 1)) and the last is exactly stop, so the
    rounding in `pos` sees the same floats numpy would (§0).
    """
    if n == 1:
        return [float(start)]
    step = (stop - start) / (n - 1)
    values = [start + i * step for i in range(n)]
    values[-1] = float(stop)
    return values


def pos(length: int, size: int, n: int) -> list[int]:
    """Return the n start offsets round(linspace(0, L − s, n)) with half-to-even rounding (§0).

    For L = 153, s = 32, n = 16 they begin 0, 8, 16; for L = 60, s = 32, n = 6 they are
    0, 6, 11, 17, 22, 28 (§2.1).
    """
    if n < 1:
        raise ValueError(f"pos needs n >= 1, got {n}")
    # Python's round is half-to-even, as numpy's; floor(x + 0.5) would differ (§0).
    return [round(v) for v in linspace(0.0, float(length - size), n)]


@dataclass(frozen=True)
class PosterGeometry:
    """Shape of one poster: H × W pixels, a × a tiles on an R × Q class grid, n_x × n_y patches."""

    height: int
    width: int
    tile: int
    rows: int
    cols: int
    n_x: int
    n_y: int
    num_classes: int

    @property
    def num_patches(self) -> int:
        """N = n_x·n_y, the number of distinct patches (§0)."""
        return self.n_x * self.n_y

    @property
    def pixels(self) -> int:
        """H·W spatial pixels; channels are not counted (§2.2)."""
        return self.height * self.width

    @property
    def effective_ipc(self) -> float:
        """Effective IPC = H·W / (K·a²); 0.8965 for 153 × 60 on CIFAR-10 (§2.2)."""
        return self.pixels / (self.num_classes * self.tile**2)

    @property
    def tile_x(self) -> list[int]:
        """Class-tile x origins pos(W, a, Q); 0, 30, 60, 91, 121 for 153 × 60 (§2.1)."""
        return pos(self.width, self.tile, self.cols)

    @property
    def tile_y(self) -> list[int]:
        """Class-tile y origins pos(H, a, R); 0, 28 for 153 × 60 (§2.1)."""
        return pos(self.height, self.tile, self.rows)

    @property
    def patch_x(self) -> list[int]:
        """Patch x origins pos(W, a, n_x) (§2.1)."""
        return pos(self.width, self.tile, self.n_x)

    @property
    def patch_y(self) -> list[int]:
        """Patch y origins pos(H, a, n_y) (§2.1)."""
        return pos(self.height, self.tile, self.n_y)

    @property
    def patch_origins(self) -> torch.Tensor:
        """Patch origins (y, x), x-major (patch k = i_x·n_y + i_y); LongTensor (N, 2) (§2.1)."""
        ys = torch.tensor(self.patch_y, dtype=torch.long)
        xs = torch.tensor(self.patch_x, dtype=torch.long)
        return torch.stack(
            [ys.repeat(self.n_x), xs.repeat_interleave(self.n_y)], dim=1
        )  # (N, 2)


def _exact_ipc(ipc: float) -> Fraction:
    # IPC values are written as decimals (0.7); using the shortest decimal keeps 0.7·10240 = 7168
    # exact instead of 7167.999…, so the floors of §2.3 do not drop a pixel.
    return Fraction(repr(float(ipc)))


def pixel_budget(ipc: float, num_classes: int, tile: int) -> Fraction:
    """Return the pixel budget IPC·K·a² as an exact fraction (§2.2); 9216 for CIFAR-10 at 0.9."""
    return _exact_ipc(ipc) * num_classes * tile * tile


def poster_size(
    ipc: float, num_classes: int, tile: int, rows: int, cols: int, rule: str
) -> tuple[int, int]:
    """Return the poster size (H, W) that a size rule derives for an IPC (§2.3).

    rule "rows" (CIFAR-10): H = floor(R·a·√IPC), W = floor(IPC·K·a² / H), e.g. 60 × 153 at 0.9.
    rule "square" (CIFAR-100): H = W = floor(√(IPC·K·a²)), e.g. 303 × 303 at 0.9.
    Computed in exact arithmetic (floor(√x) = isqrt(floor(x))) so the §2.3 table comes out exactly.
    `cols` is unused by both rules; it is accepted so that every rule sees the whole grid.
    """
    if ipc <= 0:
        raise ConfigError(f"ipc must be > 0 (got {ipc})")
    budget = pixel_budget(ipc, num_classes, tile)
    if rule == "rows":
        height = math.isqrt(math.floor(_exact_ipc(ipc) * (rows * tile) ** 2))
        if height == 0:
            raise ConfigError(f"ipc {ipc} gives a poster of height 0 under size rule 'rows'")
        return height, math.floor(budget / height)
    if rule == "square":
        side = math.isqrt(math.floor(budget))
        return side, side
    raise ConfigError(f"size rule {rule!r} is unknown; allowed: {', '.join(SIZE_RULES)}")


def grid_shape(num_classes: int) -> tuple[int, int]:
    """Return the class grid (R, Q): the most square factorisation of K with R ≤ Q (§2.1).

    10 gives (2, 5) and 100 gives (10, 10).
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1 (got {num_classes})")
    rows = max(r for r in range(1, math.isqrt(num_classes) + 1) if num_classes % r == 0)
    return rows, num_classes // rows


def reference_strides(
    height: int, width: int, tile: int, base: tuple[int, int]
) -> tuple[float, float]:
    """Return the patch strides (stride_x, stride_y) of a poster with base = (n_x, n_y) patches.

    For CIFAR-10 at 0.9 IPC they are (153 − 32)/15 ≈ 8.07 and (60 − 32)/5 = 5.6 (§2.3). A single
    patch along an axis has no stride; it is reported as infinity so `patch_counts` keeps one.
    """
    n_x, n_y = base
    stride_x = (width - tile) / (n_x - 1) if n_x > 1 else math.inf
    stride_y = (height - tile) / (n_y - 1) if n_y > 1 else math.inf
    return stride_x, stride_y


def patch_counts(
    height: int,
    width: int,
    tile: int,
    base: tuple[int, int],
    mode: str = "fixed_count",
    ref_stride: tuple[float, float] | None = None,
) -> tuple[int, int]:
    """Return the patch grid (n_x, n_y) for an H × W poster under patch_stride_mode (§2.3).

    "fixed_count" returns base unchanged. "fixed_stride" keeps the strides ref_stride =
    (stride_x, stride_y) of the reference poster (see `reference_strides`) and sets
    n = round((L − a)/stride) + 1 per axis, half-to-even as in §0; base is then unused.
    """
    if mode == "fixed_count":
        return base
    if mode != "fixed_stride":
        raise ConfigError(
            f"patch_stride_mode {mode!r} is unknown; allowed: {', '.join(PATCH_STRIDE_MODES)}"
        )
    if ref_stride is None:
        raise ConfigError("patch_stride_mode 'fixed_stride' needs the reference strides")
    counts = []
    for length, stride in ((width, ref_stride[0]), (height, ref_stride[1])):
        if stride <= 0:
            raise ConfigError(f"reference patch stride must be > 0 (got {stride})")
        counts.append(round((length - tile) / stride) + 1)
    return counts[0], counts[1]


def _default_patch_grid(rows: int, cols: int) -> tuple[int, int]:
    # The sources' grids for 2 × 5 and 10 × 10 (§2.3); otherwise two patches per tile on each
    # axis, as Tiny-ImageNet's 40 × 20 patches on its 20 × 10 grid.
    return _SOURCE_PATCH_GRIDS.get((rows, cols), (2 * cols, 2 * rows))


def _resolve_grid(num_classes: int, rows: int | None, cols: int | None) -> tuple[int, int]:
    if rows is None and cols is None:
        return grid_shape(num_classes)
    if rows is None:
        rows = num_classes // cols if cols and num_classes % cols == 0 else 0
    if cols is None:
        cols = num_classes // rows if rows and num_classes % rows == 0 else 0
    if rows < 1 or cols < 1 or rows * cols != num_classes:
        raise ConfigError(
            f"class grid {rows} x {cols} does not hold {num_classes} classes; rows*cols must equal"
            f" num_classes"
        )
    return rows, cols


def make_geometry(
    ipc: float,
    num_classes: int,
    tile: int,
    *,
    rows: int | None = None,
    cols: int | None = None,
    height: int | None = None,
    width: int | None = None,
    n_x: int | None = None,
    n_y: int | None = None,
    size_rule: str = "rows",
    patch_stride_mode: str = "fixed_count",
) -> PosterGeometry:
    """Return the checked poster geometry for an IPC, deriving every value not given (§2).

    * Grid: `grid_shape(K)`, or the missing one of rows/cols from K.
    * Size: `poster_size` under size_rule unless both height and width are given.
    * Patches: n_x, n_y default to 16 × 6 for a 2 × 5 grid, 20 × 20 for 10 × 10, else
      2·Q × 2·R (capped at the available positions). Under patch_stride_mode "fixed_stride"
      these counts (given or default) are the counts of the 0.9-IPC reference poster, built
      by the same size rule, and the counts for this poster keep its strides (§2.3).
    Raises ConfigError when H·W exceeds the budget IPC·K·a² (§2.2), a tile does not fit, the
    grid does not hold K classes, or there are more patches than positions on an axis.
    """
    if ipc <= 0:
        raise ConfigError(f"ipc must be > 0 (got {ipc})")
    if tile < 1:
        raise ConfigError(f"tile must be >= 1 (got {tile})")
    rows, cols = _resolve_grid(num_classes, rows, cols)
    if (height is None) != (width is None):
        raise ConfigError(f"give both poster height and width or neither (got {height}, {width})")
    if height is None:
        height, width = poster_size(ipc, num_classes, tile, rows, cols, size_rule)
    budget = pixel_budget(ipc, num_classes, tile)
    if height * width > budget:
        raise ConfigError(
            f"poster {width} x {height} has {height * width} pixels, over the budget of"
            f" {float(budget):g} pixels for ipc {ipc} (IPC*K*a^2)"
        )
    if height < tile or width < tile:
        raise ConfigError(f"poster {width} x {height} is smaller than one {tile} x {tile} tile")
    positions_x, positions_y = width - tile + 1, height - tile + 1
    default_x, default_y = _default_patch_grid(rows, cols)
    base_x = n_x if n_x is not None else default_x
    base_y = n_y if n_y is not None else default_y
    strides = None
    if patch_stride_mode == "fixed_stride":
        ref_h, ref_w = poster_size(REFERENCE_IPC, num_classes, tile, rows, cols, size_rule)
        strides = reference_strides(ref_h, ref_w, tile, (base_x, base_y))
    base_x, base_y = patch_counts(
        height, width, tile, (base_x, base_y), patch_stride_mode, strides
    )
    # Defaults adapt to small posters; counts the user set are checked instead.
    if n_x is None:
        base_x = min(base_x, positions_x)
    if n_y is None:
        base_y = min(base_y, positions_y)
    for axis, count, positions in (("n_x", base_x, positions_x), ("n_y", base_y, positions_y)):
        if count < 1 or count > positions:
            raise ConfigError(
                f"{axis} = {count} patches, but a {width} x {height} poster has {positions}"
                f" positions on that axis; allowed: 1..{positions}"
            )
    return PosterGeometry(height, width, tile, rows, cols, base_x, base_y, num_classes)


def fade_mask(old_width: int, new_origin: int, new_width: int) -> list[float]:
    """Return the fade-blend weights of the old canvas over the new width (§3 step 3).

    With e = old_width and overlap o = e − new_origin: 1 on the first e − max(o, 0) entries,
    then 1 − linspace(0, 1, |o|), then 0. A 2-px overlap gives (1, 0), 1 px gives (1), 4 px
    gives (1, ⅔, ⅓, 0); in a gap both sides are zero, so the weights there do not matter.
    """
    overlap = old_width - new_origin
    ones = old_width - max(overlap, 0)
    ramp = [1.0 - v for v in linspace(0.0, 1.0, abs(overlap))] if overlap else []
    return [1.0] * ones + ramp + [0.0] * (new_width - ones - len(ramp))


def blend_strip(pieces: Sequence[torch.Tensor], origins: Sequence[int], axis: int) -> torch.Tensor:
    """Return the pieces fade-blended into one strip along `axis` (§3 step 3).

    Pieces share every dimension but `axis`, where each has the same size s; piece i starts at
    origins[i] (origins[0] = 0), so the strip is origins[-1] + s long. Used with axis −1 on
    (3, a, a) tiles to build a row and with axis −2 on (3, a, W) rows to stack them.
    """
    axis = axis % pieces[0].dim()
    canvas = pieces[0]
    for piece, origin in zip(pieces[1:], origins[1:]):
        size = piece.shape[axis]
        old_width, new_width = canvas.shape[axis], origin + size
        shape = [1] * canvas.dim()
        shape[axis] = new_width
        mask = torch.tensor(
            fade_mask(old_width, origin, new_width), dtype=canvas.dtype, device=canvas.device
        ).view(shape)
        old = canvas.new_zeros(canvas.shape[:axis] + (new_width,) + canvas.shape[axis + 1 :])
        new = torch.zeros_like(old)
        old.narrow(axis, 0, old_width).copy_(canvas)
        new.narrow(axis, origin, size).copy_(piece)
        canvas = mask * old + (1 - mask) * new
    return canvas


def init_tiles(
    num_classes: int, tile: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Return K unit-norm noisy class tiles, (K, 3, a, a) (§3 step 1).

    Means μ_c ~ N(0, I) of length 3a², tiles μ_c + σε with σ = d_min/4 as a standard deviation,
    d_min the smallest distance between two means, then each tile rescaled to unit L2 norm.
    """
    length = 3 * tile * tile
    device = generator.device
    means = torch.randn(num_classes, length, generator=generator, device=device, dtype=dtype)
    noise = torch.randn(num_classes, length, generator=generator, device=device, dtype=dtype)
    # With a single class there is no pair; its tile is then the mean alone.
    d_min = torch.pdist(means).min() if num_classes > 1 else means.new_zeros(())
    tiles = means + (d_min / 4) * noise
    tiles = tiles / tiles.norm(dim=1, keepdim=True)
    return tiles.view(num_classes, 3, tile, tile)


def init_poster(
    geom: PosterGeometry, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Return a fresh poster in whitened space, (3, H, W), on the generator's device (§3).

    Tile k goes to grid row k // Q, column k % Q regardless of the class order (§3 step 2); rows
    are fade-blended along x at the tile x origins, then stacked along y at the tile y origins
    (consecutive row boxes, the intent of the reference, §3 step 3).
    """
    tiles = init_tiles(geom.rows * geom.cols, geom.tile, generator, dtype)  # (R·Q, 3, a, a)
    tile_x, tile_y = geom.tile_x, geom.tile_y
    strips = [
        blend_strip(tiles[r * geom.cols : (r + 1) * geom.cols], tile_x, axis=-1)  # (3, a, W)
        for r in range(geom.rows)
    ]
    return blend_strip(strips, tile_y, axis=-2).contiguous()  # (3, H, W)


def patch_origins_on(
    geom: PosterGeometry, device: torch.device | str | None = None
) -> torch.Tensor:
    """Return the x-major patch origins (y, x), LongTensor (N, 2), on `device` (§2.1).

    Build this once per run and pass it to `extract_patches` to skip rebuilding it every step.
    """
    return geom.patch_origins if device is None else to_device(geom.patch_origins, device)


def extract_patches(
    pool: torch.Tensor,
    member: torch.Tensor,
    patch: torch.Tensor,
    geom: PosterGeometry,
    origins: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return patch `patch[i]` of poster `member[i]` for every i, (b, 3, a, a) (§2.1, §8.2).

    pool is (M, 3, H, W); member and patch are LongTensors (b,). One gather from the flattened
    pool, differentiable with respect to pool. origins, if given, is `patch_origins_on(geom, device)`.
    """
    if origins is None:
        origins = patch_origins_on(geom, pool.device)
    _, channels, height, width = pool.shape
    offsets = torch.arange(geom.tile, device=pool.device)
    corner = origins[patch]  # (b, 2)
    ys = (corner[:, 0, None] + offsets)[:, None, :, None]  # (b, 1, a, 1)
    xs = (corner[:, 1, None] + offsets)[:, None, None, :]  # (b, 1, 1, a)
    planes = (member[:, None] * channels + torch.arange(channels, device=pool.device))[:, :, None, None]
    flat = (planes * height + ys) * width + xs  # (b, 3, a, a)
    # index_select, not advanced indexing: on a multi-threaded CPU the backward of pool[...] adds
    # with parallel atomics (summation order varies run to run); index_select's adds serially.
    return pool.reshape(-1).index_select(0, flat.reshape(-1)).view(flat.shape)
