"""`ppodd cancel`: cancel a grid's own queued and running array tasks, and nothing else.

The tasks are the job ids the manifest recorded for the grid's cells, kept only when this user's
`squeue` still lists them as queued or running; those are shown, confirmed, cancelled in one
`scancel` call and recorded in the manifest, so `status` shows the cells as cancelled and a later
`submit` runs them again from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ppodd.cluster import slurm
from ppodd.cluster.logs import read_grid, resolve_cell
from ppodd.cluster.submission import latest_tasks, record_cancel
from ppodd.errors import ConfigError, PpoddError


def cancel_grid(out: Path, specs: list[str], yes: bool, confirm: Callable[[str], bool],
                echo: Callable[..., None]) -> dict[str, str]:
    """Cancel the queued and running tasks of the grid's cells (`specs`: CELL arguments as `logs`
    takes them; empty: every cell); job id -> cell of those cancelled."""
    manifest = read_grid(out)
    names = [resolve_cell(manifest, spec) for spec in specs] or list(manifest["cells"])
    ours = {}
    for name, (task, sub) in latest_tasks(manifest).items():
        if name in names and sub.get("cluster") == "slurm" and task.get("job_id"):
            ours[str(task["job_id"])] = name
    if not ours:
        raise ConfigError(f"{out}: none of these {len(names)} cell(s) was submitted to Slurm; "
                          "a local run stops with Ctrl-C")
    queue = slurm.queue_states()
    if queue is None:
        raise PpoddError("no Slurm controller answers squeue; nothing was cancelled")
    targets = {job: name for job, name in ours.items() if job in queue and queue[job].queued}
    if not targets:
        echo(f"nothing to cancel: none of the {len(ours)} task(s) of these cells is queued or running")
        return {}
    echo(f"{len(targets)} task(s) of {out} to cancel:")
    for job, name in targets.items():
        echo(f"  {job:12}  {queue[job].state.lower():10}  {name}")
    if not yes and not confirm(f"cancel these {len(targets)} task(s)?"):
        raise PpoddError("nothing was cancelled")
    said = slurm.scancel(list(targets))
    if said:
        echo(said, err=True)
    record_cancel(out, targets)
    echo(f"cancelled {len(targets)} task(s); `ppodd submit` again resumes them from their checkpoints")
    return targets
