"""Where every cell of a results folder stands, why a task died and what each cell has cost,
from its files and one look at Slurm.

The files: the manifest (cells, tasks, cancels), each result's header, each cell's state record
(`CELL.state.json`, written by its task) and, for a task that died, the tail of its log. Slurm:
whatever one `sacct` or `squeue` call said (`slurm.grid_jobs`), asked once per `ppodd status`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ppodd.cell.identity import CellFiles
from ppodd.cluster import reasons, slurm
from ppodd.cluster.accounting import RUNNING, SlurmJob
from ppodd.cluster.cost import attempts_seconds, cost_line, grid_cost, sacct_seconds
from ppodd.cluster.logs import read_grid, split_attempts, tail, task_log
from ppodd.cluster.submission import cancelled_jobs, latest_tasks
from ppodd.errors import ConfigError
from ppodd.storage.manifest import read_manifest
from ppodd.storage.runfile import StoreError, read_header

STATES = ("pending", "running", "requeued", "done", "failed", "cancelled", "incomplete")


@dataclass
class CellStatus:
    """Where one cell stands, as `ppodd status` shows it."""

    cell: str
    state: str
    job_id: str | None = None
    detail: str = ""
    device_hours: float = 0.0
    devices: int = 1             # GPUs of its task (at least one device)
    method: str = ""
    requeues: int = 0

    def as_json(self) -> dict:
        """The row as `status --format json` prints it."""
        return {"cell": self.cell, "state": self.state, "job_id": self.job_id, "detail": self.detail,
                "device_hours": round(self.device_hours, 4), "requeues": self.requeues}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(files: CellFiles) -> tuple[dict, dt.datetime | None]:
    """The cell's state record and its last heartbeat (the file's modification time)."""
    try:
        record = json.loads(files.state.read_text())
        alive = dt.datetime.fromtimestamp(files.state.stat().st_mtime, dt.timezone.utc)
    except (OSError, ValueError):
        return {}, None
    return (record, alive) if isinstance(record, dict) else ({}, None)


def _devices(sub: dict) -> int:
    return max(1, int((sub.get("slurm") or {}).get("gpus_per_node") or 0)) if sub.get("cluster") == "slurm" else 1


def grid_status(out: Path, format_: str = "table") -> str:
    """What `ppodd status` prints: the table with the grid's cost, or the rows as JSON."""
    if format_ not in ("table", "json"):
        raise ConfigError(f"--format {format_!r}: allowed table, json")
    now = dt.datetime.now(dt.timezone.utc)
    rows = cell_statuses(out, slurm.grid_jobs(read_grid(out)), now)
    if format_ == "json":
        return json.dumps([r.as_json() for r in rows], indent=1)
    return status_table(rows, now)


def cell_statuses(out: Path, queue: Mapping[str, SlurmJob | str] | None,
                  now: dt.datetime | None = None) -> list[CellStatus]:
    """The state, reason and device-hours of every cell in the manifest, from the files plus what
    one Slurm query said (`queue`: job id -> its SlurmJob, or just its state; None: not asked).

    done: a complete result file; cancelled: by `ppodd cancel`, or by scancel outside ppodd;
    failed: the task wrote its reason, or its job left the queue without a result (the reason
    from Slurm, else the task's log); requeued / running / pending: the task's record and the
    queue; incomplete: not done and no longer running anywhere (rerun `submit` to resume it).
    """
    out = Path(out)
    now = now or dt.datetime.now(dt.timezone.utc)
    manifest = read_manifest(out)
    latest = latest_tasks(manifest)
    cancelled = cancelled_jobs(manifest)
    jobs = None if queue is None else {k: v if isinstance(v, SlurmJob) else SlurmJob(v) for k, v in queue.items()}
    job_ids: dict[str, list[str]] = {}
    for sub in manifest["submissions"]:
        for t in sub["tasks"]:
            job_ids.setdefault(t["cell"], []).append(str(t.get("job_id")))
    rows = []
    for name, info in manifest["cells"].items():
        task, sub = latest.get(name, ({}, {}))
        files = CellFiles(out / info["file"])
        try:
            header, unreadable = read_header(files.result), ""
        except StoreError as e:
            header, unreadable = None, "" if e.reason == "missing" else f"result {e.reason}; "
        record, alive = _record(files) if header is None else ({}, None)
        if header is not None:
            acc = header["final_accuracy"]
            row = CellStatus(name, "done", task.get("job_id"), f"accuracy {acc:.2f}" if isinstance(acc, float) else "")
        else:
            row = _status(out, name, info, task, sub, record, unreadable, jobs, cancelled)
        row.devices, row.method = _devices(sub), (info.get("config") or {}).get("method", "")
        accounted = [jobs[j] for j in job_ids.get(name, []) if jobs and j in jobs and jobs[j].attempts]
        if accounted:
            row.device_hours = sacct_seconds(accounted) / 3600
        elif header is not None:
            seconds = header.get("seconds")
            ok = isinstance(seconds, float) and math.isfinite(seconds)
            row.device_hours = seconds * row.devices / 3600 if ok else 0.0
        else:
            attempts = record.get("attempts") if isinstance(record.get("attempts"), list) else []
            row.device_hours = attempts_seconds(attempts, now=now, running=row.state == "running",
                                                last_alive=alive) / 3600
        rows.append(row)
    return rows


