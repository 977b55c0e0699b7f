"""Grids of cells to Slurm job arrays through submitit, a local fallback, and the status of a results folder.

A *cell* is one resolved config and its result file `<out>/<result_name(cfg)>`. `submit` expands
the grid, prepares data once on the submit side, skips complete cells, records everything in
`<out>/manifest.json` (replaced atomically) and queues one array task per remaining cell. Each
task runs `CellTask`, which resumes from the cell's checkpoint, checkpoints and requeues itself on
Slurm's USR2 through submitit, and writes `<out>/<cell>.state.json` (running, requeued, failed
with the reason) where `status` reads it. With `--container`, each task's python is the image's,
started through `apptainer exec` (container.py). Only this module and `cli.py` import submitit.
"""

from __future__ import annotations

import datetime as dt
import getpass
import itertools
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import submitit
from submitit.slurm.slurm import _make_sbatch_string

import ppodd
from ppodd.atomic import write_atomic
from ppodd.config import METHODS, apply_overrides, build_config, read_yaml, to_dict
from ppodd.cluster.container import Container, python_command, version_mismatch
from ppodd.errors import ConfigError, PpoddError
from ppodd.storage.lock import LockedError, cell_lock

CLUSTERS = ("auto", "slurm", "local", "debug")
STATES = ("pending", "running", "requeued", "done", "failed", "incomplete")
MANIFEST = "manifest.json"
LOG_FOLDER = "logs"
# A grid above MAX_CELLS cells needs `submit --yes`: a slip in --seeds or --grid should not queue
# thousands of GPU jobs. MAX_SEEDS bounds --seeds whatever --yes says.
MAX_CELLS = 500
MAX_SEEDS = 100_000


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: the overrides that make it, its resolved config and its result file."""

    overrides: tuple[str, ...]
    config: dict
    path: Path

    @property
    def name(self) -> str:
        """The result file's stem, which names the cell everywhere (logs, manifest, status)."""
        return self.path.stem


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


# --- parsing the grid --------------------------------------------------------------------------


def parse_seeds(spec: str) -> list[int]:
    """The seeds of a spec such as `0-4`, `0,2,5` or `0-4,9`, in order and without repeats.

    At most MAX_SEEDS seeds, counted before any list is built, so a slip such as `0-1000000000`
    fails at once instead of filling memory.
    """
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"--seeds {spec!r}: {part!r} is not a seed or a range; "
                              "allowed: N, A-B with A <= B, comma-separated (e.g. 0-4,9)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"--seeds {spec!r}: range {part!r} runs backwards; write {hi}-{lo}")
        ranges.append((lo, hi))
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > MAX_SEEDS:
        raise ConfigError(f"--seeds {spec!r}: {count} seeds; allowed at most {MAX_SEEDS}")
    return list(dict.fromkeys(s for lo, hi in ranges for s in range(lo, hi + 1)))


def parse_list(option: str, text: str) -> list[str]:
    """The non-empty comma-separated items of an option's value."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list without empty items")
    return items


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """The axes of `--grid key=v1,v2` options: (dotted key, values as written)."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... e.g. ppodd.boost=0,1.5")
        axes.append((key.strip(), parse_list(f"--grid {key.strip()}", values)))
    return axes


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


