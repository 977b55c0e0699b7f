"""The data sets ppodd reads, by name, each from its own loader."""

from __future__ import annotations

from pathlib import Path

from ppodd.config import SyntheticConfig
from ppodd.datasets.cifar import load_cifar
from ppodd.datasets.images import ImageData
from ppodd.datasets.imagefolder import load_imagefolder
from ppodd.datasets.synthetic import make_synthetic
from ppodd.errors import ConfigError

DATASET_NAMES = ("cifar10", "cifar100", "imagefolder", "synthetic")


def load_dataset(
    name: str,
    root: str | Path,
    *,
    download: bool = False,
    cache_dir: Path | None = None,
    synthetic: SyntheticConfig | None = None,
) -> ImageData:
    """The real train and test images of data set `name` as float32 in [0, 1] (§1).

    `name` is one of `DATASET_NAMES`. `root` is ignored for "synthetic"; `cache_dir` is used only
    by "imagefolder", to keep decoded images between runs. Raises `DataError` for a missing or
    malformed data set and `ConfigError` for an unknown name.
    """
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, Path(root), download)
    if name == "imagefolder":
        return load_imagefolder(Path(root), cache_dir)
    if name == "synthetic":
        return make_synthetic(synthetic if synthetic is not None else SyntheticConfig())
    raise ConfigError(f"data.name: unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")
