"""Figures of runs and grids, drawn headless with matplotlib's Agg canvas (no display, no pyplot).

One run (`ppodd plot FILE.h5`): the poster at every stage mapped back through the inverse ZCA
(the paper's Fig. 3), the stage weights π over the stages (Fig. 2), and the evaluation accuracy
at every checkpoint. A grid (`ppodd summarize ... --plots DIR`): accuracy against IPC with error
bars over seeds (Table I as a figure) and accuracy over the checkpoints, per data set.

Figures have fixed pixel sizes (`DPI`, `WIDTH_PX`), so their files can be checked by size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from ppodd.atomic import write_atomic
from ppodd.cell.host import Host
from ppodd.errors import PpoddError
from ppodd.report.summary import by_dataset, group_label, ipc_label

DPI = 100
WIDTH_PX = 1000           # every figure is this wide
POSTER_TITLE_PX = 40      # band above each poster panel for its title
CHART_HEIGHT_PX = 560
CLIP_SIGMA = 4.0          # display range: mean ± 4σ of the poster's values
_LIVE_COLOUR = "0.2"


# --- posters ------------------------------------------------------------------------------------


def patch_grid(length: int, tile: int, count: int) -> list[int]:
    """Patch origins along one axis, as the method places them (§2.1)."""
    from ppodd.method.poster import pos

    return pos(length, tile, count)


def unwhiten(poster: np.ndarray, geometry: dict, matrix_inv: np.ndarray | None) -> np.ndarray:
    """The poster (3, H, W) mapped back through M⁻¹ patch by patch, overlaps averaged (§1 step 6).

    M⁻¹ acts on a × a images, so every patch of the poster (at the n_x × n_y patch origins, which
    cover it) is mapped back on its own and overlapping pixels take the mean. Without a matrix
    (ZCA off, or none to be found) the poster is returned as it is.
    """
    if matrix_inv is None:
        return poster.astype(np.float64)
    a = int(geometry["tile"])
    _, height, width = poster.shape
    total = np.zeros(poster.shape, dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for y in patch_grid(height, a, int(geometry["n_y"])):
        for x in patch_grid(width, a, int(geometry["n_x"])):
            patch = poster[:, y:y + a, x:x + a].reshape(-1).astype(np.float64)  # (3a²,)
            total[:, y:y + a, x:x + a] += (matrix_inv @ patch).reshape(3, a, a)
            count[y:y + a, x:x + a] += 1
    return total / np.maximum(count, 1)


def display_image(poster: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] for display: values clipped at mean ± 4σ, then scaled linearly."""
    mean, std = float(poster.mean()), float(poster.std())
    low, high = mean - CLIP_SIGMA * std, mean + CLIP_SIGMA * std
    if high <= low:
        return np.full(poster.shape[1:] + (3,), 0.5)
    return np.clip((poster - low) / (high - low), 0.0, 1.0).transpose(1, 2, 0)


def _poster_px(height: int, width: int) -> int:
    """Pixel height of one poster panel (without its title band) in a WIDTH_PX wide figure."""
    return round(WIDTH_PX * height / width)


