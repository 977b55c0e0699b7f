"""Posters in and out: poster files scored by `ppodd evaluate`, exports, equal-budget baselines."""

import json
import pickle

import numpy as np
import pytest
import torch
from helpers import cli, set_args
from PIL import Image

from ppodd.cell.host import Host
from ppodd.cell.poster_input import random_real_strip, whiten_poster
from ppodd.cell.prepare import prepare
from ppodd.config import load_config
from ppodd.datasets.zca import apply_zca, fit_zca
from ppodd.method.poster import PosterGeometry
from ppodd.storage.poster_files import read_poster_file
from ppodd.storage.reader import read_run

DEMO = "configs/demo.yaml"


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A finished tiny demo run and the overrides that make its config."""
    from conftest import TINY

    tmp = tmp_path_factory.mktemp("posters")
    overrides = TINY + [f"data.cache_dir={tmp / 'cache'}"]
    result = cli("run", "--config", DEMO, *set_args(overrides), "--out", tmp / "out")
    assert result.exit_code == 0, result.output
    return tmp, overrides, next((tmp / "out").glob("*.h5"))


def _evaluate(poster, overrides, *extra):
    return cli("evaluate", poster, "--config", DEMO, *set_args(overrides), *extra)


def test_export_pt_is_the_reference_layout_and_reads_back_unchanged(run_file, tmp_path):
    _, overrides, path = run_file
    result = cli("export", path, "--format", "pt", "--out", tmp_path / "p.pt")
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "p.pt", weights_only=True)
    live = read_run(path).stages[-1].poster
    assert saved.shape == (1, *live.shape) and saved.dtype == torch.float32 and torch.equal(saved[0], live)
    poster, pixel_space = read_poster_file(tmp_path / "p.pt")
    assert not pixel_space and torch.equal(poster, live)
    scored = _evaluate(tmp_path / "p.pt", overrides, "--json", tmp_path / "p.json")
    assert scored.exit_code == 0, scored.output
    row = json.loads((tmp_path / "p.json").read_text())
    assert row["checkpoints"] == [2, 4] and len(row["per_net"]) == 2 and row["pixels"] == live.shape[1] * live.shape[2]


def test_export_npz_holds_poster_patches_and_labels_and_reads_back(run_file, tmp_path):
    _, _, path = run_file
    assert cli("export", path, "--format", "npz", "--out", tmp_path / "p.npz").exit_code == 0
    last = read_run(path).stages[-1]
    with np.load(tmp_path / "p.npz") as npz:
        assert np.array_equal(npz["poster"], last.poster.numpy())
        assert npz["patches"].shape[1:] == (3, 8, 8) and npz["patches"].shape[0] == last.patch_labels.shape[0]
        assert np.array_equal(npz["labels"], last.patch_labels.numpy())
        assert list(npz["class_names"]) == read_run(path).class_names
    assert torch.equal(read_poster_file(tmp_path / "p.npz")[0], last.poster)


def test_export_png_and_imagefolder_then_png_scores_after_whitening(run_file, tmp_path):
    _, overrides, path = run_file
    last = read_run(path).stages[-1]
    assert cli("export", path, "--format", "png", "--out", tmp_path / "p.png").exit_code == 0
    with Image.open(tmp_path / "p.png") as image:
        assert image.size == (last.poster.shape[2], last.poster.shape[1]) and image.mode == "RGB"
    assert _evaluate(tmp_path / "p.png", overrides).exit_code == 0
    assert cli("export", path, "--format", "imagefolder", "--out", tmp_path / "folder").exit_code == 0
    labels = json.loads((tmp_path / "folder" / "labels.json").read_text())
    assert len(labels["labels"]) == last.patch_labels.shape[0] == len(list((tmp_path / "folder").glob("*/*.png")))


def test_export_every_member_of_the_pool(run_file, tmp_path):
    _, _, path = run_file
    result = cli("export", path, "--format", "pt", "--stage", "pool", "--out", tmp_path / "pool")
    assert result.exit_code == 0, result.output
    record = read_run(path)
    members = [m for m, w in zip(record.final_pool.members, record.final_pool.pi) if w > 0]
    assert len(list((tmp_path / "pool").glob("stage-*.pt"))) == len(members) >= 2


def _bad_files(tmp_path, good_shape):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    files = {
        "wrong-size.pt": lambda p: torch.save(torch.zeros(3, good_shape[1] + 1, good_shape[2]), p),
        "nan.npy": lambda p: np.save(p, np.full(good_shape, np.nan, dtype=np.float32)),
        "garbage.pt": lambda p: p.write_bytes(b"not a tensor file"),
        "pickled.pt": lambda p: p.write_bytes(pickle.dumps(Payload())),
        "two.npz": lambda p: np.savez(p, a=np.zeros(good_shape), b=np.zeros(good_shape)),
        "channels.npy": lambda p: np.save(p, np.zeros((4, *good_shape[1:]), dtype=np.float32)),
        "poster.txt": lambda p: p.write_text("3 x H x W"),
        "missing.pt": lambda p: None,
    }
    for name, write in files.items():
        write(tmp_path / name)
    return list(files)


def test_bad_poster_files_one_line_exit_2(run_file, tmp_path, capsys):
    _, overrides, path = run_file
    shape = tuple(read_run(path).stages[-1].poster.shape)
    expected = {"wrong-size.pt": "the config's poster is", "nan.npy": "NaN", "garbage.pt": "cannot be read",
                "pickled.pt": "cannot be read", "two.npz": "expected one", "channels.npy": "expected a poster of shape",
                "poster.txt": "is not one of", "missing.pt": "no such poster file"}
    for name in _bad_files(tmp_path, shape):
        result = _evaluate(tmp_path / name, overrides)
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected[name] in lines[0], (name, lines)
    assert "pickled code ran" not in capsys.readouterr().out


def test_labels_only_with_learned_labels(run_file, tmp_path):
    _, overrides, path = run_file
    assert cli("export", path, "--format", "pt", "--out", tmp_path / "p.pt").exit_code == 0
    np.save(tmp_path / "map.npy", np.ones((10, 2, 2), dtype=np.float32))
    result = _evaluate(tmp_path / "p.pt", overrides, "--labels", tmp_path / "map.npy")
    assert result.exit_code == 2 and "uses fixed labels" in result.output


def test_random_real_strip_is_class_balanced_whole_images(tmp_path, tiny_overrides):
    prep = prepare(load_config(DEMO, tiny_overrides), Host(tmp_path / "cache"))
    a = prep.data.image_size
    strip, labels, geom = random_real_strip(prep, 23 * a * a + a, torch.Generator().manual_seed(1))
    assert strip.shape == (3, a, 23 * a) and labels.shape == (1, 23, 10) and geom.num_patches == 23
    counts = labels[0].sum(0)
    assert sorted(counts.tolist()) == [2.0] * 7 + [3.0] * 3       # 23 = 10·2 + 3 extra, at random
    first = strip[:, :, :a]
    matches = (prep.train_x == first).flatten(1).all(1)
    assert matches.any() and int(prep.train_y[matches][0]) == int(labels[0, 0].argmax())


def test_evaluate_random_real_at_a_pixel_budget_or_ipc(run_file, tmp_path):
    _, overrides, _ = run_file
    result = _evaluate("random-real", overrides, "--pixels", 20 * 64 + 63, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "r.json").read_text())
    assert row["poster"] == "random-real" and row["pixels"] == 20 * 64 and row["effective_ipc"] == 2.0
    assert row["budget_pixels"] == 20 * 64 + 63                          # 20 whole 8 x 8 images fit
    assert _evaluate("random-real", overrides, "--ipc", 1).exit_code == 0
    for extra, says in ((["--pixels", 10, "--ipc", 1], "not both"), (["--pixels", 0], ">= 1"),
                        (["--pixels", 10], "less than one")):
        bad = _evaluate("random-real", overrides, *extra)
        assert bad.exit_code == 2 and says in bad.output, (extra, bad.output)
    assert _evaluate("initial", overrides, "--pixels", 100).exit_code == 2


def test_whiten_poster_equals_zca_of_each_patch_when_patches_do_not_overlap():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 4, 4, generator=g)
    matrix, _ = fit_zca(images, 0.1)
    geom = PosterGeometry(height=4, width=12, tile=4, rows=1, cols=3, n_x=3, n_y=1, num_classes=3)
    poster = torch.rand(3, 4, 12, generator=g)
    tiles = poster.reshape(3, 4, 3, 4).permute(2, 0, 1, 3)               # the three 4 x 4 patches
    expected = apply_zca(tiles, matrix).permute(1, 2, 0, 3).reshape(3, 4, 12)
    assert torch.allclose(whiten_poster(poster, matrix, geom), expected, atol=1e-5)
