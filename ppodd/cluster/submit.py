"""`ppodd submit`: a grid of cells from a job file and options, checked, recorded and run.

The steps, in order: build every cell (`cluster.grid`), skip complete and still-queued ones,
check every remaining cell's poster and fill the caches once per data set, check the results
folder, record the submission in the manifest, then queue a Slurm array or run the cells here.
Everything that can be refused is refused before anything is written or queued.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

import ppodd
from ppodd.atomic import write_json
from ppodd.cell.host import Host
from ppodd.cell.identity import is_complete
from ppodd.cluster import slurm
from ppodd.cluster.container import Container, parse_container
from ppodd.cluster.grid import MAX_CELLS, Axis, Cell, Variant, expand_grid
from ppodd.cluster.jobfile import Experiment
from ppodd.cluster.local import run_debug, run_local
from ppodd.cluster.status import cell_statuses, status_table
from ppodd.cluster.submission import LOG_FOLDER, record_submission
from ppodd.cluster.task import earlier_attempts
from ppodd.config import build_config
from ppodd.errors import ConfigError, PpoddError
from ppodd.storage.folders import check_creatable, check_writable
from ppodd.storage.manifest import MANIFEST, read_manifest

Echo = Callable[..., None]


@dataclass(frozen=True)
class GridSpec:
    """What a grid is made of: a preset, overrides for every cell, the axes, the results folder.

    An empty axis keeps the config's value.
    """

    config: Path | None = None
    sets: list[tuple[str, Any]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    ipcs: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    out: Path = Path("results")
    variants: list[Variant] = field(default_factory=list)

    @classmethod
    def combine(cls, job: Experiment | None, *, config: Path | None, sets: list[tuple[str, Any]],
                methods: list[str] | None, ipcs: list[Any] | None, seeds: list[int] | None,
                axes: list[Axis], out: Path | None) -> GridSpec:
        """A job file's grid with the command line's options on top (None: not given)."""
        if job is None:
            job = Experiment(Path(), "", None, [], [], [], [], [], None)
        merged = dict(job.grid)
        merged.update(axes)
        return cls(config=config or job.config, sets=job.sets + sets,
                   methods=job.methods if methods is None else methods,
                   ipcs=job.ipcs if ipcs is None else ipcs,
                   seeds=job.seeds if seeds is None else seeds,
                   axes=list(merged.items()), out=out or job.out or Path("results"), variants=job.variants)


@dataclass(frozen=True)
class RunOptions:
    """How `submit` runs the cells: where, how many at once here, and what to redo or wait for."""

    cluster: str = "auto"
    workers: int = 1
    force: bool = False
    dry_run: bool = False
    yes: bool = False
    wait: int = 0


def submit_grid(spec: GridSpec, run: RunOptions, opts: slurm.SlurmOptions, image: Path | None,
                binds: list[str], host: Host, argv: list[str], echo: Echo) -> None:
    """Submit or run the grid; PpoddError when a cell run here, or waited for, did not finish."""
    if run.cluster not in slurm.CLUSTERS:
        raise ConfigError(f"--cluster {run.cluster!r}: allowed {', '.join(slurm.CLUSTERS)}")
    if run.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {run.workers}")
    slurm.check_slurm_options(opts)
    out = spec.out
    check_creatable(out)
    cells = expand_grid(spec.config, spec.sets, spec.methods, spec.ipcs, spec.seeds, spec.axes, out,
                        max_cells=None if run.yes else MAX_CELLS, variants=spec.variants)
    chosen = slurm.resolve_cluster(run.cluster)
    if chosen == "slurm":
        slurm.check_slurm_out(out)
    container = _container(image, binds, out, run.cluster, chosen)
    todo, skipped = split_done(cells, out, run.force, chosen)
    if run.dry_run:
        echo(plan_text(todo, skipped, out, chosen, opts, container))
        return
    # Write access and space for every result, checked before anything is written or queued.
    check_writable(out, prepare_once(todo, host))
    _clear_for_rerun(todo, run.force)
    if chosen == "slurm":
        tasks = slurm.submit_slurm(todo, out, opts, container)
    else:
        tasks = [{"array_index": i, "job_id": None, "cell": c.name} for i, c in enumerate(todo)]
    record_submission(out, cells, chosen, slurm.executor_parameters(opts) if chosen == "slurm" else None,
                      tasks, [c.name for c in skipped], argv, container,
                      accounting=slurm.accounting_enabled() if chosen == "slurm" else None)
    echo(f"{len(todo)} cell(s) to run on {chosen}, {len(skipped)} skipped; manifest {out / MANIFEST}")
    for task, cell in zip(tasks, todo):
        echo(f"  {task['array_index']:4d}  {task['job_id'] or '-':12}  {cell.path}")
    if chosen == "local":
        run_local(todo, run.workers, echo)
    elif chosen == "debug":
        run_debug(todo, out)
    elif run.wait > 0:
        _wait_for(out, {c.name for c in todo}, run.wait, echo)
    if chosen != "slurm" or run.wait > 0:
        rows = cell_statuses(out, slurm.grid_jobs(read_manifest(out)))
        echo(status_table(rows, dt.datetime.now(dt.timezone.utc)))
        if any(r.state != "done" for r in rows if r.cell in {c.name for c in todo}):
            raise PpoddError(f"not every cell is done; see `ppodd status {out}` and {out / LOG_FOLDER}")


def split_done(cells: list[Cell], out: Path, force: bool, cluster: str) -> tuple[list[Cell], list[Cell]]:
    """(cells to run, cells skipped): complete ones, and on Slurm those still queued from before."""
    queued: set[str] = set()
    if cluster == "slurm" and (out / MANIFEST).exists():
        queue = slurm.grid_jobs(read_manifest(out)) or {}
        queued = {r.cell for r in cell_statuses(out, queue) if r.state in ("pending", "running", "requeued")}
    todo, skipped = [], []
    for cell in cells:
        # is_complete raises for a newer ppodd's result, which is never rerun over.
        if cell.name in queued or (not force and is_complete(cell.path)):
            skipped.append(cell)
        else:
            todo.append(cell)
    return todo, skipped


def _container(image: Path | None, binds: list[str], out: Path, cluster: str, chosen: str) -> Container | None:
    """The validated --container and --bind values (None without --container)."""
    if image is None:
        if binds:
            raise ConfigError("--bind: only with --container IMAGE.sif")
        return None
    parsed = parse_container(image, binds, out)
    if chosen != "slurm":
        why = "no Slurm controller answers" if cluster == "auto" else f"--cluster {chosen} runs here"
        raise ConfigError(f"--container wraps Slurm array tasks, but {why}; to run locally inside the image, "
                          f"use `apptainer run --nv {image} submit --cluster local ...`")
    return parsed


def plan_text(todo: list[Cell], skipped: list[Cell], out: Path, cluster: str, opts: slurm.SlurmOptions,
              container: Container | None = None) -> str:
    """What `--dry-run` prints: the sbatch script an array would get, and the array map."""
    lines = [f"# {len(todo)} cell(s) to run, {len(skipped)} skipped (complete or queued); cluster {cluster}"]
    if cluster == "slurm" and todo:
        where = f"the image {container.image}" if container else "the nodes"
        lines.append(f"# ppodd {ppodd.__version__} and submitit {submitit.__version__} under "
                     f"{sys.executable}; {where} must have the same"
                     + (" (each task checks at start)" if container else ""))
        size = slurm.max_array_size() if slurm.slurm_reachable() else 1001
        lines.append(f"# sbatch script (arrays of at most {size} tasks)")
        lines.append(slurm.sbatch_script(out, opts, min(len(todo), size), container))
    lines.append("# array map")
    lines.append("index  file  overrides")
    lines += [f"{i:5d}  {c.path.name}  {' '.join(c.overrides)}" for i, c in enumerate(todo)]
    return "\n".join(lines)


def prepare_once(cells: list[Cell], host: Host) -> int:
    """Check every cell's poster and fill the caches (decoded images, ZCA) once per data set,
    before any task; nothing is whitened here.

    Returns the disk space the cells' results and checkpoints need together.
    """
    import torch

    from ppodd.cell.prepare import fit_zca, load_data, plan_poster
    from ppodd.cell.run import result_bytes

    datasets = {}
    need = 0
    for cell in cells:
        cfg = build_config(cell.config)
        key = json.dumps(cell.config["data"], sort_keys=True)
        if key not in datasets:
            datasets[key] = (cfg, load_data(cfg, host))
        # A login node often has no GPU; the checks and caches do not depend on the device.
        geom, _ = plan_poster(cfg, datasets[key][1], torch.device("cpu"))
        need += result_bytes(cfg, geom)
    for cfg, data in datasets.values():
        if cfg.data.zca:
            fit_zca(cfg, data, host)
    return need


def _clear_for_rerun(cells: list[Cell], force: bool) -> None:
    """Forget old failures of the cells about to run, keeping their attempts (what they cost);
    with --force, their results and checkpoints too."""
    for cell in cells:
        attempts = earlier_attempts(cell.files.state)
        if attempts:
            write_json(cell.files.state, {"attempts": attempts})
        else:
            cell.files.state.unlink(missing_ok=True)
        if force:
            cell.path.unlink(missing_ok=True)
            cell.files.checkpoint.unlink(missing_ok=True)


def _wait_for(out: Path, names: set[str], seconds: int, echo: Echo) -> None:
    """Poll the files and one squeue listing every few seconds until the cells end, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = cell_statuses(out, slurm.grid_jobs(read_manifest(out)))
        if all(r.state in ("done", "failed", "cancelled", "incomplete") for r in rows if r.cell in names):
            return
        time.sleep(2)
    echo(f"gave up waiting after {seconds} s; the jobs stay queued", err=True)