def poster_figure_size(height: int, width: int, panels: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of a figure of `panels` stacked posters of H × W."""
    return WIDTH_PX, panels * (_poster_px(height, width) + POSTER_TITLE_PX)


def _draw_poster(fig: Figure, image: np.ndarray, geometry: dict, class_order: list[list[int]],
                 class_names: Sequence[str], title: str, index: int, panels: int) -> None:
    height, width = image.shape[:2]
    panel = _poster_px(height, width) + POSTER_TITLE_PX
    total = panels * panel
    bottom = (panels - 1 - index) * panel / total
    ax = fig.add_axes((0.0, bottom, 1.0, _poster_px(height, width) / total))
    ax.imshow(image, interpolation="nearest", extent=(0, width, height, 0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    a = int(geometry["tile"])
    xs = cell_edges(width, a, int(geometry["cols"]))
    ys = cell_edges(height, a, int(geometry["rows"]))
    for x in xs[1:-1]:
        ax.axvline(x, color="white", linewidth=0.9, alpha=0.8)
    for y in ys[1:-1]:
        ax.axhline(y, color="white", linewidth=0.9, alpha=0.8)
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    font = max(6.0, min(12.0, 0.09 * a * WIDTH_PX / width))
    for r in range(len(ys) - 1):
        for q in range(len(xs) - 1):
            ax.text((xs[q] + xs[q + 1]) / 2, ys[r] + 0.5, class_names[class_order[r][q]], ha="center",
                    va="top", color="white", fontsize=font, path_effects=outline)
    fig.text(0.5, (bottom * total + _poster_px(height, width) + POSTER_TITLE_PX / 2) / total, title,
             ha="center", va="center", fontsize=12)


def cell_edges(length: int, tile: int, count: int) -> list[float]:
    """Edges of the class grid along one axis: 0, the middle of each overlap of neighbouring
    class tiles (tiles at pos(L, a, count), §2.1), and L. Tiles overlap below 1 IPC, so the grid
    drawn is the partition nearest to them."""
    origins = patch_grid(length, tile, count)
    middles = [(origins[i] + tile + origins[i + 1]) / 2 for i in range(count - 1)]
    return [0.0] + middles + [float(length)]


def poster_figures(posters: list[tuple[str, np.ndarray]], geometry: dict, class_order: list[list[int]],
                   class_names: Sequence[str], out: Path, strip_name: str = "stages.png") -> list[Path]:
    """One PNG per (name, display image) pair, `<name>.png`, plus one strip of all of them."""
    _make_folder(out)
    paths = []
    height, width = posters[0][1].shape[:2]
    for name, image in posters:
        fig = _figure(*poster_figure_size(height, width))
        _draw_poster(fig, image, geometry, class_order, class_names, name.replace("-", " "), 0, 1)
        paths.append(_save(fig, out / f"{name}.png"))
    strip = _figure(*poster_figure_size(height, width, len(posters)))
    for i, (name, image) in enumerate(posters):
        _draw_poster(strip, image, geometry, class_order, class_names, name.replace("-", " "), i, len(posters))
    paths.append(_save(strip, out / strip_name))
    return paths


# --- charts -------------------------------------------------------------------------------------


def pi_figure(pi_per_stage: list[list[float]], final_members: list[int], final_pi: list[float],
              out: Path) -> Path:
    """Stacked bars of π: what each stage trained with (over S_1 … S_{t-1} and the live poster),
    then the final pool's weights. Members are coloured by stage; the live poster is dark."""
    fig = _figure(WIDTH_PX, CHART_HEIGHT_PX)
    ax = fig.add_subplot()
    bars = [(f"stage {t}", list(range(1, t)) + [0], pi) for t, pi in enumerate(pi_per_stage, start=1)]
    bars.append(("final pool", list(final_members), list(final_pi)))
    colours = _stage_colours(max(len(pi_per_stage), max(final_members, default=0)))
    labelled: set[int] = set()
    for x, (_, members, pi) in enumerate(bars):
        bottom = 0.0
        for member, weight in zip(members, pi):
            label = None
            if member not in labelled:
                labelled.add(member)
                label = "live poster" if member == 0 else f"snapshot S{member}"
            ax.bar(x, weight, bottom=bottom, color=_LIVE_COLOUR if member == 0 else colours[member - 1],
                   edgecolor="white", linewidth=0.8, label=label)
            if weight >= 0.06:
                ax.text(x, bottom + weight / 2, f"{weight:.2f}", ha="center", va="center", fontsize=8,
                        color="white")
            bottom += weight
    ax.set_xticks(range(len(bars)), [name for name, _, _ in bars])
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("sampling weight π")
    ax.set_title("Stage weights π: the pool each stage trained with, oldest poster at the bottom")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (labels[i] == "live poster", labels[i]))
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.8, bottom=0.1, top=0.92)
    return _save(fig, out)


def _stage_colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.75 * i / max(1, count - 1)) for i in range(max(1, count))]