def _status(out: Path, name: str, info: dict, task: dict, sub: dict, record: dict, unreadable: str,
            jobs: dict | None, cancelled: dict) -> CellStatus:
    """The row of a cell without a complete result."""
    job = task.get("job_id")
    files = CellFiles(out / info["file"])
    state = record.get("state")
    requeues = int(record.get("restarts") or 0)
    if job and job in cancelled:
        return CellStatus(name, "cancelled", job, f"by ppodd cancel at {cancelled[job]}; submit again to resume",
                          requeues=requeues)
    slurm = sub.get("cluster") == "slurm"
    known = jobs.get(job) if (slurm and jobs is not None and job) else None
    if known is not None and known.attempts:
        requeues = max(requeues, len(known.attempts) - 1)

    log = task_log(out, name, task, sub).path

    def why() -> tuple[str, str]:
        return reasons.why(job=known, error=record.get("error", "") if state == "failed" else "",
                           log_tail=split_attempts(tail(log))[-1], requeues=requeues, config=info.get("config"))

    if state == "failed":
        return CellStatus(name, "failed", job, unreadable + why()[1], requeues=requeues)
    if known is not None and known.queued:
        if known.state in RUNNING:
            return CellStatus(name, "running", job, f"{requeues} requeue(s)" if requeues else "", requeues=requeues)
        detail = ", ".join(filter(None, [known.state.lower(), known.reason,
                                         f"{requeues} requeue(s)" if requeues else ""]))
        was_requeued = state == "requeued" or requeues > 0
        return CellStatus(name, "requeued" if was_requeued else "pending", job, detail, requeues=requeues)
    if slurm and jobs is not None and job:
        cause, reason = why()
        if cause == reasons.CANCELLED:
            return CellStatus(name, "cancelled", job, reason, requeues=requeues)
        return CellStatus(name, "failed", job, unreadable + (reason or f"job left the queue without a result; see {log}"),
                          requeues=requeues)
    if state == "running" and (slurm or (record.get("host") == socket.gethostname()
                                         and _pid_alive(int(record.get("pid", 0))))):
        return CellStatus(name, "running", job, "slurm unreachable" if slurm and jobs is None else "",
                          requeues=requeues)
    if state or files.checkpoint.exists() or unreadable:
        return CellStatus(name, "incomplete", job, unreadable + "not running; rerun submit to resume",
                          requeues=requeues)
    return CellStatus(name, "pending", job, "slurm unreachable" if slurm and jobs is None else "")


def status_table(rows: list[CellStatus], now: dt.datetime | None = None) -> str:
    """The status rows as an aligned text table with a count per state; with `now`, then the
    grid's device-hours used and to go, and its expected finish."""
    width = max([len(r.cell) for r in rows] + [4])
    lines = [f"{'state':10}  {'cell':{width}}  {'job':12}  {'device-h':>8}  detail"]
    lines += [f"{r.state:10}  {r.cell:{width}}  {r.job_id or '-':12}  {r.device_hours:8.2f}  {r.detail}"
              for r in rows]
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no cells")
    if now is not None:
        lines.append(cost_line(grid_cost(rows, now)))
    return "\n".join(lines)
