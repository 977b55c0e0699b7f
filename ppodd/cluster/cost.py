"""What a grid has cost in device-hours, and how long the rest will take.

A cell's device-hours are wall time × GPUs (a task without GPUs counts as one device), summed over
its attempts: from sacct's records when the cluster keeps accounting; else from the attempts
its tasks wrote in the cell's state record (an attempt killed without a word ends at the
record's last heartbeat, its modification time); for a finished cell, the seconds its run file
records (every attempt's work, carried through its checkpoints). The hours still to go are
estimated from the finished cells of the same method, and the finish time from the devices
running now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ppodd.cluster.accounting import SlurmJob

# Written by the task into the state record this often, so a killed attempt's end is known to a minute.
HEARTBEAT_S = 60.0


def parse_time(text: str | None) -> dt.datetime | None:
    """A time the state record wrote (ISO 8601, UTC), or None."""
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def attempts_seconds(attempts: Sequence[dict], *, now: dt.datetime, running: bool,
                     last_alive: dt.datetime | None) -> float:
    """Device-seconds of the attempts a state record lists (each {started, stopped?, gpus}).

    An attempt without `stopped` ends at the next one's start, or, for the last one, now while
    it runs and at `last_alive` (its last heartbeat) once it is gone.
    """
    total = 0.0
    for i, attempt in enumerate(attempts):
        start = parse_time(attempt.get("started"))
        if start is None:
            continue
        end = parse_time(attempt.get("stopped"))
        if end is None and i + 1 < len(attempts):
            end = parse_time(attempts[i + 1].get("started"))
        if end is None:
            end = now if running else (last_alive or start)
        total += max(0.0, (end - start).total_seconds()) * max(1, int(attempt.get("gpus") or 0))
    return total


def sacct_seconds(jobs: Iterable[SlurmJob]) -> float:
    """Device-seconds of every attempt sacct lists for a cell's tasks."""
    return sum(a.seconds * max(1, a.gpus) for job in jobs for a in job.attempts)


@dataclass(frozen=True)
class GridCost:
    """Device-hours used, estimated to go for the queued cells, and the expected finish."""

    used: float
    to_go: float | None          # None: no finished cell to estimate from
    queued: int
    estimated_from: int
    running_devices: int
    finish: dt.datetime | None


def grid_cost(rows: Sequence, now: dt.datetime) -> GridCost:
    """The grid's totals from its status rows (state, device_hours, devices, method)."""
    done: dict[str, list[float]] = {}
    for r in rows:
        if r.state == "done" and r.device_hours > 0:
            done.setdefault(r.method, []).append(r.device_hours)
    every = [h for hours in done.values() for h in hours]
    queued = [r for r in rows if r.state in ("pending", "running", "requeued")]
    to_go = None
    if every:
        to_go = 0.0
        for r in queued:
            same = done.get(r.method) or every
            to_go += max(0.0, sum(same) / len(same) - r.device_hours)
    devices = sum(r.devices for r in rows if r.state == "running")
    finish = now + dt.timedelta(hours=to_go / devices) if to_go is not None and devices else None
    return GridCost(sum(r.device_hours for r in rows), to_go, len(queued), len(every), devices, finish)


def cost_line(cost: GridCost) -> str:
    """The grid's cost as the status table's last line."""
    line = f"device-hours: {cost.used:.2f} used"
    if not cost.queued:
        return line
    if cost.to_go is None:
        return line + f"; {cost.queued} queued cell(s), hours to go unknown until a cell finishes"
    line += (f"; about {cost.to_go:.2f} to go for {cost.queued} queued cell(s) "
             f"(from {cost.estimated_from} finished)")
    if cost.finish is None:
        return line + "; no task running now"
    return line + (f"; expected finish {cost.finish.strftime('%Y-%m-%d %H:%M')} UTC at {cost.running_devices} "
                   "device(s) running")


def close_attempts(attempts: Sequence[dict], last_alive: dt.datetime | None) -> list[dict]:
    """The attempts with the last one, if it never said when it stopped, ended at `last_alive`
    (the record's last heartbeat), or at its start when that is unknown."""
    out = [dict(a) for a in attempts]
    if out and not out[-1].get("stopped"):
        out[-1]["stopped"] = (last_alive.isoformat(timespec="seconds") if last_alive
                              else out[-1].get("started"))
    return out
