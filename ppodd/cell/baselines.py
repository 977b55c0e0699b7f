"""Any poster scored under a config's evaluation protocol (§9), and the references to compare with.

* `initial`: the untrained poster a run starts from (§3), what distillation has to beat.
* `real`: a poster whose class tiles are random real training images of the tile's class, placed
  by the class order and fade-blended like the initial tiles, so the fixed labels fit them.
* `random-real`: whole random training images, class-balanced, as many as a pixel budget holds
  (the equal-budget baseline); by default the budget of the config's poster.
* a run file (`.h5`): its final live poster, evaluated again (e.g. with more nets or steps).
* a poster file (`.pt`, `.npy`, `.npz`, `.png`, `.jpg`): a poster from another code base or an
  export, checked against the config's geometry (`cell.poster_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ppodd.cell.poster_input import label_map_from_file, poster_from_file, random_real_strip
from ppodd.cell.prepare import Prepared
from ppodd.cell.stages import Evaluator, fresh_state
from ppodd.errors import ConfigError
from ppodd.method.labels import read_patch_labels
from ppodd.method.poster import PosterGeometry, blend_strip
from ppodd.method.seeding import generator
from ppodd.storage.poster_files import is_poster_file
from ppodd.storage.reader import read_run
from ppodd.storage.record import EvalResult

KINDS = ("initial", "real", "random-real")


@dataclass(frozen=True)
class Reference:
    """What to score: a kind of KINDS, a run file or a poster file; a label map file for learned
    labels; the pixel budget of `random-real` (0: the config's poster)."""

    what: str
    labels: Path | None = None
    pixels: int = 0


def real_tile_poster(geom: PosterGeometry, order: list[list[int]], train_x: torch.Tensor,
                     train_y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A (3, H, W) poster of one random training image per class tile, fade-blended (§3 step 3).

    Grid cell (r, c) holds an image of class order[r][c]; images are used as they are in the
    model's input space (whitened when ZCA is on).
    """
    rows = []
    for r in range(geom.rows):
        tiles = []
        for c in range(geom.cols):
            candidates = (train_y == order[r][c]).nonzero().flatten().cpu()
            pick = candidates[torch.randint(len(candidates), (), generator=gen)]
            tiles.append(train_x[pick])
        rows.append(blend_strip(tiles, geom.tile_x, axis=-1))
    return blend_strip(rows, geom.tile_y, axis=-2)


def check_reference(what: str) -> None:
    """ConfigError unless `what` names something `evaluate_reference` scores."""
    if what not in KINDS and not what.endswith(".h5") and not is_poster_file(what):
        raise ConfigError(f"poster: {what!r} is not one of {', '.join(KINDS)}, a .h5 run file or a poster file "
                          "(.pt, .npy, .npz, .png, .jpg)")


def evaluate_reference(prep: Prepared, ref: Reference, progress, arch: str | None = None) -> EvalResult:
    """The evaluation of one poster on its own, under the config's protocol, on `arch` (default
    `eval.model`; another architecture's nets draw their own seeds)."""
    cfg, what = prep.cfg, ref.what
    check_reference(what)
    state = fresh_state(prep)
    engine = Evaluator(prep, state, progress, arch)
    tag = (arch,) if arch and arch != cfg.eval.model else ()
    if what == "random-real":
        pixels = ref.pixels or prep.geom.pixels
        strip, labels, geom = random_real_strip(prep, pixels, generator(cfg.seed, "baseline", "random-real", pixels))
        return engine.evaluate(strip[None], labels, [1.0], [0], "baseline", what, *tag, geom=geom)
    if what == "initial":
        poster = state.live
    elif what == "real":
        poster = real_tile_poster(prep.geom, prep.order, prep.train_x, prep.train_y,
                                  generator(cfg.seed, "baseline", "real"))
    elif what.endswith(".h5"):
        # The run's own patch labels: its fixed labels, or those its learned map gave.
        last = read_run(Path(what)).stages[-1]
        poster, labels = last.poster.to(prep.device), last.patch_labels.to(prep.device)
        return engine.evaluate(poster[None], labels[None], [1.0], [0], "baseline", what, *tag)
    else:
        poster = poster_from_file(prep, Path(what))
    return engine.evaluate(poster[None], poster_labels(prep, ref)[None], [1.0], [0], "baseline", what, *tag)


def evaluate_reference_architectures(prep: Prepared, ref: Reference, progress) -> dict[str, EvalResult]:
    """One poster scored on `eval.model` and then on every other architecture of `eval.models`
    (the cross-architecture result), in that order."""
    archs = dict.fromkeys([prep.cfg.eval.model, *prep.cfg.eval.models])
    return {arch: evaluate_reference(prep, ref, progress, arch) for arch in archs}


def poster_labels(prep: Prepared, ref: Reference) -> torch.Tensor:
    """(N, K) patch labels of a poster under the config: its fixed labels, or those the learned
    label map of `ref.labels` gives."""
    if prep.fixed_labels is not None:
        if ref.labels is not None:
            raise ConfigError(f"--labels {ref.labels}: the config uses fixed labels; drop --labels or set "
                              "poster.labels=learned")
        return prep.fixed_labels
    if ref.labels is None:
        raise ConfigError("--labels: the config uses learned labels (poster.labels=learned); give the poster's "
                          "label map with --labels FILE")
    return read_patch_labels(label_map_from_file(prep, ref.labels), prep.geom, prep.cfg.poster.label_eps)
