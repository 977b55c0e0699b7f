"""Recording in the manifest what was done to a grid: each submission (its cells, array map, job
ids and where it ran) and each `ppodd cancel`."""

from __future__ import annotations

import datetime as dt
import socket
import sys

import submitit

import ppodd
from ppodd.cluster.container import Container
from ppodd.cluster.grid import Cell
from ppodd.storage.manifest import read_manifest, write_manifest

# Slurm's task logs, under the results folder: logs/<job id>/.
LOG_FOLDER = "logs"


def now() -> str:
    """The current UTC time as the manifest and state records write it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def record_submission(out, cells: list[Cell], cluster: str, slurm: dict | None, tasks: list[dict],
                      skipped: list[str], argv: list[str], container: Container | None = None,
                      accounting: bool | None = None) -> dict:
    """Add one submission (its array map, job ids, `slurm` executor parameters, and whether the
    cluster keeps accounting for `sacct`) and its cells to the manifest; return the submission."""
    manifest = read_manifest(out)
    for c in cells:
        manifest["cells"][c.name] = {"file": c.path.name, "overrides": list(c.overrides), "config": c.config}
    submission = {"time": now(), "cluster": cluster, "command": argv, "host": socket.gethostname(),
                  "ppodd_version": ppodd.__version__, "submitit_version": submitit.__version__,
                  "python": sys.executable, "log_folder": LOG_FOLDER,
                  "container": {"image": str(container.image), "binds": list(container.binds)} if container else None,
                  "slurm": slurm, "accounting": accounting, "tasks": tasks, "skipped": skipped}
    manifest["submissions"].append(submission)
    write_manifest(out, manifest)
    return submission


def latest_tasks(manifest: dict) -> dict[str, tuple[dict, dict]]:
    """Cell name → (its task in the latest submission that ran it, that submission)."""
    latest = {}
    for sub in manifest["submissions"]:
        for task in sub["tasks"]:
            latest[task["cell"]] = (task, sub)
    return latest


def record_cancel(out, jobs: dict[str, str]) -> None:
    """Add one `ppodd cancel` (job id -> cell of every task it cancelled) to the manifest."""
    manifest = read_manifest(out)
    manifest.setdefault("cancels", []).append({"time": now(), "host": socket.gethostname(), "jobs": jobs})
    write_manifest(out, manifest)


def cancelled_jobs(manifest: dict) -> dict[str, str]:
    """Job id -> when `ppodd cancel` cancelled it."""
    return {job: cancel["time"] for cancel in manifest.get("cancels", []) for job in cancel["jobs"]}
