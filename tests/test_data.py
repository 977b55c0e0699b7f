"""Data loading (docs/method.md §1): synthetic set, image-folder trees and their cache, CIFAR errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ppodd.datasets.decode as decode
from ppodd.config import SyntheticConfig, load_config
from ppodd.datasets.catalog import load_dataset
from ppodd.datasets.images import ImageData, fingerprint_tensors
from ppodd.datasets.synthetic import make_synthetic
from ppodd.errors import ConfigError, DataError

CLASSES = ("cat", "airplane", "dog")  # written unsorted on purpose


def _pixels(seed: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _write_tree(root: Path, per_class: dict[str, int] | None = None, fmt: str = "png", side: int = 8) -> dict:
    """train/<class>/*.<fmt> and test/<class>/*.<fmt> with known pixels; returns path -> array."""
    per_class = per_class or {"train": 3, "test": 2}
    written = {}
    for split, count in per_class.items():
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                arr = _pixels((split == "test") * 1000 + 100 * k + i, side)
                path = folder / f"{i:04d}.{fmt}"
                Image.fromarray(arr).save(path, **({"quality": 95} if fmt == "jpg" else {}))
                written[path] = arr
    return written


# --------------------------------------------------------------------------- synthetic


def test_make_synthetic_default_spec_shapes_range_and_balanced_labels():
    d = load_dataset("synthetic", "unused")
    assert d.train_x.shape == (5000, 3, 32, 32) and d.test_x.shape == (1000, 3, 32, 32)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert 0.0 <= d.train_x.min() and d.train_x.max() <= 1.0
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 500))
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 100))
    assert d.num_classes == 10 and d.image_size == 32 and d.name == "synthetic"


def test_make_synthetic_same_seed_identical_other_seed_differs():
    spec = SyntheticConfig(num_classes=3, image_size=8, train_per_class=5, test_per_class=2, seed=4)
    a, b = make_synthetic(spec), make_synthetic(spec)
    c = make_synthetic(SyntheticConfig(3, 8, 5, 2, seed=5))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not torch.equal(a.train_x, c.train_x)


def test_make_synthetic_nearest_centroid_well_above_chance_not_perfect():
    d = make_synthetic(SyntheticConfig(num_classes=4, image_size=16, train_per_class=60, test_per_class=40))
    centroids = torch.stack([d.train_x[d.train_y == k].mean(0) for k in range(4)]).flatten(1)
    acc = (torch.cdist(d.test_x.flatten(1), centroids).argmin(1) == d.test_y).float().mean().item()
    assert 0.45 < acc < 0.95  # chance is 0.25


def test_synthetic_zero_classes_refused_by_the_config():
    with pytest.raises(ConfigError, match="data.synthetic.num_classes: must be >= 2"):
        load_config(None, ["data.synthetic.num_classes=0"])


def test_load_dataset_unknown_name_lists_allowed_names():
    with pytest.raises(ConfigError, match="cifar10, cifar100, cub200, imagefolder, synthetic, tinyimagenet"):
        load_dataset("mnist", "data")


def test_load_dataset_cifar10_missing_raises_data_error_naming_root_and_download(tmp_path: Path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "nowhere")
    msg = str(err.value)
    assert "data.root" in msg and str(tmp_path / "nowhere") in msg and "data.download=true" in msg


def test_fingerprint_tensors_changes_with_values_and_dtype():
    t = torch.arange(6)
    assert fingerprint_tensors([t]) == fingerprint_tensors([t.clone()])
    assert fingerprint_tensors([t]) != fingerprint_tensors([t + 1])
    assert fingerprint_tensors([t]) != fingerprint_tensors([t.to(torch.int32)])
    assert fingerprint_tensors([t]) != fingerprint_tensors([t], extra=("x",))


# --------------------------------------------------------------------------- image folders


def test_load_imagefolder_png_tree_exact_pixels_sorted_classes(tmp_path: Path):
    written = _write_tree(tmp_path)
    d = load_dataset("imagefolder", tmp_path)
    assert isinstance(d, ImageData)
    assert d.class_names == ("airplane", "cat", "dog")
    assert d.train_x.shape == (9, 3, 8, 8) and d.test_x.shape == (6, 3, 8, 8)
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first_cat = torch.from_numpy(written[tmp_path / "train" / "cat" / "0000.png"]).permute(2, 0, 1)
    torch.testing.assert_close(d.train_x[3], first_cat.float() / 255, rtol=0, atol=0)


def test_load_imagefolder_jpeg_matches_pil_decoding(tmp_path: Path):
    _write_tree(tmp_path, fmt="jpg")
    d = load_dataset("imagefolder", tmp_path)
    path = tmp_path / "test" / "dog" / "0001.jpg"
    pil = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    torch.testing.assert_close(d.test_x[5], pil.float() / 255, rtol=0, atol=0)


def test_load_imagefolder_parent_with_one_tree_is_accepted(tmp_path: Path):
    _write_tree(tmp_path / "cifar10")
    (tmp_path / "notes").mkdir()
    direct = load_dataset("imagefolder", tmp_path / "cifar10")
    parent = load_dataset("imagefolder", tmp_path)
    assert parent.fingerprint == direct.fingerprint
    assert torch.equal(parent.train_x, direct.train_x)


def test_load_imagefolder_fingerprint_follows_contents_not_location(tmp_path: Path):
    _write_tree(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    original = load_dataset("imagefolder", tmp_path / "a").fingerprint
    assert load_dataset("imagefolder", tmp_path / "b").fingerprint == original
    Image.fromarray(_pixels(999)).save(tmp_path / "b" / "train" / "dog" / "0000.png")
    assert load_dataset("imagefolder", tmp_path / "b").fingerprint != original


def test_load_imagefolder_missing_root_raises_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="data.root: folder .*missing"):
        load_dataset("imagefolder", tmp_path / "missing")


def test_load_imagefolder_no_tree_raises_data_error(tmp_path: Path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="must hold train/<class>"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_test_class_missing_raises_data_error_naming_it(tmp_path: Path):
    _write_tree(tmp_path)
    shutil.rmtree(tmp_path / "test" / "cat")
    with pytest.raises(DataError, match=r"missing from test: \['cat'\]"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_empty_class_folder_raises_data_error_naming_it(tmp_path: Path):
    _write_tree(tmp_path)
    for f in (tmp_path / "train" / "dog").iterdir():
        f.unlink()
    (tmp_path / "train" / "dog" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'train' / 'dog'} holds no images"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_odd_size_raises_data_error_naming_file(tmp_path: Path):
    _write_tree(tmp_path)
    odd = tmp_path / "test" / "cat" / "0001.png"
    Image.fromarray(_pixels(1, side=10)).save(odd)
    with pytest.raises(DataError, match=f"image {odd} is 10x10, expected 8x8"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_non_square_raises_data_error(tmp_path: Path):
    _write_tree(tmp_path)
    first = tmp_path / "train" / "airplane" / "0000.png"
    Image.fromarray(np.zeros((8, 6, 3), dtype=np.uint8)).save(first)
    with pytest.raises(DataError, match="is 6x8, not square"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_undecodable_file_raises_data_error_naming_it(tmp_path: Path):
    _write_tree(tmp_path, fmt="jpg")
    broken = tmp_path / "train" / "cat" / "0002.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)
    with pytest.raises(DataError, match=f"cannot decode image {broken}"):
        load_dataset("imagefolder", tmp_path)


def test_load_imagefolder_cache_hit_skips_decoding(tmp_path: Path, monkeypatch):
    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].name.startswith("imagefolder-") and files[0].suffix == ".pt"

    def no_decode(paths, size=0, resize="squash"):
        raise AssertionError("cache hit must not decode")

    monkeypatch.setattr(decode, "decode_images", no_decode)
    second = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    assert second.fingerprint == first.fingerprint and second.class_names == first.class_names
    assert torch.equal(second.train_x, first.train_x) and torch.equal(second.test_y, first.test_y)


def test_load_imagefolder_changed_file_misses_cache(tmp_path: Path):
    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    changed = tmp_path / "tree" / "train" / "cat" / "0000.png"
    Image.fromarray(_pixels(12345)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse-timestamp file systems
    second = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    assert second.fingerprint != first.fingerprint and len(list(cache.iterdir())) == 2


def test_load_imagefolder_corrupt_cache_is_rebuilt(tmp_path: Path):
    _write_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    (cache_file,) = cache.iterdir()
    cache_file.write_bytes(b"truncated")
    second = load_dataset("imagefolder", tmp_path / "tree", cache_dir=cache)
    assert torch.equal(second.train_x, first.train_x)
    assert torch.load(cache_file, weights_only=True)["fingerprint"] == first.fingerprint
