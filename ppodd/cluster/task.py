"""One array task: run one cell from its config into its files, resuming if it can.

The task records where it stands in the cell's state file (running, requeued, failed with the
reason) for `ppodd status`, and refuses to start when the node runs another ppodd or submitit than
the submitter did.
"""

from __future__ import annotations

import os
import signal
import socket
import traceback
from pathlib import Path

import structlog
import submitit

import ppodd
from ppodd.atomic import write_json
from ppodd.cell.host import Host
from ppodd.cell.identity import CellFiles
from ppodd.cluster.container import version_mismatch
from ppodd.cluster.submission import now
from ppodd.config import build_config
from ppodd.errors import PpoddError
from ppodd.storage.lock import LockedError, cell_lock


def _record_failure(files: CellFiles, record: dict, error: BaseException) -> None:
    first = (str(error).strip().splitlines() or [""])[0]
    write_json(files.state, {**record, "state": "failed", "stopped": now(),
                              "error": f"{type(error).__name__}: {first}", "traceback": traceback.format_exc()})


class CellTask(submitit.helpers.Checkpointable):
    """One array task: run one cell from its config dict into its result path, resuming if it can.

    On Slurm's USR2 the run stops after its current outer step and saves its checkpoint; submitit's
    own handler then calls `checkpoint` (the same cell again) and requeues the task, which resumes.
    """

    def __init__(self, config: dict, path: str, digest: str, bar: bool | None = False) -> None:
        self.config = config
        self.path = path
        self.digest = digest
        self.bar = bar  # None: a progress bar when stderr is a terminal (local runs)
        # Of the submitter; the node (or the --container image) may run other code.
        self.version = ppodd.__version__
        self.submitit_version = submitit.__version__

    def __call__(self) -> str:
        from ppodd.cell.progress import configure_logging
        from ppodd.cell.run import run_cell
        from ppodd.cell.stages import Interrupted

        # A task pickled by an older ppodd may lack `digest`; the version check below refuses it.
        files = CellFiles(Path(self.path), getattr(self, "digest", ""))
        env = os.environ  # the task's entry is the edge where a node's environment is read
        job = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", ""))
        if env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{job}_{env['SLURM_ARRAY_TASK_ID']}"
        record = {"state": "running", "job_id": job, "host": socket.gethostname(), "pid": os.getpid(),
                  "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0), "started": now(),
                  "ppodd_version": ppodd.__version__}
        configure_logging()
        log = structlog.get_logger("ppodd").bind(job_id=job, array_index=env.get("SLURM_ARRAY_TASK_ID"))
        with cell_lock(files.lock):
            pass  # LockedError: another task runs this cell (a double submission); keep its record
        write_json(files.state, record)
        mismatch = version_mismatch({"ppodd": self.version, "submitit": self.submitit_version},
                                    {"ppodd": ppodd.__version__, "submitit": submitit.__version__})
        if mismatch:
            error = PpoddError(mismatch)
            _record_failure(files, record, error)
            raise error
        stop: list[int] = []
        previous = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, lambda signum, frame: stop.append(signum))
        try:
            result = run_cell(build_config(self.config), files, Host.from_environment(env), log,
                              should_stop=lambda: bool(stop), bar=self.bar)
        except Interrupted as e:
            if not callable(previous):  # not under submitit: nothing requeues, a rerun resumes
                _record_failure(files, record, e)
                raise
            write_json(files.state, {**record, "state": "requeued", "stopped": now()})
            try:
                previous(signal.SIGUSR2, None)  # submitit: checkpoint(), `scontrol requeue`, exit
            except Exception as refused:  # e.g. timed out more than --max-requeues times
                _record_failure(files, record, refused)
                raise
            raise
        except LockedError:
            raise  # the cell's record belongs to the task that holds the lock
        except Exception as e:
            _record_failure(files, record, e)
            raise
        finally:
            signal.signal(signal.SIGUSR2, previous)
        files.state.unlink(missing_ok=True)
        return str(result)