def expand_grid(config: Path | None, sets: list[str], methods: list[str], ipcs: list[str],
                seeds: list[int], grid: list[tuple[str, list[str]]], out: Path,
                max_cells: int | None = None) -> list[Cell]:
    """Every cell of the cross product method × IPC × grid axes × seed, validated, duplicates dropped.

    Seeds vary fastest, so the seeds of one setting sit next to each other in the array. A grid
    of more than `max_cells` cells (None: no limit) is refused before any cell is built.
    """
    sizes = [("--method", len(methods)), ("--ipc", len(ipcs)), *((f"--grid {k}", len(v)) for k, v in grid),
             ("--seeds", len(seeds))]
    total = math.prod(n for _, n in sizes if n)
    if max_cells is not None and total > max_cells:
        shape = " x ".join(f"{n} ({name})" for name, n in sizes if n > 1)
        raise ConfigError(f"grid of {total} cells ({shape}) is above {max_cells}; "
                          "add --yes to submit it, or narrow --seeds, --ipc or --grid")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"--method {m!r}: allowed {', '.join(METHODS)}")
    raw = read_yaml(config) if config is not None else {}
    axes = [[f"method={m}" for m in methods], [f"poster.ipc={i}" for i in ipcs]]
    axes += [[f"{key}={v}" for v in values] for key, values in grid]
    axes.append([f"seed={s}" for s in seeds])
    from ppodd.cell.run import result_name  # the engine is imported only once a grid is really built

    cells: dict[Path, Cell] = {}
    for combo in itertools.product(*[a for a in axes if a]):
        cfg = build_config(apply_overrides(raw, list(sets) + list(combo)))
        path = Path(out).absolute() / result_name(cfg)
        cells.setdefault(path, Cell(tuple(combo), to_dict(cfg), path))
    return list(cells.values())


# --- where Slurm is and what it says -----------------------------------------------------------


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


def queue_states() -> dict[str, str] | None:
    """Job id (`123` or `123_4`) → Slurm state of this user's queued jobs; one squeue call, None if unreachable."""
    done = _slurm_cmd(["squeue", "--noheader", "--array", "--user", getpass.getuser(), "--format", "%i|%T"])
    if done is None or done.returncode != 0:
        return None
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state
    return states


# --- the submitted callable --------------------------------------------------------------------


def state_path(result: Path) -> Path:
    """Where a cell's task records running / requeued / failed (beside its result)."""
    return result.with_name(result.stem + ".state.json")


def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))


def _record_failure(path: Path, record: dict, error: BaseException) -> None:
    first = (str(error).strip().splitlines() or [""])[0]
    _write_json(state_path(path), {**record, "state": "failed", "stopped": _now(),
                                   "error": f"{type(error).__name__}: {first}", "traceback": traceback.format_exc()})


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class CellTask(submitit.helpers.Checkpointable):
    """One array task: run one cell from its config dict into its result path, resuming if it can.

    On Slurm's USR2 the run stops after its current outer step and saves its checkpoint; submitit's
    own handler then calls `checkpoint` (the same cell again) and requeues the task, which resumes.
    """

    def __init__(self, config: dict, path: str, bar: bool | None = False) -> None:
        self.config = config
        self.path = path
        self.bar = bar  # None: a progress bar when stderr is a terminal (local runs)
        # Of the submitter; the node (or the --container image) may run other code.
        self.version = ppodd.__version__
        self.submitit_version = submitit.__version__

    def __call__(self) -> str:
        from ppodd.config import build_config as build
        from ppodd.cell.progress import configure_logging
        from ppodd.cell.run import Interrupted, run_cell

        path = Path(self.path)
        env = os.environ
        job = env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", ""))
        if env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{job}_{env['SLURM_ARRAY_TASK_ID']}"
        record = {"state": "running", "job_id": job, "host": socket.gethostname(), "pid": os.getpid(),
                  "restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0), "started": _now(),
                  "ppodd_version": ppodd.__version__}
        configure_logging()
        log = structlog.get_logger("ppodd").bind(job_id=job, array_index=env.get("SLURM_ARRAY_TASK_ID"))
        with cell_lock(path.with_suffix(".lock")):
            pass  # LockedError: another task runs this cell (a double submission); keep its record
        _write_json(state_path(path), record)
        mismatch = version_mismatch({"ppodd": self.version, "submitit": self.submitit_version},
                                    {"ppodd": ppodd.__version__, "submitit": submitit.__version__})
        if mismatch:
            error = PpoddError(mismatch)
            _record_failure(path, record, error)
            raise error
        stop: list[int] = []
        previous = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, lambda signum, frame: stop.append(signum))
        try:
            result = run_cell(build(self.config), path.parent, log, should_stop=lambda: bool(stop),
                              bar=self.bar)
        except Interrupted as e:
            if not callable(previous):  # not under submitit: nothing requeues, a rerun resumes
                _record_failure(path, record, e)
                raise
            _write_json(state_path(path), {**record, "state": "requeued", "stopped": _now()})
            try:
                previous(signal.SIGUSR2, None)  # submitit: checkpoint(), `scontrol requeue`, exit
            except Exception as refused:  # e.g. timed out more than --max-requeues times
                _record_failure(path, record, refused)
                raise
            raise
        except LockedError:
            raise  # the cell's record belongs to the task that holds the lock
        except Exception as e:
            _record_failure(path, record, e)
            raise
        finally:
            signal.signal(signal.SIGUSR2, previous)
        state_path(path).unlink(missing_ok=True)
        return str(result)


