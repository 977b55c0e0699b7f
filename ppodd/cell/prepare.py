"""Everything a run derives from its config and data before any distillation, checked up front.

Bad input (a missing data set, a poster over its budget, more patches per step than the poster
has) fails here, before any expensive work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ppodd.cell.class_grid import resolve_class_order
from ppodd.cell.evalnets import check_networks
from ppodd.config import RunConfig
from ppodd.cell.host import Host
from ppodd.datasets.catalog import load_dataset
from ppodd.datasets.images import ImageData
from ppodd.errors import ConfigError, describe
from ppodd.method.labels import fixed_labels, learned_label_shape
from ppodd.method.poster import PosterGeometry, make_geometry
from ppodd.datasets.zca import apply_zca, load_or_fit_zca

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cache_dir(cfg: RunConfig, host: Host) -> Path:
    """Where ZCA matrices and decoded images are cached: the config's folder, else the host's."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    return host.cache_dir


def select_device(name: str) -> torch.device:
    """The torch device for `device: auto | cpu | cuda`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for, but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def use_precision(precision: str) -> None:
    """Set how a GPU computes float32 matrix products and convolutions for `config.precision`.

    `ieee` (and `bf16`, outside its autocast regions) is full float32, as on the CPU: cuDNN's
    default on Ampere and later GPUs is TF32 (10 mantissa bits), so the same config would give
    other numbers on an A100 than on the V100 the reference ran on or on the CPU, and the
    meta-gradient through Adam amplifies such rounding (bench/README.md, precision). `tf32` turns
    TF32 on for both. Both are set every time, since the setting is the process's, not the run's.
    Only PyTorch's per-backend switches are used: they leave the CPU's own (oneDNN) alone.
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def check_compile(cfg: RunConfig, device: torch.device) -> None:
    """ConfigError, before any work, when `eval.compile` is on and torch.compile cannot build
    kernels on `device` on this node (no C++ compiler for the CPU, no Triton or C compiler for a GPU)."""
    if not cfg.eval.compile:
        return
    try:
        torch.compile(lambda t: t * 2 + 1, dynamic=False)(torch.zeros(2, device=device))
    except Exception as err:  # noqa: BLE001 - every failure to build a kernel gets the same advice
        raise ConfigError(f"eval.compile: torch.compile cannot build kernels on {device} on this node "
                          f"({describe(err)}); install a C++ compiler (CPU) or Triton and a C compiler "
                          "(GPU), or set eval.compile: false") from None


@dataclass
class Prepared:
    """Everything a run needs that is derived from the config and the data, checked up front."""

    cfg: RunConfig
    device: torch.device
    data: ImageData
    train_x: torch.Tensor       # (n, 3, a, a) whitened, on the device
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    geom: PosterGeometry
    order: list[list[int]]
    fixed_labels: torch.Tensor | None   # (N, K) with fixed labels
    label_shape: tuple[int, int] | None  # (h_l, w_l) with learned labels
    zca_key: str
    zca_matrix: torch.Tensor | None  # M (D, D) on the CPU; None when ZCA is off


