"""One array task: run one cell from its config into its files, resuming if it can.

The task records where it stands in the cell's state file (running, requeued, failed with the
reason, and every attempt's start and end for the grid's cost) for `ppodd status`, touches that
file every minute while it runs (the heartbeat that dates a hard kill), and refuses to start
when the node runs another ppodd or submitit than the submitter did. Run here (`--cluster
local`), it also copies its log events into a file of its own for `ppodd logs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import threading
import traceback
from pathlib import Path

import structlog
import submitit

import ppodd
from ppodd.atomic import write_json
from ppodd.cell.host import Host
from ppodd.cell.identity import CellFiles
from ppodd.cluster.container import version_mismatch
from ppodd.cluster.cost import HEARTBEAT_S, close_attempts
from ppodd.cluster.submission import now
from ppodd.config import build_config
from ppodd.errors import PpoddError
from ppodd.storage.lock import LockedError, cell_lock


def earlier_attempts(state: Path) -> list[dict]:
    """The attempts earlier tasks of a cell recorded in its state file, the last one closed at
    the file's last heartbeat if it never said when it stopped (a hard kill)."""
    try:
        attempts = json.loads(state.read_text()).get("attempts")
        alive = dt.datetime.fromtimestamp(state.stat().st_mtime, dt.timezone.utc)
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(attempts, list):
        return []
    return close_attempts([a for a in attempts if isinstance(a, dict)], alive)


def _ended(record: dict, state: str) -> dict:
    """The record of an attempt that ends now in `state`."""
    stopped = now()
    attempts = [*record["attempts"][:-1], {**record["attempts"][-1], "stopped": stopped, "end": state}]
    return {**record, "state": state, "stopped": stopped, "attempts": attempts}


def _record_failure(files: CellFiles, record: dict, error: BaseException, log) -> None:
    first = (str(error).strip().splitlines() or [""])[0]
    line = f"{type(error).__name__}: {first}"
    write_json(files.state, {**_ended(record, "failed"), "error": line, "traceback": traceback.format_exc()})
    log.error("task_failed", error=line)


@contextlib.contextmanager
def _heartbeat(path: Path):
    """Touch `path` every HEARTBEAT_S seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="ppodd-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class CellTask(submitit.helpers.Checkpointable):
    """One array task: run one cell from its config dict into its result path, resuming if it can.

    On Slurm's USR2 the run stops after its current outer step and saves its checkpoint; submitit's
    own handler then calls `checkpoint` (the same cell again) and requeues the task, which resumes.
    """

    def __init__(self, config: dict, path: str, digest: str, bar: bool | None = False,
                 log_file: str | None = None) -> None:
        self.config = config
        self.path = path
        self.digest = digest
        self.bar = bar  # None: a progress bar when stderr is a terminal (local runs)
        self.log_file = log_file  # local runs: the cell's own log (Slurm's tasks log to submitit's files)
        # Of the submitter; the node (or the --container image) may run other code.
        self.version = ppodd.__version__
        self.submitit_version = submitit.__version__

    def __call__(self) -> str:
        from ppodd.cell.progress import configure_logging

        log_file = getattr(self, "log_file", None)  # a task pickled by an older ppodd has none
        if log_file is None:
            configure_logging()
            return self._run()
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as copy:
            configure_logging(copy=copy)
            try:
                return self._run()
            finally:
                configure_logging()  # the copy is closed next

    def _run(self) -> str:
        from ppodd.cell.run import run_cell
        from ppodd.cell.stages import Interrupted

        # A task pickled by an older ppodd may lack `digest`; the version check below refuses it.
        files = CellFiles(Path(self.path), getattr(self, "digest", ""))
        env = os.environ  # the task's entry is the edge where a node's environment is read
        job = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", ""))
        if env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{job}_{env['SLURM_ARRAY_TASK_ID']}"
        gpus = env.get("SLURM_GPUS_ON_NODE", "")
        log = structlog.get_logger("ppodd").bind(job_id=job, array_index=env.get("SLURM_ARRAY_TASK_ID"))
        with cell_lock(files.lock):
            pass  # LockedError: another task runs this cell (a double submission); keep its record
        attempt = {"job_id": job, "host": socket.gethostname(), "started": now(),
                   "gpus": int(gpus) if gpus.isdigit() else 0}
        record = {"state": "running", "job_id": job, "host": attempt["host"], "pid": os.getpid(),
                  "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0), "started": attempt["started"],
                  "ppodd_version": ppodd.__version__, "attempts": [*earlier_attempts(files.state), attempt]}
        write_json(files.state, record)
        log.info("task_start", cell=files.name, attempt=len(record["attempts"]), host=record["host"],
                 pid=record["pid"], restarts=record["restarts"])
        mismatch = version_mismatch({"ppodd": self.version, "submitit": self.submitit_version},
                                    {"ppodd": ppodd.__version__, "submitit": submitit.__version__})
        if mismatch:
            error = PpoddError(mismatch)
            _record_failure(files, record, error, log)
            raise error
        stop: list[int] = []
        previous = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, lambda signum, frame: stop.append(signum))
        try:
            with _heartbeat(files.state):
                result = run_cell(build_config(self.config), files, Host.from_environment(env), log,
                                  should_stop=lambda: bool(stop), bar=self.bar)
        except Interrupted as e:
            if not callable(previous):  # not under submitit: nothing requeues, a rerun resumes
                _record_failure(files, record, e, log)
                raise
            write_json(files.state, _ended(record, "requeued"))
            try:
                previous(signal.SIGUSR2, None)  # submitit: checkpoint(), `scontrol requeue`, exit
            except Exception as refused:  # e.g. timed out more than --max-requeues times
                _record_failure(files, record, refused, log)
                raise
            raise
        except LockedError:
            raise  # the cell's record belongs to the task that holds the lock
        except Exception as e:
            _record_failure(files, record, e, log)
            raise
        finally:
            signal.signal(signal.SIGUSR2, previous)
        files.state.unlink(missing_ok=True)
        return str(result)
