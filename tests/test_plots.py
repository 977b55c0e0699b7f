"""Figures: inverse-ZCA posters, π bars, accuracy curves, grid charts; files of the expected size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import cli
from PIL import Image
from test_summary import H, TILE, W, fake_grid, fake_run

from ppodd.cell.host import Host
from ppodd.report import plots
from ppodd.config import load_config
from ppodd.datasets.catalog import load_dataset
from ppodd.errors import PpoddError
from ppodd.report.gather import gather
from ppodd.report.summary import summarize
from ppodd.datasets.zca import load_or_fit_zca

GEOMETRY = {"tile": TILE, "n_x": 8, "n_y": 2, "rows": 2, "cols": 5}
SYNTHETIC = ("data.synthetic.image_size=8", "data.synthetic.train_per_class=20",
             "data.synthetic.test_per_class=10")


def _size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_unwhiten_linear_map_applies_patchwise_and_averages_overlaps():
    poster = np.random.default_rng(0).normal(size=(3, H, W)).astype(np.float32)
    d = 3 * TILE * TILE
    assert np.allclose(plots.unwhiten(poster, GEOMETRY, np.eye(d)), poster, atol=1e-6)
    assert np.allclose(plots.unwhiten(poster, GEOMETRY, 2 * np.eye(d)), 2 * poster, atol=1e-6)
    assert plots.unwhiten(poster, GEOMETRY, None) is not poster  # a float64 copy, unchanged values
    # A map that moves every pixel's value to channel 0 shows where the patches overlap.
    swap = np.zeros((d, d))
    swap[: d // 3, : d // 3] = np.eye(d // 3)
    out = plots.unwhiten(poster, GEOMETRY, swap)
    assert np.allclose(out[0], poster[0], atol=1e-6) and np.allclose(out[1:], 0)


def test_display_image_clips_at_four_sigma_into_unit_range():
    poster = np.zeros((3, 4, 5))
    poster[0, 0, 0] = 1000.0  # an outlier beyond mean + 4σ
    image = plots.display_image(poster)
    assert image.shape == (4, 5, 3) and image.min() >= 0 and image.max() == 1.0
    assert image[0, 0, 0] == 1.0 and 0 < image[1, 1, 1] < 1
    assert (plots.display_image(np.ones((3, 2, 2))) == 0.5).all()


def test_plot_run_file_writes_every_figure_at_its_size(tmp_path):
    path = fake_run(tmp_path)  # ZCA key "": the posters are drawn as stored
    result = cli("plot", str(path), "--out", str(tmp_path / "fig"))
    assert result.exit_code == 0, result.output
    names = [line.rsplit("/", 1)[1] for line in result.stdout.split()]
    assert names == ["stage-1.png", "stage-2.png", "stage-3.png", "stages.png", "pi.png", "accuracy.png"]
    for t in (1, 2, 3):
        assert _size(tmp_path / "fig" / f"stage-{t}.png") == plots.poster_figure_size(H, W)
    assert _size(tmp_path / "fig" / "stages.png") == plots.poster_figure_size(H, W, 3)
    assert plots.poster_figure_size(H, W, 3) == (1000, 3 * (round(1000 * H / W) + 40))
    for name in ("pi.png", "accuracy.png"):
        assert _size(tmp_path / "fig" / name) == (plots.WIDTH_PX, plots.CHART_HEIGHT_PX)
    assert not list((tmp_path / "fig").glob(".*"))  # no temporary files left


def test_plot_refits_missing_zca_from_the_runs_data_then_uses_cache(tmp_path, monkeypatch):
    cfg = load_config("configs/demo.yaml", list(SYNTHETIC))
    data = load_dataset("synthetic", "", synthetic=cfg.data.synthetic)
    _, matrix_inv, key = load_or_fit_zca(data.train_x, data.fingerprint, cfg.data.zca_reg, None)
    cache = tmp_path / "cache"
    path = fake_run(tmp_path, sets=SYNTHETIC + (f"data.cache_dir={cache}",), zca_key=key)
    warnings = []
    plots.run_figures(path, tmp_path / "fig", Host(tmp_path / "host-cache"), warn=warnings.append)
    assert warnings == [] and (cache / f"zca-{key}.pt").is_file()
    used = []
    original = plots.unwhiten

    def spy(poster, geometry, inverse):
        used.append(inverse)
        return original(poster, geometry, inverse)

    monkeypatch.setattr(plots, "unwhiten", spy)
    plots.run_figures(path, tmp_path / "fig2", Host(tmp_path / "host-cache"), zca=cache / f"zca-{key}.pt",
                      warn=warnings.append)
    assert warnings == [] and len(used) == 3 and np.allclose(used[0], matrix_inv.numpy())


def test_plot_zca_file_of_another_fit_refused_and_missing_data_warns(tmp_path):
    _, _, key = load_or_fit_zca(torch.rand(30, 3, TILE, TILE), "other", 0.1, tmp_path / "cache")
    path = fake_run(tmp_path, sets=("data.name=imagefolder", f"data.root={tmp_path / 'nothing'}",
                                    f"data.cache_dir={tmp_path / 'empty'}"), zca_key="0123456789abcdef")
    result = cli("plot", str(path), "--out", str(tmp_path / "fig"),
                 "--zca", str(tmp_path / "cache" / f"zca-{key}.pt"))
    assert result.exit_code == 1 and "does not hold the ZCA fit 0123456789abcdef" in result.stderr
    warnings = []
    paths = plots.run_figures(path, tmp_path / "fig", Host(tmp_path / "host-cache"), warn=warnings.append)
    assert len(warnings) == 1 and "drawing the whitened posters" in warnings[0]
    assert all(p.is_file() for p in paths)


def test_grid_figures_one_pair_per_dataset(tmp_path):
    fake_grid(tmp_path / "runs")
    records, problems = gather([str(tmp_path / "runs")])
    paths = plots.grid_figures(summarize(records), tmp_path / "fig")
    assert [p.name for p in paths] == ["accuracy-vs-ipc-synthetic.png", "checkpoints-synthetic.png"]
    assert problems == [] and all(_size(p) == (plots.WIDTH_PX, plots.CHART_HEIGHT_PX) for p in paths)


def test_run_figures_missing_file_is_a_store_error(tmp_path):
    with pytest.raises(PpoddError, match="no such file"):
        plots.run_figures(tmp_path / "absent.h5", tmp_path / "fig", Host(tmp_path / "host-cache"))


def test_cell_edges_split_tile_overlaps_in_the_middle():
    # 153 x 60 CIFAR-10 poster, a = 32: tile x origins 0, 30, 60, 91, 121; y origins 0, 28 (§2.1).
    assert plots.cell_edges(153, 32, 5) == [0.0, 31.0, 61.0, 91.5, 122.0, 153.0]
    assert plots.cell_edges(60, 32, 2) == [0.0, 30.0, 60.0]
    assert plots.cell_edges(32, 32, 1) == [0.0, 32.0]
