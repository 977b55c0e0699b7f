"""The `ppodd` command line. The only place that turns PpoddError into exit codes.

Bad input exits 2 with one line on stderr that names the value and what is allowed; a run that
fails exits 1 with a short message; neither prints a traceback.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import structlog
import typer

import ppodd
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
    from ppodd.config import load_config
    from ppodd.progress import configure_logging
    from ppodd.run import run_cell

    configure_logging()
    log = structlog.get_logger("ppodd")
    stop = _stop_on_signals()
    try:
        cfg = load_config(config, set_ or [])
        path = run_cell(cfg, out, log, force=force, should_stop=lambda: bool(stop))
    except PpoddError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted; rerun the same command to resume from the last checkpoint", err=True)
        raise typer.Exit(code=130) from None
    typer.echo(str(path))


@app.command()
def evaluate(
    poster: Annotated[str, typer.Argument(help="initial | real | a run file (.h5) whose final live poster to score")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the result as JSON here")] = None,
) -> None:
    """Score a reference poster under a config's evaluation protocol (§9).

    `initial` is the untrained poster a run starts from; `real` puts one random training image
    of each class on its tile. A run file is scored with its own stored config, plus --set.
    """
    import json

    from ppodd.baselines import KINDS, evaluate_reference
    from ppodd.config import apply_overrides, build_config, load_config
    from ppodd.progress import Progress, configure_logging
    from ppodd.run import prepare
    from ppodd.store import read_run

    configure_logging()
    log = structlog.get_logger("ppodd")
    try:
        if poster in KINDS:
            cfg = load_config(config, set_ or [])
        elif poster.endswith(".h5"):
            cfg = build_config(apply_overrides(read_run(Path(poster)).config, set_ or []))
        else:
            raise ConfigError(f"poster: {poster!r} is not one of {', '.join(KINDS)} or a .h5 run file")
        result = evaluate_reference(prepare(cfg), poster, Progress(0, 0, log, bar=False))
    except PpoddError as e:
        _fail(e)
    row = {"poster": poster, "checkpoints": result.checkpoints,
           "mean": [round(float(v), 4) for v in result.mean], "per_net": result.per_net.tolist(),
           "pixels": result.pixels, "effective_ipc": result.effective_ipc, "seconds": round(result.seconds, 1)}
    if json_out is not None:
        json_out.write_text(json.dumps(row, indent=2) + "\n")
    typer.echo(" ".join(f"{c}:{m:.2f}" for c, m in zip(result.checkpoints, row["mean"])))


if __name__ == "__main__":  # pragma: no cover - `python -m ppodd.cli`
    sys.exit(app())
