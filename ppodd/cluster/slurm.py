"""Slurm through submitit: resources of the array tasks, queueing arrays, asking the queue.

Only this module and `cluster.task` import submitit. Slurm is asked through `scontrol`,
`squeue`, `sacct` and `scancel`, each at most once per call that needs it; what `squeue` and
`sacct` print is read by `cluster.accounting`.
"""

from __future__ import annotations

import getpass
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from ppodd.cluster.accounting import SACCT_FIELDS, SQUEUE_FORMAT, SlurmJob, parse_sacct, parse_squeue
from ppodd.cluster.container import Container, python_command
from ppodd.cluster.grid import Cell
from ppodd.cluster.submission import LOG_FOLDER
from ppodd.cluster.task import CellTask
from ppodd.errors import ConfigError, PpoddError

CLUSTERS = ("auto", "slurm", "local", "debug")


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources of every array task; defaults suit the paper's settings on one GPU."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 720
    cpus_per_task: int = 0          # 0: the site's default
    mem: str = ""                   # e.g. 32G; "": the site's default
    gpus_per_node: int = 1
    array_parallelism: int = 64
    setup: tuple[str, ...] = ()     # shell lines before the task, e.g. `module load apptainer`
    sbatch: tuple[str, ...] = ()    # extra `#SBATCH` options, e.g. `--constraint=a100`
    signal_delay_s: int = 120       # USR2 this long before the limit; a checkpoint takes seconds
    max_requeues: int = 3           # time-outs that requeue; preemption requeues without limit


def parse_time(text: str) -> int:
    """Minutes of a Slurm time limit written as MIN, H:MM:SS or D-HH:MM:SS."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ConfigError(f"--time {text!r}: expected minutes, H:MM:SS or D-HH:MM:SS")
    days, first, second, third = match.groups()
    if second is None and days is None:
        minutes = int(first)
    else:
        hours, mins, secs = int(first), int(second or 0), int(third or 0)
        minutes = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes < 1:
        raise ConfigError(f"--time {text!r}: must be at least one minute")
    return minutes


def format_time(minutes: int) -> str:
    """A time limit in minutes as H:MM:SS, the form `--time` shows as its default."""
    return f"{minutes // 60}:{minutes % 60:02d}:00"


def parse_sbatch(options: tuple[str, ...]) -> dict[str, Any]:
    """Extra `#SBATCH` options (`--key=value` or `--flag`) as submitit's additional parameters."""
    out: dict[str, Any] = {}
    for text in options:
        match = re.fullmatch(r"--([A-Za-z][\w-]*)(?:=(.+))?", text.strip())
        if not match:
            raise ConfigError(f"--sbatch {text!r}: expected --KEY=VALUE or --FLAG, e.g. --constraint=a100")
        out[match.group(1)] = match.group(2) if match.group(2) is not None else True
    return out


def check_slurm_out(out: Path) -> None:
    """ConfigError for a results folder that `#SBATCH --output` lines cannot name (whitespace)."""
    if re.search(r"\s", str(Path(out).absolute())):
        raise ConfigError(f"--out {str(out)!r}: Slurm log paths cannot contain whitespace; choose another folder")


def check_slurm_options(opts: SlurmOptions) -> None:
    """ConfigError for resources Slurm would refuse, before anything is written."""
    for name in ("cpus_per_task", "gpus_per_node"):
        if getattr(opts, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(opts, name)}")
    if opts.array_parallelism < 1:
        raise ConfigError(f"--array-parallelism: must be >= 1, got {opts.array_parallelism}")
    if opts.mem and not re.fullmatch(r"\d+[KMGT]?", opts.mem):
        raise ConfigError(f"--mem {opts.mem!r}: expected a number with an optional K, M, G or T suffix (e.g. 32G)")
    parse_sbatch(opts.sbatch)


