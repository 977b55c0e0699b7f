"""One cell end to end: config → data → distillation → evaluation → run file.

`run_cell` is what `ppodd run` and every array task call. It prepares everything that can fail on
bad input before any work, takes the cell's lock, resumes from the cell's checkpoint when one
exists, runs the stage loop (`cell.stages`) and hands the finished `RunRecord` to
`storage.writer.write_run`, which makes the result file appear atomically.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

import ppodd
from ppodd.atomic import WriteError
from ppodd.cell.host import Host
from ppodd.cell.identity import CellFiles, is_complete
from ppodd.cell.prepare import Prepared, prepare
from ppodd.cell.progress import Progress
from ppodd.cell.stages import Evaluator, architecture_scores, distill_stages, final_scores, fresh_state
from ppodd.config import RunConfig, to_dict
from ppodd.errors import PpoddError
from ppodd.method.poster import PosterGeometry
from ppodd.storage.checkpoint import RunState, load_checkpoint, save_checkpoint
from ppodd.storage.folders import check_writable, free_bytes
from ppodd.storage.lock import cell_lock
from ppodd.storage.record import EvalResult, RunRecord
from ppodd.storage.writer import write_run


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(ppodd.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _provenance(prep: Prepared, state: RunState) -> dict:
    device = prep.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return {"ppodd_version": ppodd.__version__, "git_commit": _git_commit(), "torch_version": str(torch.__version__),
            "device": name, "host": socket.gethostname(), "python": platform.python_version(),
            "started": state.started,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds_total": round(sum(state.seconds.values()), 3),
            **{f"seconds_{k}": round(v, 3) for k, v in state.seconds.items()}}


def _record(prep: Prepared, state: RunState, live: EvalResult, pool: EvalResult) -> RunRecord:
    geom = prep.geom
    return RunRecord(
        config=to_dict(prep.cfg),
        geometry={"height": geom.height, "width": geom.width, "tile": geom.tile, "rows": geom.rows,
                  "cols": geom.cols, "n_x": geom.n_x, "n_y": geom.n_y, "pixels": geom.pixels,
                  "effective_ipc": geom.effective_ipc},
        class_order=prep.order, class_names=list(prep.data.class_names),
        initial_poster=state.initial_poster.cpu(), stages=state.stages, final_live=live, final_pool=pool,
        curves={k: torch.tensor(v) for k, v in state.curves.items()},
        provenance=_provenance(prep, state), zca_key=prep.zca_key,
        seeds={"seed": prep.cfg.seed, "derivation": "sha256 of (seed, name, indices), see ppodd.method.seeding.generator"},
        architectures={arch: state.architectures[arch] for arch in prep.cfg.eval.models})


def result_bytes(cfg: RunConfig, geom: PosterGeometry) -> int:
    """A generous bound on the disk space a cell needs: its result plus its checkpoint."""
    return 4 * 4 * 3 * geom.pixels * (cfg.num_stages + 2) + (1 << 20)


def _finished(files: CellFiles, log) -> bool:
    """True when the cell's result is complete; a result of a newer ppodd is refused, never replaced."""
    if not is_complete(files.result):
        if files.result.exists():
            log.warning("result_unreadable_rerun", path=str(files.result))
        return False
    log.info("cell_done_already", path=str(files.result))
    return True


def _tidy_finished(files: CellFiles) -> None:
    """Remove what a run killed just after its result appeared left beside it: checkpoint, temporaries, lock."""
    if not (files.checkpoint.exists() or files.lock.exists() or files.temporaries()):
        return
    try:
        with cell_lock(files.lock):
            for leftover in [files.checkpoint, *files.temporaries()]:
                leftover.unlink(missing_ok=True)
    except PpoddError:
        pass  # another run (a --force rerun) holds the cell: its files are not leftovers


def run_cell(cfg: RunConfig, files: CellFiles, host: Host, log, *, force: bool = False,
             should_stop: Callable[[], bool] = lambda: False, bar: bool | None = None) -> Path:
    """Distill and evaluate one cell into `files.result` and return that path.

    A complete result is returned as it is (unless `force`); the cell's checkpoint is resumed.
    Bad input raises ConfigError before any work; another run of the same cell holding its lock
    raises LockedError before any work.
    """
    log = log.bind(cell=files.name)
    if not force and _finished(files, log):
        _tidy_finished(files)
        return files.result
    threads = host.threads(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    begin = time.monotonic()
    prep = prepare(cfg, host)
    check_writable(files.result.parent, result_bytes(cfg, prep.geom))
    with cell_lock(files.lock):
        # Another run of this cell may have finished while this one prepared.
        if not force and _finished(files, log):
            return files.result
        for stale in files.temporaries():
            stale.unlink(missing_ok=True)
        if force:
            files.checkpoint.unlink(missing_ok=True)
        state = load_checkpoint(files.checkpoint, files.digest, prep.device)
        if state is None:
            state = fresh_state(prep)
        else:
            log.info("resume", stage=state.stage + 1, epoch=state.epoch, step=state.step)
        state.seconds["prepare"] = state.seconds.get("prepare", 0.0) + time.monotonic() - begin
        per_stage = cfg.distill.epochs // cfg.num_stages
        steps = math.ceil(prep.train_x.shape[0] / min(cfg.distill.real_batch, prep.train_x.shape[0]))
        done = (state.stage * per_stage + state.epoch) * steps + state.step
        progress = Progress(cfg.num_stages * per_stage * steps, done, log, bar=bar)
        progress.event("run_start", device=str(prep.device), poster=f"{prep.geom.width}x{prep.geom.height}",
                       patches=prep.geom.num_patches, stages=cfg.num_stages, method=cfg.method)

        def checkpoint() -> None:
            save_checkpoint(state, files.checkpoint, files.digest)

        distill_stages(prep, state, progress, checkpoint, should_stop)
        if not state.final:
            state.final = list(final_scores(Evaluator(prep, state, progress)))
            checkpoint()
        architecture_scores(prep, state, progress, checkpoint)
        live, pool = state.final
        try:
            write_run(_record(prep, state, live, pool), files.result)
        except WriteError as err:
            raise PpoddError(f"cannot write result {files.result} ({err.reason}; {free_bytes(files.result.parent)} "
                             "bytes free); its checkpoint holds the finished run, rerun to write it") from None
        files.checkpoint.unlink(missing_ok=True)
    progress.event("run_done", path=str(files.result), accuracy_live=round(live.final, 2),
                   accuracy_pool=round(pool.final, 2), seconds=round(time.monotonic() - begin, 1))
    return files.result
