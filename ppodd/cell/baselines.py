"""Reference posters scored under a config's evaluation protocol (§9), to put results in context.

* `initial`: the untrained poster a run starts from (§3), what distillation has to beat.
* `real`: a poster whose class tiles are random real training images of the tile's class, placed
  by the class order and fade-blended like the initial tiles, so the fixed labels fit them.
* a run file: its final live poster, evaluated again (e.g. with more nets or steps).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppodd.cell.prepare import Prepared
from ppodd.cell.stages import Evaluator, fresh_state
from ppodd.errors import ConfigError
from ppodd.method.poster import PosterGeometry, blend_strip
from ppodd.method.seeding import generator
from ppodd.storage.reader import read_run
from ppodd.storage.record import EvalResult

KINDS = ("initial", "real")


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


def evaluate_reference(prep: Prepared, what: str, progress) -> EvalResult:
    """The evaluation of a reference poster (`initial`, `real` or a run file) on its own."""
    cfg = prep.cfg
    if prep.fixed_labels is None:
        raise ConfigError("poster.labels: reference posters need fixed labels, got 'learned'")
    state = fresh_state(prep)
    if what == "initial":
        poster = state.live
    elif what == "real":
        poster = real_tile_poster(prep.geom, prep.order, prep.train_x, prep.train_y,
                                  generator(cfg.seed, "baseline", "real"))
    else:
        poster = read_run(Path(what)).stages[-1].poster.to(prep.device)
    return Evaluator(prep, state, progress).evaluate(poster[None], prep.fixed_labels[None], [1.0], [0], "baseline", what)