def _slurm_cmd(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def slurm_reachable() -> bool:
    """True when a Slurm controller answers `scontrol ping`, not merely when `srun` is installed."""
    done = _slurm_cmd(["scontrol", "ping"], timeout=10)
    return done is not None and done.returncode == 0 and "UP" in done.stdout


def resolve_cluster(cluster: str) -> str:
    """The executor to use (`cluster` is one of CLUSTERS): `auto` is slurm only when a controller
    answers, local otherwise."""
    if cluster == "auto":
        return "slurm" if slurm_reachable() else "local"
    return cluster


def max_array_size() -> int:
    """The cluster's MaxArraySize (1001, Slurm's default, when it cannot be read)."""
    done = _slurm_cmd(["scontrol", "show", "config"])
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", done.stdout if done else "", re.M)
    return int(match.group(1)) if match else 1001


def accounting_enabled() -> bool:
    """True when the cluster keeps job accounting, so `sacct` knows every task's end."""
    done = _slurm_cmd(["scontrol", "show", "config"])
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", done.stdout if done else "", re.M)
    return bool(match) and match.group(1) != "accounting_storage/none"


def queue_states() -> dict[str, SlurmJob] | None:
    """This user's jobs that the controller holds (queued, running, and those that ended in the
    last minutes), by job id (`123` or `123_4`); one squeue call, None if unreachable."""
    done = _slurm_cmd(["squeue", "--noheader", "--array", "--states", "all", "--user", getpass.getuser(),
                       "--format", SQUEUE_FORMAT])
    if done is None or done.returncode != 0:
        return None
    return parse_squeue(done.stdout)


def accounted_jobs(arrays: list[str]) -> dict[str, SlurmJob] | None:
    """Every attempt of the tasks of array jobs `arrays`, by task id, from one sacct call; None if
    it fails."""
    done = _slurm_cmd(["sacct", "--noheader", "--parsable2", "--duplicates", "--jobs", ",".join(arrays),
                       "--format", SACCT_FIELDS], timeout=30)
    if done is None or done.returncode != 0:
        return None
    return parse_sacct(done.stdout)


def grid_jobs(manifest: dict) -> dict[str, SlurmJob] | None:
    """What Slurm says of a grid's tasks, asked once: sacct when the grid was submitted to a
    cluster that keeps accounting, squeue otherwise (or when sacct fails); None when the grid
    never ran on Slurm or Slurm does not answer."""
    subs = [s for s in manifest["submissions"] if s.get("cluster") == "slurm"]
    if not subs:
        return None
    arrays = sorted({str(t["job_id"]).split("_")[0] for s in subs for t in s["tasks"] if t.get("job_id")})
    if arrays and any(s.get("accounting") for s in subs):
        jobs = accounted_jobs(arrays)
        if jobs is not None:
            return jobs
    return queue_states()


def scancel(job_ids: list[str]) -> str:
    """Cancel these jobs (task ids such as `123_4`) in one scancel call; what it said on stderr.

    PpoddError when scancel cannot be run at all.
    """
    done = _slurm_cmd(["scancel", *job_ids], timeout=60)
    if done is None:
        raise PpoddError("scancel could not be run; nothing was cancelled")
    return done.stderr.strip()


def executor_parameters(opts: SlurmOptions) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for the options (unset ones left to the site)."""
    params: dict[str, Any] = {"time": opts.time_min, "array_parallelism": opts.array_parallelism,
                              "signal_delay_s": opts.signal_delay_s, "job_name": "ppodd"}
    for key in ("partition", "account", "qos", "mem"):
        if getattr(opts, key):
            params[key] = getattr(opts, key)
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.setup:
        params["setup"] = list(opts.setup)
    extra = parse_sbatch(opts.sbatch)
    if extra:
        params["additional_parameters"] = extra
    return params


def task_python(container: Container | None) -> str:
    """The shell words that start each array task's python: the submitting one, or the image's."""
    return python_command(container) if container is not None else shlex.quote(sys.executable)


def sbatch_script(out: Path, opts: SlurmOptions, count: int, container: Container | None = None) -> str:
    """The sbatch script an array of `count` cells gets (what `--dry-run` prints)."""
    folder = Path(out).absolute() / LOG_FOLDER / "%j"
    command = " ".join([task_python(container), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    params = executor_parameters(opts)
    return _make_sbatch_string(command=command, folder=folder, map_count=count if count > 1 else None, **params)


def submit_slurm(cells: list[Cell], out: Path, opts: SlurmOptions, container: Container | None = None) -> list[dict]:
    """Queue one array task per cell (arrays split at MaxArraySize); their array map with job ids."""
    folder = Path(out).absolute() / LOG_FOLDER / "%j"
    wrap = {"python": python_command(container)} if container is not None else {}  # default: sys.executable
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_requeues, **wrap)
    executor.update_parameters(**executor_parameters(opts))
    size = max_array_size()
    tasks = []
    for start in range(0, len(cells), size):
        chunk = cells[start:start + size]
        try:
            with executor.batch():
                jobs = [executor.submit(CellTask(c.config, str(c.path), c.files.digest)) for c in chunk]
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as err:
            raise PpoddError(f"sbatch refused the array: {' '.join(str(err).split())[:400]}") from None
        for index, (cell, job) in enumerate(zip(chunk, jobs)):
            tasks.append({"array_index": index, "job_id": str(job.job_id), "cell": cell.name})
    return tasks
