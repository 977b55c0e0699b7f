"""Running the cells of a grid on this machine: one at a time, in worker processes, or in the
submitit DebugExecutor. Each cell's task also logs into `OUT/logs/local/CELL.log` (`ppodd logs`)."""

from __future__ import annotations

import time
from pathlib import Path

import submitit

from ppodd.cluster.grid import Cell
from ppodd.cluster.submission import LOG_FOLDER
from ppodd.cluster.task import CellTask
from ppodd.errors import PpoddError

# Under the results folder's logs/: one file per cell, every local attempt appended.
LOCAL_LOGS = "local"


def local_log(out: Path, name: str) -> Path:
    """The file the cell `name` of results folder `out` logs to when it runs here."""
    return Path(out) / LOG_FOLDER / LOCAL_LOGS / f"{name}.log"


def _task(cell: Cell, bar: bool | None = False) -> CellTask:
    return CellTask(cell.config, str(cell.path), cell.files.digest, bar=bar,
                    log_file=str(local_log(cell.path.parent, cell.name)))


def run_local(cells: list[Cell], workers: int, echo) -> None:
    """Run the cells on this machine, `workers` at a time, reporting each as it ends."""
    started = time.monotonic()

    def report(n: int, cell: Cell, error: BaseException | None) -> None:
        what = "done" if error is None else f"failed: {(str(error).splitlines() or [''])[0]}"
        echo(f"[{n}/{len(cells)}] {cell.name} {what} ({time.monotonic() - started:.0f} s)")

    if workers <= 1:
        for n, cell in enumerate(cells, 1):
            try:
                _task(cell, bar=None)()
                report(n, cell, None)
            except PpoddError as e:
                report(n, cell, e)
        return
    import concurrent.futures as cf
    import multiprocessing

    # spawn, not fork: a forked child would inherit torch's thread pools in an unknown state.
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_task(c)): c for c in cells}
        for n, future in enumerate(cf.as_completed(futures), 1):
            error = future.exception()
            if error is not None and not isinstance(error, PpoddError):
                raise error
            report(n, futures[future], error)


def run_debug(cells: list[Cell], out: Path) -> None:
    """Run the cells in this process through submitit's DebugExecutor (for stepping through a task)."""
    executor = submitit.DebugExecutor(folder=Path(out).absolute() / LOG_FOLDER / "debug")
    for cell in cells:
        executor.submit(_task(cell)).result()
