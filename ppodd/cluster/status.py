"""Where every cell of a results folder stands, from its files and one look at the Slurm queue."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ppodd.cell.identity import CellFiles
from ppodd.cluster.submission import LOG_FOLDER, latest_tasks
from ppodd.storage.manifest import read_manifest
from ppodd.storage.runfile import StoreError, read_header

STATES = ("pending", "running", "requeued", "done", "failed", "incomplete")


@dataclass
class CellStatus:
    """Where one cell stands, as `ppodd status` shows it."""

    cell: str
    state: str
    job_id: str | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)


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
    out = Path(out)
    manifest = read_manifest(out)
    latest = latest_tasks(manifest)
    rows = []
    for name, info in manifest["cells"].items():
        task, sub = latest.get(name, ({}, {}))
        job = task.get("job_id")
        files = CellFiles(out / info["file"])
        try:
            acc = read_header(files.result)["final_accuracy"]
            rows.append(CellStatus(name, "done", job, f"accuracy {acc:.2f}" if isinstance(acc, float) else ""))
            continue
        except StoreError as e:
            unreadable = "" if e.reason == "missing" else f"result {e.reason}; "
        try:
            record = json.loads(files.state.read_text())
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
        elif record or files.checkpoint.exists() or unreadable:
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
