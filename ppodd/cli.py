"""The `ppodd` command line. The only place that turns PpoddError into exit codes.

Bad input exits 2 with one line on stderr that names the value and what is allowed; a run that
fails exits 1 with a short message; neither prints a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import structlog
import typer

import ppodd
from ppodd.atomic import write_text
from ppodd.cluster.slurm import SlurmOptions, format_time
from ppodd.errors import ConfigError, PpoddError

app = typer.Typer(
    help="Progressive Poster Dataset Distillation (P-PoDD) and PoDD: distill, evaluate, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run preset, e.g. configs/demo.yaml")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a key: --set poster.ipc=0.6 (repeatable)")]


def _fail(error: PpoddError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=error.exit_code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ppodd {ppodd.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """ppodd distills image data sets into posters and evaluates them."""


def _stop_on_signals() -> list[int]:
    """A list that SIGTERM or SIGUSR2 (Slurm's warnings before preemption and time-out) fill.

    The run checks it after every outer step, saves its checkpoint and stops; the same command
    then resumes where it stopped.
    """
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, lambda signum, frame: received.append(signum))
    return received


@app.command()
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="results folder")] = Path("results"),
    force: Annotated[bool, typer.Option("--force", help="rerun even if a complete result exists")] = False,
) -> None:
    """Distill and evaluate one cell (data set, method, IPC, seed) into one HDF5 file.

    Rerunning the same command resumes from the cell's checkpoint, or returns at once when its
    result is complete.
    """
    from ppodd.cell.identity import cell_files
    from ppodd.cell.progress import configure_logging
    from ppodd.cell.run import run_cell
    from ppodd.config import load_config

    configure_logging()
    log = structlog.get_logger("ppodd")
    stop = _stop_on_signals()
    try:
        cfg = load_config(config, set_ or [])
        path = run_cell(cfg, cell_files(cfg, out), _host(), log, force=force, should_stop=lambda: bool(stop))
    except PpoddError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume from the last checkpoint", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(str(path))


@app.command()
def evaluate(
    poster: Annotated[str, typer.Argument(help="initial | real | random-real | a run file (.h5) | a poster file "
                                               "(.pt, .npy, .npz in the model's input space; .png, .jpg in pixels)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="learned label map (K, h_l, w_l) of a "
                                                                      "poster file, as .pt, .npy or .npz")] = None,
    pixels: Annotated[Optional[int], typer.Option(help="random-real: pixel budget (default: the config's "
                                                       "poster)")] = None,
    ipc: Annotated[Optional[float], typer.Option("--ipc", help="random-real: budget in images per class "
                                                              "instead of --pixels")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Score any poster under a config's evaluation protocol (docs/method.md §9).

    `initial` is the untrained poster a run starts from; `real` puts one random training image
    of each class on its tile; `random-real` trains on whole random training images, as many as
    the pixel budget holds. A run file is scored with its own stored config, plus --set. A poster
    file must have the config's poster size.
    """
    import json

    from ppodd.cell.baselines import Reference, check_reference, evaluate_reference_architectures
    from ppodd.cell.poster_input import pixels_for_ipc
    from ppodd.cell.prepare import prepare
    from ppodd.cell.progress import Progress, configure_logging
    from ppodd.config import apply_overrides, build_config, load_config, parse_override
    from ppodd.storage.reader import read_run

    configure_logging()
    log = structlog.get_logger("ppodd")
    try:
        check_reference(poster)
        if (pixels is not None or ipc is not None) and poster != "random-real":
            raise ConfigError("--pixels and --ipc: only with random-real")
        if pixels is not None and ipc is not None:
            raise ConfigError("--pixels and --ipc: give one budget, not both")
        if pixels is not None and pixels < 1:
            raise ConfigError(f"--pixels: must be >= 1, got {pixels}")
        if ipc is not None and not ipc > 0:
            raise ConfigError(f"--ipc: must be > 0, got {ipc}")
        if poster.endswith(".h5"):
            overrides = [parse_override(text) for text in set_ or []]
            cfg = build_config(apply_overrides(read_run(Path(poster)).config, overrides))
        else:
            cfg = load_config(config, set_ or [])
        prep = prepare(cfg, _host())
        budget = pixels_for_ipc(prep, ipc) if ipc is not None else (pixels or 0)
        results = evaluate_reference_architectures(prep, Reference(poster, labels, budget),
                                                   Progress(0, 0, log, bar=False))
    except PpoddError as e:
        _fail(e)
    scores = {arch: {"mean": [round(float(v), 4) for v in r.mean], "per_net": r.per_net.tolist()}
              for arch, r in results.items()}
    result = results[cfg.eval.model]
    row = {"poster": poster, "checkpoints": result.checkpoints, **scores[cfg.eval.model],
           "pixels": result.pixels, "effective_ipc": result.effective_ipc,
           "seconds": round(sum(r.seconds for r in results.values()), 1),
           "dataset": cfg.data.name, "ipc": cfg.poster.ipc, "seed": cfg.seed, "model": cfg.eval.model}
    if len(scores) > 1:
        row["architectures"] = scores
    if poster == "random-real":
        row["budget_pixels"] = budget or prep.geom.pixels
    if json_out is not None:
        try:
            write_text(json_out, json.dumps(row, indent=2) + "\n")
        except PpoddError as e:
            _fail(e)
    for arch, score in scores.items():
        steps = " ".join(f"{c}:{m:.2f}" for c, m in zip(result.checkpoints, score["mean"]))
        typer.echo(f"{arch}: {steps}" if len(scores) > 1 else steps)


SLURM = "Slurm"


def _slurm_opt(help_: str = "", *names: str):
    return typer.Option(*names, rich_help_panel=SLURM, help=help_)


# One home for the Slurm defaults: SlurmOptions; the options below show them.
_SLURM_DEFAULTS = SlurmOptions()


@app.command()
def submit(
    job: Annotated[Optional[Path], typer.Argument(help="a named grid, e.g. jobs/table1-cifar10.yaml; "
                                                      "options given here override its entries")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: Annotated[Optional[str], typer.Option(help="ppodd,podd (default: the config's)")] = None,
    ipc: Annotated[Optional[str], typer.Option(help="IPC list, e.g. 0.6,0.9 (default: the config's)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="0-4, 0,2,5 or 0-4,9 (default: the config's)")] = None,
    grid: Annotated[Optional[list[str]],
                    typer.Option(help="KEY=V1,V2 axis, e.g. ppodd.boost=0,1.5 (repeatable)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="results folder (shared with the nodes); "
                                                "default: the job file's out, else results")] = None,
    cluster: Annotated[str, typer.Option(help="auto | slurm | local | debug; auto: Slurm when a controller answers")]
    = "auto",
    workers: Annotated[int, typer.Option(help="local: cells run at a time")] = 1,
    force: Annotated[bool, typer.Option("--force", help="rerun every cell, complete or not")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the sbatch script and array map; "
                                                           "write and submit nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="submit a grid of more than 500 cells "
                                                    "(refused without it, as a likely slip)")] = False,
    wait: Annotated[int, typer.Option(help="Slurm: wait up to this many seconds for the cells to end "
                                           "(0: return once queued)")] = 0,
    partition: Annotated[str, _slurm_opt()] = _SLURM_DEFAULTS.partition,
    account: Annotated[str, _slurm_opt()] = _SLURM_DEFAULTS.account,
    qos: Annotated[str, _slurm_opt()] = _SLURM_DEFAULTS.qos,
    time_limit: Annotated[str, _slurm_opt("per task: minutes, H:MM:SS or D-HH:MM:SS", "--time")] = format_time(
        _SLURM_DEFAULTS.time_min),
    cpus_per_task: Annotated[int, _slurm_opt("0: the site's default")] = _SLURM_DEFAULTS.cpus_per_task,
    mem: Annotated[str, _slurm_opt("e.g. 32G; empty: the site's default")] = _SLURM_DEFAULTS.mem,
    gpus_per_node: Annotated[int, _slurm_opt()] = _SLURM_DEFAULTS.gpus_per_node,
    array_parallelism: Annotated[int, _slurm_opt("array tasks running at once")] = _SLURM_DEFAULTS.array_parallelism,
    slurm_setup: Annotated[Optional[list[str]],
                           _slurm_opt("shell line before each task, e.g. 'module load apptainer' (repeatable)")] = None,
    sbatch: Annotated[Optional[list[str]],
                      _slurm_opt("extra #SBATCH option, e.g. --sbatch=--constraint=a100 (repeatable)")] = None,
    signal_delay: Annotated[int, _slurm_opt("seconds before the limit that USR2 asks for a checkpoint")]
    = _SLURM_DEFAULTS.signal_delay_s,
    max_requeues: Annotated[int, _slurm_opt("time-outs that requeue a task")] = _SLURM_DEFAULTS.max_requeues,
    container: Annotated[Optional[Path], _slurm_opt("run each array task inside this Apptainer image "
                                                    "(apptainer exec --nv); OUT is bound", "--container")] = None,
    bind: Annotated[Optional[list[str]], _slurm_opt("with --container: host folder bound into the image, "
                                                    "SRC[:DEST], e.g. /data (repeatable)", "--bind")] = None,
) -> None:
    """Run a grid of cells: one Slurm array task per cell, or locally without Slurm.

    The grid is the config's cell, or the cross product of --method, --ipc, --grid axes and
    --seeds; a job file under jobs/ names a whole grid (a table of the paper) at once. Complete
    cells are skipped, failed and unfinished ones rerun and resume from their checkpoints. The
    array map and job ids go to OUT/manifest.json; `ppodd status OUT` reads it.
    """
    from ppodd.cluster.grid import parse_grid, parse_list, parse_seeds, parse_values
    from ppodd.cluster.jobfile import load_experiment
    from ppodd.cluster.slurm import parse_time
    from ppodd.cluster.submit import GridSpec, RunOptions, submit_grid
    from ppodd.config import parse_override

    try:
        opts = SlurmOptions(partition, account, qos, parse_time(time_limit), cpus_per_task, mem, gpus_per_node,
                            array_parallelism, tuple(slurm_setup or ()), tuple(sbatch or ()), signal_delay,
                            max_requeues)
        spec = GridSpec.combine(
            load_experiment(job) if job is not None else None, config=config,
            sets=[parse_override(text) for text in set_ or []],
            methods=parse_list("--method", method) if method is not None else None,
            ipcs=parse_values("--ipc", ipc) if ipc is not None else None,
            seeds=parse_seeds(seeds) if seeds is not None else None,
            axes=parse_grid(grid or []), out=out)
        submit_grid(spec, RunOptions(cluster, workers, force, dry_run, yes, wait), opts, container, bind or [],
                    _host(), ["ppodd", *sys.argv[1:]], typer.echo)
    except PpoddError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume from the last checkpoints", err=True)
        raise typer.Exit(code=130) from None


@app.command()
def status(
    folder: Annotated[Path, typer.Argument(help="results folder holding manifest.json")],
    format_: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Show every cell of a results folder: its state and why, its device-hours; then the grid's cost.

    States: pending, running, requeued, done, failed, cancelled, incomplete. Read from the
    manifest and the files, plus one sacct or squeue call when Slurm answers.
    """
    from ppodd.cluster.status import grid_status

    try:
        typer.echo(grid_status(folder, format_))
    except PpoddError as e:
        _fail(e)


@app.command()
def logs(
    folder: Annotated[Path, typer.Argument(help="results folder holding manifest.json")],
    cell: Annotated[str, typer.Argument(help="the cell's file name, a unique prefix of it, an array index or a job id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then print what the task writes until the cell "
                                                                "ends (Ctrl-C stops)")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="only the last N lines of each attempt (0: all)")] = 0,
    attempt: Annotated[Optional[int], typer.Option(help="attempt K (1: the first) instead of the newest")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every attempt, oldest first")] = False,
) -> None:
    """Print a cell's task log, found through the manifest (Slurm array tasks and local runs)."""
    from ppodd.cluster.logs import show_log

    try:
        show_log(folder, cell, typer.echo, lines=lines, attempt=attempt, every=all_, follow=follow)
    except PpoddError as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None


@app.command()
def cancel(
    folder: Annotated[Path, typer.Argument(help="results folder holding manifest.json")],
    cells: Annotated[Optional[list[str]], typer.Option(help="only these cells, as `logs` takes them "
                                                            "(comma-separated, repeatable)")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="cancel without asking")] = False,
) -> None:
    """Cancel the grid's own queued and running Slurm tasks, never another job; `submit` resumes them."""
    from ppodd.cluster.cancel import cancel_grid
    from ppodd.cluster.grid import parse_list

    try:
        specs = [c for text in cells or [] for c in parse_list("--cells", text)]
        cancel_grid(folder, specs, yes, typer.confirm, typer.echo)
    except PpoddError as e:
        _fail(e)


@app.command()
def summarize(
    paths: Annotated[list[str], typer.Argument(help="run files, folders (searched recursively) or globs")],
    format_: Annotated[str, typer.Option("--format", help="table | markdown | csv | json")] = "table",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="write here instead of stdout")] = None,
    allow_bad: Annotated[bool, typer.Option("--allow-bad", help="exit 0 even when some files were bad")] = False,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="also draw the grid's figures into this folder")]
    = None,
    default: Annotated[Optional[list[str]], typer.Option(
        "--default", help="reference value of an ablation axis, e.g. ppodd.stages=5 (repeatable)")] = None,
    workers: Annotated[int, typer.Option(help="processes reading files (0: one per CPU, at most 8)")] = 0,
) -> None:
    """Tables over many runs: mean ± std over seeds per IPC, P-PoDD − PoDD paired by seed, ablations.

    A file that cannot be read gets one line on stderr; every good file is still summarised, and
    the exit code is 1 (0 with --allow-bad).
    """
    from ppodd.config import parse_override
    from ppodd.report.gather import gather
    from ppodd.report.summary import summarize as build
    from ppodd.report.tables import FORMATS, render

    try:
        if format_ not in FORMATS:
            raise ConfigError(f"--format {format_!r}: allowed {', '.join(FORMATS)}")
        if workers < 0:
            raise ConfigError(f"--workers: must be >= 0, got {workers}")
        defaults = dict(map(parse_override, default or []))
        records, problems = gather(paths, workers)
        if not records and not problems:
            raise ConfigError(f"no run files (*.h5) found in {' '.join(paths)}")
        if not records:  # nothing usable: bad input, and nothing written
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConfigError(f"{problems[0].message}{more}; expected run files (*.h5), folders of them or globs")
        summary = build(records, defaults)
        text = render(summary, problems, format_)
        for problem in problems:
            typer.echo(f"skipped ({problem.reason}): {problem.message}", err=True)
        if out is None:
            typer.echo(text, nl=False)
        else:
            write_text(out, text)
        if plots is not None:
            from ppodd.report.plots import grid_figures

            for path in grid_figures(summary, plots):
                typer.echo(f"figure {path}", err=out is None)
    except PpoddError as e:
        _fail(e)
    if problems and not allow_bad:
        raise typer.Exit(code=1)


