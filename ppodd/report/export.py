"""`ppodd export`: a poster of a run (any stage, or the final pool) or a poster file, written in the
formats other tools read.

* `pt`: the reference codes' layout, a float32 (1, 3, H, W) tensor in the model's input space;
  `ppodd evaluate FILE.pt` reads it back unchanged.
* `npz`: the poster, its patch set (N, 3, a, a) and their soft labels (N, K), with class names.
* `png`: the poster mapped back through the inverse ZCA for viewing, one pixel per poster pixel.
* `imagefolder`: every patch as a PNG in `<class>/` (class = its label's argmax) and
  `labels.json` with every patch's soft label.

The inverse ZCA cannot undo the per-image centring and scaling that preceded whitening (§1), so
`png` and `imagefolder` are for viewing and for evaluators of pixel images; `pt` and `npz` are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppodd.cell.host import Host
from ppodd.errors import ConfigError
from ppodd.method.poster import PosterGeometry, extract_patches
from ppodd.report.plots import display_image, unwhiten
from ppodd.storage.poster_files import write_image_folder, write_patch_set, write_png, write_poster_pt

FORMATS = ("pt", "npz", "png", "imagefolder")


@dataclass(frozen=True)
class Exported:
    """A poster ready to write: its tensor, patch labels, geometry, class names and inverse ZCA."""

    name: str
    poster: torch.Tensor              # (3, H, W), the model's input space
    labels: torch.Tensor              # (N, K)
    geom: PosterGeometry
    class_names: list[str]
    matrix_inv: np.ndarray | None     # (D, D) float64; None without ZCA


def run_posters(path: Path, stage: str, host: Host, zca: Path | None, warn) -> list[Exported]:
    """The posters of a run file that `--stage` names: `live` (the final live poster, the default),
    a stage number t (its snapshot S_t), or `pool` (every member of the final pool)."""
    from ppodd.report.plots import inverse_zca
    from ppodd.storage.reader import read_run

    record = read_run(Path(path))
    g = record.geometry
    geom = PosterGeometry(int(g["height"]), int(g["width"]), int(g["tile"]), int(g["rows"]), int(g["cols"]),
                          int(g["n_x"]), int(g["n_y"]), len(record.class_names))
    stages = {s.index: s for s in record.stages}
    last = max(stages)
    if stage == "live":
        chosen = [last]
    elif stage == "pool":
        chosen = [last if m == 0 else m for m, w in zip(record.final_pool.members, record.final_pool.pi) if w > 0]
    elif stage.isdigit() and int(stage) in stages:
        chosen = [int(stage)]
    else:
        raise ConfigError(f"--stage {stage!r}: allowed live, pool or a stage number 1..{last}")
    matrix_inv = inverse_zca(record, host, zca, warn)
    return [Exported(f"stage-{t}", stages[t].poster, stages[t].patch_labels, geom, list(record.class_names),
                     matrix_inv) for t in chosen]


def file_poster(path: Path, cfg, host: Host, labels: Path | None) -> Exported:
    """A poster file under a config: its geometry, labels (fixed, or the `labels` map) and ZCA."""
    from ppodd.cell.baselines import Reference, poster_labels
    from ppodd.cell.poster_input import poster_from_file
    from ppodd.cell.prepare import prepare

    prep = prepare(cfg, host)
    poster = poster_from_file(prep, Path(path)).cpu()
    patch_labels = poster_labels(prep, Reference(str(path), labels)).cpu()
    matrix_inv = None
    if prep.zca_matrix is not None:
        matrix_inv = torch.linalg.inv(prep.zca_matrix.to(torch.float64)).numpy()
    return Exported(Path(path).stem, poster, patch_labels, prep.geom, list(prep.data.class_names), matrix_inv)


def export(posters: list[Exported], fmt: str, out: Path) -> list[Path]:
    """Write each poster in `fmt` at `out` (one poster), or as `out/<name>.<ext>` (several)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: allowed {', '.join(FORMATS)}")
    out = Path(out)
    written = []
    for item in posters:
        target = out if len(posters) == 1 else out / (item.name if fmt == "imagefolder" else f"{item.name}.{fmt}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "pt":
            written.append(write_poster_pt(target, item.poster))
        elif fmt == "npz":
            written.append(write_patch_set(target, item.poster, _patches(item), item.labels, item.class_names))
        elif fmt == "png":
            image = display_image(unwhiten(item.poster.numpy(), _geometry(item.geom), item.matrix_inv))
            written.append(write_png(target, image))
        else:
            written.append(write_image_folder(target, _patch_images(item), item.labels, item.class_names))
    return written


def _patches(item: Exported) -> torch.Tensor:
    n = item.geom.num_patches
    return extract_patches(item.poster[None], torch.zeros(n, dtype=torch.long), torch.arange(n), item.geom)


def _patch_images(item: Exported) -> np.ndarray:
    """(N, a, a, 3) patches in [0, 1]: each mapped back through M⁻¹, one display scale for all."""
    patches = _patches(item).double().numpy()
    if item.matrix_inv is not None:
        flat = patches.reshape(patches.shape[0], -1) @ item.matrix_inv.T
        patches = flat.reshape(patches.shape)
    stacked = display_image(np.concatenate(list(patches), axis=-1))        # (a, N·a, 3)
    a = item.geom.tile
    return stacked.reshape(a, patches.shape[0], a, 3).transpose(1, 0, 2, 3)


def _geometry(geom: PosterGeometry) -> dict:
    return {"tile": geom.tile, "n_x": geom.n_x, "n_y": geom.n_y}
