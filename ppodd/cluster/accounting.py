"""What Slurm says about a grid's array tasks, parsed from one `sacct` or one `squeue` listing.

`sacct` (when the cluster keeps accounting) knows every attempt of every task: its end state,
wall time and GPUs. `squeue --states all` knows only the jobs the controller still holds: queued
and running ones, and those that ended in the last few minutes (`MinJobAge`). Both are read into
the same `SlurmJob`, keyed by the task's job id (`123_4`), so `status` need not care which one
answered. Pure parsing: the commands themselves are run by `cluster.slurm`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# States in which a job is over; any other state (PENDING, RUNNING, COMPLETING, REQUEUED,
# SUSPENDED, ...) means it is still in the queue.
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                      "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"})

SQUEUE_FORMAT = "%i|%T|%r"
SACCT_FIELDS = "JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason"


@dataclass(frozen=True)
class Attempt:
    """One run of an array task as sacct records it: its state, wall seconds and GPUs."""

    state: str
    seconds: float = 0.0
    gpus: int = 0
    exit_code: str = ""
    step_states: tuple[str, ...] = ()   # of its steps (batch, srun): an OOM often shows only there


@dataclass
class SlurmJob:
    """One array task (`123_4`): its current state, Slurm's reason, and sacct's attempts."""

    state: str
    reason: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def queued(self) -> bool:
        """Still pending, running or about to be requeued."""
        return self.state not in TERMINAL


def base_state(text: str) -> str:
    """`CANCELLED by 0` -> `CANCELLED`: the state word without its annotation."""
    return (text.split() or [""])[0].rstrip("+").upper()


def expand_ids(job_id: str) -> list[str]:
    """The task ids of a job id as Slurm prints it: `123_4`, or a pending array's `123_[0-3,7%2]`."""
    match = re.fullmatch(r"(\d+)_\[([^\]]*)\]", job_id)
    if not match:
        return [job_id]
    base, spec = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in filter(None, spec.split(",")):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part)
        if bounds:
            lo, hi, step = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1)), int(bounds.group(3) or 1)
            ids += [f"{base}_{i}" for i in range(lo, hi + 1, step)]
    return ids


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """`squeue --noheader --array --states all --format '%i|%T|%r'` output as jobs by id."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        for job in expand_ids(parts[0]):
            jobs[job] = SlurmJob(base_state(parts[1]), parts[2] if len(parts) > 2 else "")
    return jobs


def gpus_of(tres: str) -> int:
    """GPUs in a TRES list such as `billing=1,cpu=2,gres/gpu=1,mem=4G,node=1` (0 when none)."""
    match = re.search(r"(?:^|,)gres/gpu(?::[^=,]*)?=(\d+)", tres)
    return int(match.group(1)) if match else 0


def parse_sacct(text: str) -> dict[str, SlurmJob]:
    """`sacct --noheader --parsable2 --duplicates --format JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason`
    output as jobs by id, with every attempt (requeues come as repeated rows of one id, oldest first)
    and the states of each attempt's steps (`123_4.batch`, `123_4.0`)."""
    jobs: dict[str, SlurmJob] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 6 or not parts[0]:
            continue
        job_id, state, exit_code, elapsed, tres, reason = parts[:6]
        main, dot, _ = job_id.partition(".")
        if dot:  # a step of the newest attempt of its job
            job = jobs.get(main)
            if job is not None and job.attempts:
                last = job.attempts[-1]
                job.attempts[-1] = Attempt(last.state, last.seconds, last.gpus, last.exit_code,
                                           last.step_states + (base_state(state),))
            continue
        attempt = Attempt(base_state(state), float(elapsed) if elapsed.isdigit() else 0.0, gpus_of(tres), exit_code)
        for task in expand_ids(main):
            job = jobs.setdefault(task, SlurmJob(attempt.state))
            job.state, job.reason = attempt.state, reason if reason != "None" else ""
            job.attempts.append(attempt)
    return jobs