def build_geometry(cfg: RunConfig, num_classes: int, image_size: int, dataset: str) -> PosterGeometry:
    """The poster geometry a config asks for (§2), or ConfigError naming what does not fit."""
    p = cfg.poster
    rule = p.size_rule if p.size_rule != "auto" else ("square" if dataset == "cifar100" else "rows")
    try:
        geom = make_geometry(p.ipc, num_classes, image_size, rows=p.rows or None, cols=p.cols or None,
                             height=p.height or None, width=p.width or None,
                             n_x=p.patches_x or None, n_y=p.patches_y or None,
                             size_rule=rule, patch_stride_mode=p.patch_stride_mode)
    except ConfigError as e:
        raise ConfigError(f"poster: {e}") from None
    if cfg.distill.batch_patches > geom.num_patches:
        raise ConfigError(f"distill.batch_patches: must be <= the poster's {geom.num_patches} patches "
                          f"({geom.n_x} x {geom.n_y}), got {cfg.distill.batch_patches}")
    return geom


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device`, or None where the platform cannot say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(cfg: RunConfig, geom: PosterGeometry, image_size: int, device: torch.device,
                 images: int = 0) -> None:
    """ConfigError, before any work, when what a run holds at once cannot fit in free memory: its
    posters, its ZCA fit, and its `images` real images as the run holds them."""
    # A lower bound: T frozen snapshots, the live poster, its gradient and two Adam moments (float32).
    need = 4 * 3 * geom.pixels * (cfg.num_stages + 4)
    free = free_memory(device)
    if free is not None and need > free:
        raise ConfigError(f"poster.ipc: {cfg.poster.ipc:g} gives a {geom.width} x {geom.height} poster, and "
                          f"{cfg.num_stages} stage(s) hold at least {need / 2**30:.3g} GiB of posters, more than "
                          f"the {free / 2**30:.3g} GiB free on {device}; lower poster.ipc or ppodd.stages")
    # §1: the fit holds four (D, D) float64 matrices at once, D = 3a², on the CPU: Σ, its eigenvectors
    # and the eigensolver's workspace, then the eigenvectors, M, M⁻¹ and an operand (datasets.zca).
    dim = 3 * image_size * image_size
    need = 4 * 8 * dim * dim
    free = free_memory(torch.device("cpu"))
    if cfg.data.zca and free is not None and need > free:
        raise ConfigError(f"data.zca: whitening {image_size} x {image_size} images needs at least "
                          f"{need / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB free "
                          f"(the fit's four {dim} x {dim} float64 matrices); set data.zca=false or use "
                          "smaller images (data.image_size)")
    # The images go to the device as float32; whitening makes new ones (the loaded ones stay) and
    # keeps M in float64 and float32 beside them.
    copies = cfg.data.zca or device.type != "cpu"
    need = (4 * dim * images if copies else 0) + (12 * dim * dim if cfg.data.zca and device.type == "cpu" else 0)
    free = free_memory(device)
    if free is not None and need > free:
        raise ConfigError(f"data.name: the {images} {cfg.data.name} images of {image_size} x {image_size} need "
                          f"{need / 2**30:.3g} GiB on {device} as the run holds them, more than the "
                          f"{free / 2**30:.3g} GiB free; use smaller images (data.image_size) or another device")


def load_data(cfg: RunConfig, host: Host) -> ImageData:
    """The config's data set, unwhitened (decoded images are cached by `load_dataset`)."""
    d = cfg.data
    return load_dataset(d.name, d.root, download=d.download, cache_dir=cache_dir(cfg, host), synthetic=d.synthetic,
                        image_size=d.image_size, resize=d.resize)


def plan_poster(cfg: RunConfig, data: ImageData, device: torch.device) -> tuple[PosterGeometry, list[list[int]]]:
    """The poster's geometry and class order on `data`, checked against the config and free memory;
    the evaluation networks checked against the image size."""
    geom = build_geometry(cfg, data.num_classes, data.image_size, cfg.data.name)
    check_memory(cfg, geom, data.image_size, device, len(data.train_y) + len(data.test_y))
    check_networks(cfg, data.num_classes, data.image_size)
    # An image folder holding CIFAR-10's classes (like the shared JPEG copy) is CIFAR-10 for the
    # purpose of choosing the class order and poster-size rule.
    kind = "cifar10" if tuple(data.class_names) == CIFAR10_CLASSES else cfg.data.name
    return geom, resolve_class_order(cfg.poster.class_order, kind, geom.rows, geom.cols, data.num_classes)


def fit_zca(cfg: RunConfig, data: ImageData, host: Host) -> tuple[torch.Tensor, str]:
    """The ZCA matrix of `data` and its cache key, fitted once and then read from the cache."""
    matrix, _, key = load_or_fit_zca(data.train_x, data.fingerprint, cfg.data.zca_reg, cache_dir(cfg, host))
    return matrix, key


def prepare(cfg: RunConfig, host: Host) -> Prepared:
    """Load and whiten the data, derive the geometry, class order and labels; no distillation."""
    device = select_device(cfg.device)
    use_precision(cfg.precision)
    check_compile(cfg, device)
    data = load_data(cfg, host)
    geom, order = plan_poster(cfg, data, device)
    train_x, test_x, key, matrix = data.train_x, data.test_x, "", None
    if cfg.data.zca:
        matrix, key = fit_zca(cfg, data, host)
        train_x, test_x = apply_zca(train_x, matrix), apply_zca(test_x, matrix)
    labels, shape = None, None
    if cfg.poster.labels == "fixed":
        labels = fixed_labels(geom, order, cfg.poster.fixed_label_mode).to(device)
    else:
        shape = learned_label_shape(geom.height, geom.width, data.num_classes)
    return Prepared(cfg, device, data, train_x.to(device), data.train_y.to(device), test_x.to(device),
                    data.test_y.to(device), geom, order, labels, shape, key, matrix)