def checkpoint_figure(curves: list[tuple[str, list[int], np.ndarray, str]], title: str, out: Path) -> Path:
    """Accuracy over evaluation checkpoints: per curve (label, steps, per-net accuracies (S, nets)
    or (S, 2) mean and std, style), the mean with the std over nets or seeds as error bars."""
    fig = _figure(WIDTH_PX, CHART_HEIGHT_PX)
    ax = fig.add_subplot()
    handles = []
    for label, steps, values, style in curves:
        mean, std = values[:, 0], values[:, 1]
        if style == ":":  # context curves (stage ends): no error bars, so the main ones stay legible
            handles += ax.plot(steps, mean, style, label=label, linewidth=1.2, alpha=0.8)
        else:
            handles.append(ax.errorbar(steps, mean, yerr=np.nan_to_num(std), fmt=style, capsize=3, label=label,
                                       linewidth=1.5))
    ax.set_xticks(sorted({s for _, steps, _, _ in curves for s in steps}))
    ax.set_xlabel("training steps of the evaluation networks")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.72, bottom=0.1, top=0.92)
    return _save(fig, out)


def _mean_std_nets(per_net: np.ndarray) -> np.ndarray:
    """(S, 2): mean and sample std over the nets of (S, nets) accuracies."""
    std = per_net.std(axis=1, ddof=1) if per_net.shape[1] > 1 else np.full(per_net.shape[0], np.nan)
    return np.stack([per_net.mean(axis=1), std], axis=1)


# --- one run ------------------------------------------------------------------------------------


def run_figures(path: Path, out: Path, host: Host, zca: Path | None = None,
                warn: Callable[[str], None] = lambda line: None) -> list[Path]:
    """The figures of one run file in `out`: stage-<t>.png and stages.png (posters), pi.png,
    accuracy.png. `zca` names the ZCA cache file; by default the run's cache is searched and,
    failing that, the ZCA is refitted from the run's data. Posters are drawn whitened (with a
    warning) when neither works."""
    from ppodd.storage.reader import read_run

    record = read_run(Path(path))
    out = Path(out)
    matrix_inv = inverse_zca(record, host, zca, warn)
    geometry, order, names = record.geometry, record.class_order, record.class_names
    posters = [(f"stage-{s.index}", display_image(unwhiten(s.poster.numpy(), geometry, matrix_inv)))
               for s in record.stages]
    paths = poster_figures(posters, geometry, order, names, out)
    paths.append(pi_figure([s.pi_before for s in record.stages], record.final_pool.members,
                           record.final_pool.pi, out / "pi.png"))
    curves = [("final pool", record.final_pool.checkpoints, _mean_std_nets(record.final_pool.per_net.numpy()), "o-"),
              ("final live poster", record.final_live.checkpoints,
               _mean_std_nets(record.final_live.per_net.numpy()), "s--")]
    curves += [(f"end of stage {s.index} (A_{s.index} = {s.stage_accuracy:.1f})", s.accuracy.checkpoints,
                _mean_std_nets(s.accuracy.per_net.numpy()), ":") for s in record.stages]
    config = record.config
    title = (f"{config['method']} {config['data']['name']} ipc {config['poster']['ipc']:g} seed {config['seed']}: "
             "accuracy, mean ± std over nets")
    paths.append(checkpoint_figure(curves, title, out / "accuracy.png"))
    return paths


def inverse_zca(record, host: Host, zca: Path | None, warn: Callable[[str], None]) -> np.ndarray | None:
    """M⁻¹ of the run's ZCA as float64 (D, D), or None (ZCA off, or nowhere to be found)."""
    from ppodd.cell.prepare import cache_dir
    from ppodd.config import build_config
    from ppodd.datasets.zca import read_cached_zca

    key = record.zca_key
    if not key:
        return None
    a = int(record.geometry["tile"])
    d = 3 * a * a
    if zca is not None:
        pair = read_cached_zca(Path(zca), key, d)
        if pair is None:
            raise PpoddError(f"--zca {zca}: does not hold the ZCA fit {key} of this run (D = {d})")
        return pair[1].numpy()
    cfg = build_config(record.config)
    pair = read_cached_zca(cache_dir(cfg, host), key, d)
    if pair is None:
        pair = _refit(cfg, host, key, warn)
    return None if pair is None else pair[1].numpy()