# --- submitting --------------------------------------------------------------------------------


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


def cell_table(cells: list[Cell]) -> str:
    """The array map: index, cell file and the overrides that make the cell."""
    lines = ["index  file  overrides"]
    lines += [f"{i:5d}  {c.path.name}  {' '.join(c.overrides)}" for i, c in enumerate(cells)]
    return "\n".join(lines)


def read_manifest(out: Path) -> dict:
    """The manifest of a results folder (empty when there is none); ConfigError when unreadable."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return {"format": "ppodd-manifest", "format_version": 1, "cells": {}, "submissions": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{path}: not a readable ppodd manifest (JSON); move it away to start a new one") from None
    if data.get("format") != "ppodd-manifest":
        raise ConfigError(f"{path}: not a ppodd manifest (format {data.get('format')!r})")
    version = data.get("format_version")
    if not isinstance(version, int) or version > 1:
        raise ConfigError(f"{path}: manifest format_version {version!r} is not one this ppodd reads (1); "
                          "upgrade ppodd or submit into another folder")
    return data


def write_manifest(out: Path, manifest: dict) -> Path:
    """Replace `<out>/manifest.json` atomically, so a reader never sees half of it."""
    path = Path(out) / MANIFEST
    _write_json(path, manifest)
    return path


def record_submission(out: Path, cells: list[Cell], cluster: str, opts: SlurmOptions | None,
                      tasks: list[dict], skipped: list[str], argv: list[str],
                      container: Container | None = None) -> dict:
    """Add one submission (its array map and job ids) and its cells to the manifest; return it."""
    manifest = read_manifest(out)
    for c in cells:
        manifest["cells"][c.name] = {"file": c.path.name, "overrides": list(c.overrides), "config": c.config}
    submission = {"time": _now(), "cluster": cluster, "command": argv, "host": socket.gethostname(),
                  "ppodd_version": ppodd.__version__, "submitit_version": submitit.__version__,
                  "python": sys.executable, "log_folder": LOG_FOLDER,
                  "container": {"image": str(container.image), "binds": list(container.binds)} if container else None,
                  "slurm": executor_parameters(opts) if opts and cluster == "slurm" else None,
                  "tasks": tasks, "skipped": skipped}
    manifest["submissions"].append(submission)
    write_manifest(out, manifest)
    return submission


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
        with executor.batch():
            jobs = [executor.submit(CellTask(c.config, str(c.path))) for c in chunk]
        for index, (cell, job) in enumerate(zip(chunk, jobs)):
            tasks.append({"array_index": index, "job_id": str(job.job_id), "cell": cell.name})
    return tasks


def run_local(cells: list[Cell], workers: int, echo) -> None:
    """Run the cells on this machine, `workers` at a time, reporting each as it ends."""
    started = time.monotonic()

    def report(n: int, cell: Cell, error: BaseException | None) -> None:
        what = "done" if error is None else f"failed: {(str(error).splitlines() or [''])[0]}"
        echo(f"[{n}/{len(cells)}] {cell.name} {what} ({time.monotonic() - started:.0f} s)")

    if workers <= 1:
        for n, cell in enumerate(cells, 1):
            try:
                CellTask(cell.config, str(cell.path), bar=None)()
                report(n, cell, None)
            except PpoddError as e:
                report(n, cell, e)
        return
    import concurrent.futures as cf
    import multiprocessing

    # spawn, not fork: a forked child would inherit torch's thread pools in an unknown state.
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(CellTask(c.config, str(c.path))): c for c in cells}
        for n, future in enumerate(cf.as_completed(futures), 1):
            error = future.exception()
            if error is not None and not isinstance(error, PpoddError):
                raise error
            report(n, futures[future], error)


def run_debug(cells: list[Cell], out: Path) -> None:
    """Run the cells in this process through submitit's DebugExecutor (for stepping through a task)."""
    executor = submitit.DebugExecutor(folder=Path(out).absolute() / LOG_FOLDER / "debug")
    for cell in cells:
        executor.submit(CellTask(cell.config, str(cell.path))).result()


