"""The data sets ppodd reads, by name, each from its own loader."""

from __future__ import annotations

from pathlib import Path

from ppodd.config import SyntheticConfig
from ppodd.datasets import cub, tinyimagenet
from ppodd.datasets.cifar import load_cifar
from ppodd.datasets.images import ImageData
from ppodd.datasets.imagefolder import load_imagefolder
from ppodd.datasets.synthetic import make_synthetic
from ppodd.errors import ConfigError

DATASET_NAMES = ("cifar10", "cifar100", "cub200", "imagefolder", "synthetic", "tinyimagenet")
# The folder loaders, which decode image files (cached) and resize them when asked.
_FOLDER_LOADERS = {"imagefolder": load_imagefolder, "tinyimagenet": tinyimagenet.load_tinyimagenet,
                   "cub200": cub.load_cub200}
# Data sets whose readable class names can be read without decoding an image.
_CLASS_NAMES = {"tinyimagenet": tinyimagenet.read_class_names, "cub200": cub.read_class_names}


def load_dataset(
    name: str,
    root: str | Path,
    *,
    download: bool = False,
    cache_dir: Path | None = None,
    synthetic: SyntheticConfig | None = None,
    image_size: int = 0,
    resize: str = "squash",
) -> ImageData:
    """The real train and test images of data set `name` as float32 in [0, 1] (§1).

    `name` is one of `DATASET_NAMES`. `root` is ignored for "synthetic". The folder loaders
    (imagefolder, tinyimagenet, cub200) keep decoded images in `cache_dir` between runs and resize
    them to `image_size` × `image_size` by `resize` when image_size > 0 (cub200: 32 when 0).
    Raises `DataError` for a missing or malformed data set and `ConfigError` for an unknown name.
    """
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, Path(root), download)
    if name in _FOLDER_LOADERS:
        return _FOLDER_LOADERS[name](Path(root), cache_dir, image_size, resize)
    if name == "synthetic":
        return make_synthetic(synthetic if synthetic is not None else SyntheticConfig())
    raise ConfigError(f"data.name: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")


def read_class_names(name: str, root: str | Path) -> list[str]:
    """The class names of data set `name` at `root` in label order, read without decoding images."""
    if name not in _CLASS_NAMES:
        raise ConfigError(f"class names without loading: only {', '.join(_CLASS_NAMES)}, not {name!r}")
    return _CLASS_NAMES[name](Path(root))