def _refit(cfg, host: Host, key: str, warn: Callable[[str], None]):
    """The ZCA fit of the run's data set, refitted (and cached) when it is the same fit, else None."""
    from ppodd.cell.prepare import cache_dir, load_data
    from ppodd.datasets.zca import load_or_fit_zca

    cache = cache_dir(cfg, host)
    try:
        data = load_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, download=False)), host)
    except PpoddError as err:
        warn(f"warning: ZCA fit {key} is not in {cache} and the data to refit it are not "
             f"here ({err}); drawing the whitened posters (use --zca FILE)")
        return None
    matrix, matrix_inv, found = load_or_fit_zca(data.train_x, data.fingerprint, cfg.data.zca_reg, cache)
    if found != key:
        warn(f"warning: the data at {cfg.data.root} give ZCA fit {found}, not the run's {key}; drawing the "
             "whitened posters (use --zca FILE)")
        return None
    return matrix.cpu(), matrix_inv.cpu()


# --- a grid -------------------------------------------------------------------------------------


def grid_figures(summary: dict, out: Path) -> list[Path]:
    """Per data set: accuracy-vs-ipc-<dataset>.png (mean ± std over seeds against IPC, every
    method and setting, pool solid and live dashed) and checkpoints-<dataset>.png."""
    out = Path(out)
    _make_folder(out)
    paths = []
    for dataset, groups in by_dataset(summary["groups"]).items():
        paths.append(ipc_figure(dataset, groups, out / f"accuracy-vs-ipc-{_safe(dataset)}.png"))
        paths.append(grid_checkpoint_figure(dataset, groups, out / f"checkpoints-{_safe(dataset)}.png"))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def ipc_figure(dataset: str, groups: list[dict], out: Path) -> Path:
    """Final accuracy against nominal IPC, mean ± std over seeds (Table I as a figure)."""
    fig = _figure(WIDTH_PX, CHART_HEIGHT_PX)
    ax = fig.add_subplot()
    rows: dict[str, list[dict]] = {}
    for g in groups:
        if g["ipc"] is not None and g["n"]:
            rows.setdefault(group_label(g), []).append(g)
    for i, (label, members) in enumerate(rows.items()):
        members = sorted(members, key=lambda g: g["ipc"])
        colour = f"C{i % 10}"
        scores = ("live",) if members[0]["method"] == "podd" else ("pool", "live")
        for score in scores:
            ipcs = [g["ipc"] for g in members]
            means = [g[score]["mean"] for g in members]
            stds = [g[score]["std"] if g[score]["std"] is not None else 0.0 for g in members]
            name = f"{label} ({'live = pool' if members[0]['method'] == 'podd' else score})"
            ax.errorbar(ipcs, means, yerr=stds, fmt="o-" if score == "pool" else "s--", color=colour,
                        capsize=4, label=name)
    ax.set_xticks(sorted({g["ipc"] for members in rows.values() for g in members}))
    ax.set_xlabel("nominal IPC (pixel budget of the live poster)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: final accuracy against IPC, mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.7, bottom=0.1, top=0.92)
    return _save(fig, out)


def grid_checkpoint_figure(dataset: str, groups: list[dict], out: Path) -> Path:
    """Reported (pool) accuracy over the evaluation checkpoints per group, mean ± std over seeds."""
    curves = []
    for i, g in enumerate(g for g in groups if g["n"]):
        at = g["pool"]["at"]
        steps = [int(s) for s in at]
        values = np.array([[at[s]["mean"], np.nan if at[s]["std"] is None else at[s]["std"]] for s in at])
        curves.append((f"{group_label(g)}, ipc {ipc_label(g['ipc'])} (n={g['n']})", steps, values, "o-" if i < 10 else "s--"))
    return checkpoint_figure(curves, f"{dataset}: reported accuracy over checkpoints, mean ± std over seeds", out)


# --- files --------------------------------------------------------------------------------------


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PpoddError(f"cannot create figure folder {folder}: {err.strerror or err}") from None


def _figure(width_px: int, height_px: int) -> Figure:
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def _save(fig: Figure, path: Path) -> Path:
    """Save as PNG under a temporary name, then rename: a figure file is whole or absent."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