@app.command()
def plot(
    file: Annotated[Path, typer.Argument(help="a run file (.h5)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the PNG files")] = Path("figures"),
    zca: Annotated[Optional[Path], typer.Option(
        "--zca", help="ZCA cache file (zca-KEY.pt) to map posters back; default: the run's cache, "
                      "else refit from its data")] = None,
) -> None:
    """Figures of one run: the poster at every stage, the evolution of π, the accuracy curve."""
    from ppodd.report.plots import run_figures

    try:
        for path in run_figures(file, out, _host(), zca, warn=lambda line: typer.echo(line, err=True)):
            typer.echo(str(path))
    except PpoddError as e:
        _fail(e)


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="a run file (.h5), or a poster file (.pt, .npy, .npz, .png, .jpg) "
                                               "with --config")],
    format_: Annotated[str, typer.Option("--format", help="pt | npz | png | imagefolder")] = "pt",
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write (a folder for imagefolder, or for "
                                                           "several posters)")] = Path("poster.pt"),
    stage: Annotated[str, typer.Option(help="run file: live (the final live poster), pool (every member of "
                                            "the final pool) or a stage number")] = "live",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="poster file with learned labels: its "
                                                                      "label map")] = None,
    zca: Annotated[Optional[Path], typer.Option(
        "--zca", help="run file: ZCA cache file (zca-KEY.pt) for png and imagefolder; default: the run's "
                      "cache, else refit from its data")] = None,
) -> None:
    """Write a poster for other tools: the reference codes' .pt layout, its patch set with soft labels
    (.npz), a PNG through the inverse ZCA, or an image folder with a label file.

    `ppodd evaluate` reads .pt and .npz exports back unchanged.
    """
    from ppodd.config import load_config
    from ppodd.report.export import FORMATS, file_poster, run_posters
    from ppodd.report.export import export as write
    from ppodd.storage.poster_files import is_poster_file

    try:
        if format_ not in FORMATS:
            raise ConfigError(f"--format {format_!r}: allowed {', '.join(FORMATS)}")
        if source.endswith(".h5"):
            if config is not None or set_ or labels is not None:
                raise ConfigError("--config, --set and --labels: only for a poster file; a run file has its own")
            posters = run_posters(Path(source), stage, _host(), zca, warn=lambda line: typer.echo(line, err=True))
        elif is_poster_file(source):
            if stage != "live":
                raise ConfigError("--stage: only for a run file")
            posters = [file_poster(Path(source), load_config(config, set_ or []), _host(), labels)]
        else:
            raise ConfigError(f"source {source!r}: expected a .h5 run file or a poster file "
                              "(.pt, .npy, .npz, .png, .jpg)")
        for path in write(posters, format_, out):
            typer.echo(str(path))
    except PpoddError as e:
        _fail(e)


def _host():
    """What this machine's environment says (cache folder, Slurm's CPUs): read here, at the edge."""
    from ppodd.cell.host import Host

    return Host.from_environment(os.environ)


if __name__ == "__main__":  # pragma: no cover - `python -m ppodd.cli`
    sys.exit(app())
