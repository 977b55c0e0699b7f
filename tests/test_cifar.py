"""Checks on the real CIFAR-10 copy; they need ../shared/data and skip without it."""

import subprocess
from pathlib import Path

import pytest

from ppodd.config import load_config
from ppodd.datasets.catalog import load_dataset
from ppodd.cell.prepare import build_geometry

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.xz"
needs_cifar = pytest.mark.skipif(not ARCHIVE.exists(),
                                 reason=f"needs the CIFAR-10 JPEG archive at {ARCHIVE} (not in a fresh clone)")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run(["tar", "-xJf", str(ARCHIVE), "-C", str(root)], check=True)
    return root


@needs_cifar
@pytest.mark.cifar
@pytest.mark.slow
def test_imagefolder_reads_shared_cifar10_split_and_classes(cifar_root, tmp_path):
    data = load_dataset("imagefolder", cifar_root, cache_dir=tmp_path)
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert data.class_names[0] == "airplane" and data.class_names[8] == "ship"
    assert data.train_y.bincount().tolist() == [5000] * 10
    cfg = load_config("configs/cpu.yaml", [f"data.root={cifar_root}"])
    geom = build_geometry(cfg, data.num_classes, data.image_size, cfg.data.name)
    assert (geom.height, geom.width, geom.num_patches) == (60, 153, 96)
