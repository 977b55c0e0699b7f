"""A cell's task logs, found through the manifest: `ppodd logs`, and the log tail `status` reads.

An array task logs to submitit's `OUT/logs/J_N/J_N_0_log.err` (its structlog JSON lines, Python
tracebacks, and what slurmstepd says when it kills the task); a requeued task appends to the same
file. A cell run here logs to `OUT/logs/local/CELL.log`, every attempt appended. Either way each
attempt starts with the task's `task_start` event, which is where a log splits into attempts.
A cell resubmitted later gets a new array task, so its attempts span several files, oldest first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ppodd.cell.identity import CellFiles
from ppodd.cluster.local import local_log
from ppodd.cluster.submission import LOG_FOLDER, cancelled_jobs, latest_tasks
from ppodd.errors import ConfigError, PpoddError
from ppodd.storage.manifest import MANIFEST, read_manifest
from ppodd.storage.runfile import StoreError, read_header

TASK_START = '"event": "task_start"'
# `status` reads at most this much of the end of a log: the newest attempt's last words.
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class TaskLog:
    """One log file of a cell, and the Slurm task that wrote it (None when run here)."""

    path: Path
    job_id: str | None


def task_log(out: Path, name: str, task: dict, sub: dict) -> TaskLog:
    """Where the task of cell `name` in submission `sub` logs."""
    job = task.get("job_id")
    if sub.get("cluster") == "slurm" and job:
        return TaskLog(Path(out) / sub.get("log_folder", LOG_FOLDER) / job / f"{job}_0_log.err", job)
    return TaskLog(local_log(out, name), None)


def cell_logs(out: Path, manifest: dict, name: str) -> list[TaskLog]:
    """Every log file of a cell over all submissions, oldest first, each once."""
    logs: list[TaskLog] = []
    for sub in manifest["submissions"]:
        for task in sub["tasks"]:
            log = task_log(out, name, task, sub) if task["cell"] == name else None
            if log is not None and log not in logs:
                logs.append(log)
    return logs


def split_attempts(text: str) -> list[str]:
    """The parts of a log each attempt wrote; lines before the first `task_start` belong to the first."""
    parts: list[list[str]] = [[]]
    started = False
    for line in text.splitlines(keepends=True):
        if TASK_START in line:
            if started:
                parts.append([])
            started = True
        parts[-1].append(line)
    return ["".join(part) for part in parts]


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    """The last `size` bytes of a file as text, from its first whole line ('' when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            length = f.tell()
            f.seek(max(0, length - size))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text.split("\n", 1)[-1] if length > size else text


def resolve_cell(manifest: dict, spec: str) -> str:
    """The cell a CELL argument names: its file name (with or without .h5), a unique prefix,
    an array index of the latest submission, or a job id such as `123_4`."""
    cells = manifest["cells"]
    stem = Path(spec).name.removesuffix(".h5")
    if stem in cells:
        return stem
    for sub in reversed(manifest["submissions"]):
        hits = [t for t in sub["tasks"] if str(t.get("job_id")) == spec
                or (spec.isdigit() and t["array_index"] == int(spec))]
        if len(hits) == 1:
            return hits[0]["cell"]
        if len(hits) > 1:
            raise ConfigError(f"CELL {spec!r}: array index of {len(hits)} arrays (jobs "
                              f"{', '.join(str(t['job_id']) for t in hits)}); give the job id or the cell name")
    matches = [name for name in cells if name.startswith(stem)] if stem else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"CELL {spec!r}: matches {len(matches)} cells ({', '.join(matches[:3])}"
                          f"{', ...' if len(matches) > 3 else ''}); give more of the name")
    raise ConfigError(f"CELL {spec!r}: no such cell; allowed: a cell's file name or a unique prefix of it, "
                      f"an array index or a job id (`ppodd status` lists them)")


def read_grid(out: Path) -> dict:
    """The manifest of a results folder; ConfigError when there is none."""
    if not (Path(out) / MANIFEST).exists():
        raise ConfigError(f"{out}: no {MANIFEST}; `ppodd submit --out {out}` writes it")
    return read_manifest(out)


def cell_over(out: Path, manifest: dict, name: str) -> bool:
    """True once a cell will log no more: its result is complete, its task recorded a failure,
    or `ppodd cancel` cancelled it. Read from its files and the manifest, never from Slurm."""
    files = CellFiles(Path(out) / manifest["cells"][name]["file"])
    try:
        read_header(files.result)
        return True
    except StoreError:
        pass
    try:
        if json.loads(files.state.read_text()).get("state") == "failed":
            return True
    except (OSError, ValueError, AttributeError):
        pass
    task = latest_tasks(manifest).get(name, ({}, {}))[0]
    return task.get("job_id") in cancelled_jobs(manifest)


def show_log(out: Path, spec: str, echo: Callable[..., None], *, lines: int = 0, attempt: int | None = None,
             every: bool = False, follow: bool = False, interval: float = 1.0) -> None:
    """Print a cell's log: its newest attempt, attempt K, or every attempt; the last `lines` lines
    of each (0: all); with `follow`, then what the newest attempt writes until the cell is over."""
    if lines < 0:
        raise ConfigError(f"--lines: must be >= 0, got {lines}")
    if attempt is not None and (every or attempt < 1):
        raise ConfigError("--attempt: a number >= 1, and not with --all")
    out = Path(out)
    manifest = read_grid(out)
    name = resolve_cell(manifest, spec)
    logs = cell_logs(out, manifest, name)
    if not logs:
        raise PpoddError(f"{name}: never submitted, so no log")
    parts = []
    read = 0  # bytes of the newest file printed or skipped; following starts there
    for log in logs:
        if log.path.exists():
            data = log.path.read_bytes()
            read = len(data) if log == logs[-1] else 0
            parts += [(log, text) for text in split_attempts(data.decode("utf-8", errors="replace"))]
    if not parts and not follow:
        raise PpoddError(f"{name}: no log yet; its task has not started ({logs[-1].path})")
    if attempt is not None and attempt > len(parts):
        raise ConfigError(f"--attempt {attempt}: {name} has {len(parts)} attempt(s)")
    chosen = range(len(parts)) if every else [attempt - 1 if attempt else len(parts) - 1] if parts else []
    for k in chosen:
        log, text = parts[k]
        job = f", job {log.job_id}" if log.job_id else ""
        echo(f"== {log.path} (attempt {k + 1} of {len(parts)}{job}) ==", err=True)
        if lines:
            text = "".join(text.splitlines(keepends=True)[-lines:])
        echo(text, nl=False)
    if follow:
        _follow(logs[-1].path, read, echo, lambda: cell_over(out, read_manifest(out), name), interval)


def _follow(path: Path, position: int, echo: Callable[..., None], over: Callable[[], bool],
            interval: float) -> None:
    """Print what is appended to `path` (which may not exist yet) after byte `position` until
    `over()`, then the rest."""
    while True:
        ended = over()
        if path.exists():
            with open(path, "rb") as f:
                f.seek(position)
                data = f.read()
            position += len(data)
            if data:
                echo(data.decode("utf-8", errors="replace"), nl=False)
        if ended:
            return
        time.sleep(interval)