# --- status ------------------------------------------------------------------------------------


@dataclass
class CellStatus:
    """Where one cell stands, as `ppodd status` shows it."""

    cell: str
    state: str
    job_id: str | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)


def _latest_tasks(manifest: dict) -> dict[str, tuple[dict, dict]]:
    latest = {}
    for sub in manifest["submissions"]:
        for task in sub["tasks"]:
            latest[task["cell"]] = (task, sub)
    return latest


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cell_statuses(out: Path, queue: dict[str, str] | None) -> list[CellStatus]:
    """The state of every cell in the manifest, from the files plus one squeue listing (`queue`).

    done: a complete result file; failed: the task wrote its reason, or its job left the queue
    without a result; requeued / running / pending: the task's record and the queue; incomplete:
    not done and no longer running anywhere (rerun `submit` to resume it).
    """
    from ppodd.storage.runfile import StoreError, read_summary

    out = Path(out)
    manifest = read_manifest(out)
    latest = _latest_tasks(manifest)
    rows = []
    for name, info in manifest["cells"].items():
        task, sub = latest.get(name, ({}, {}))
        job = task.get("job_id")
        path = out / info["file"]
        try:
            summary = read_summary(path)
            acc = summary.get("final_accuracy")
            rows.append(CellStatus(name, "done", job, f"accuracy {acc:.2f}" if isinstance(acc, float) else ""))
            continue
        except StoreError as e:
            unreadable = "" if e.reason == "missing" else f"result {e.reason}; "
        try:
            record = json.loads(state_path(path).read_text())
        except (OSError, ValueError):
            record = {}
        slurm = sub.get("cluster") == "slurm"
        queued = queue.get(job) if (slurm and queue is not None and job) else None
        restarts = record.get("restarts", 0)
        if record.get("state") == "failed":
            rows.append(CellStatus(name, "failed", job, unreadable + record.get("error", "")))
        elif queued is not None:
            was_requeued = record.get("state") == "requeued" or restarts > 0
            if queued in ("RUNNING", "COMPLETING"):
                rows.append(CellStatus(name, "running", job, f"{restarts} requeue(s)" if restarts else ""))
            else:
                rows.append(CellStatus(name, "requeued" if was_requeued else "pending", job, queued.lower()))
        elif slurm and queue is not None and job:
            log = out / LOG_FOLDER / job / f"{job}_0_log.err"
            rows.append(CellStatus(name, "failed", job, f"{unreadable}job left the queue without a result; see {log}"))
        elif record.get("state") == "running" and (slurm or (record.get("host") == socket.gethostname()
                                                              and _pid_alive(int(record.get("pid", 0))))):
            rows.append(CellStatus(name, "running", job, "slurm unreachable" if slurm and queue is None else ""))
        elif record or path.with_suffix(".ckpt").exists() or unreadable:
            rows.append(CellStatus(name, "incomplete", job, unreadable + "not running; rerun submit to resume"))
        else:
            rows.append(CellStatus(name, "pending", job, "slurm unreachable" if slurm and queue is None else ""))
    return rows


def status_table(rows: list[CellStatus]) -> str:
    """The status rows as an aligned text table with a count per state."""
    width = max([len(r.cell) for r in rows] + [4])
    lines = [f"{'state':10}  {'cell':{width}}  {'job':12}  detail"]
    lines += [f"{r.state:10}  {r.cell:{width}}  {r.job_id or '-':12}  {r.detail}" for r in rows]
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no cells")
    return "\n".join(lines)
