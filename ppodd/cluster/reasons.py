"""Why a task died, in one line: out of memory, time limit, node failure, preemption, cancel, or
the Python error's last line.

Three witnesses, best first: what Slurm says of the task (`cluster.accounting`), what the task
wrote in the cell's state record before it stopped, and the tail of its log, where slurmstepd
writes `CANCELLED ... DUE TO TIME LIMIT` and a Python traceback ends with the error. Pure
functions over text; nobody here asks Slurm or opens a file.
"""

from __future__ import annotations

import re

from ppodd.cluster.accounting import SlurmJob

OOM = "out of memory"
TIME_LIMIT = "time limit"
NODE_FAILURE = "node failure"
PREEMPTED = "preempted"
CANCELLED = "cancelled"

_SLURM_STATES = {"OUT_OF_MEMORY": OOM, "TIMEOUT": TIME_LIMIT, "DEADLINE": TIME_LIMIT, "NODE_FAIL": NODE_FAILURE,
                 "BOOT_FAIL": NODE_FAILURE, "PREEMPTED": PREEMPTED, "CANCELLED": CANCELLED}
# What slurmstepd, the kernel's OOM killer and submitit write into a task's log.
_LOG_PATTERNS = [
    (re.compile(r"DUE TO TIME LIMIT|timed-out too many times"), TIME_LIMIT),
    (re.compile(r"DUE TO NODE FAIL|NODE_FAIL"), NODE_FAILURE),
    (re.compile(r"DUE TO PREEMPTION"), PREEMPTED),
    (re.compile(r"oom[-_ ]kill|Out Of Memory|OUT_OF_MEMORY|out-of-memory handler", re.IGNORECASE), OOM),
    (re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+( by \d+)? \*\*\*|\*\*\* STEP \S+ ON \S+ CANCELLED AT \S+ \*\*\*"),
     CANCELLED),
]
# A Python error that means the device or the host ran out of memory.
_OOM_ERROR = re.compile(r"OutOfMemoryError|CUDA out of memory|MemoryError|DefaultCPUAllocator: can't allocate")


def oom_hint(config: dict) -> str:
    """What to change in a cell that ran out of memory, from its config, with what each saves."""
    distill = config.get("distill", {}) if isinstance(config, dict) else {}
    tips = []
    if not distill.get("checkpoint_window"):
        tips.append("--set distill.checkpoint_window=true keeps each unrolled step's weights instead of the "
                    "window's graph (same gradient; 65 % less peak memory at window 10, more at larger windows; "
                    "a new cell name)")
    batch = int(distill.get("real_subbatch") or distill.get("real_batch") or 0)
    if batch > 1:
        tips.append(f"--set distill.real_subbatch={max(1, batch // 2)} holds the real batch's activations for "
                    f"{max(1, batch // 2)} images instead of {batch} (same gradient, same cell)")
    return "; ".join(tips) if tips else "request more memory (--mem) or a larger GPU"


def error_line(log_text: str) -> str:
    """The error line of the last Python traceback in a log ('' when there is none)."""
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if not starts:
        return ""
    for line in lines[starts[-1] + 1:]:
        if line.strip() and not line[0].isspace():
            # `ppodd.errors.PpoddError: ...` -> `PpoddError: ...`, as the state record writes it.
            name, sep, rest = line.partition(":")
            return (name.rsplit(".", 1)[-1] + sep + rest).strip() if " " not in name else line.strip()
    return ""


def log_cause(log_text: str) -> str:
    """The cause slurmstepd or the OOM killer wrote into a log: one of the causes above, or ''."""
    for pattern, cause in _LOG_PATTERNS:
        if pattern.search(log_text):
            return cause
    return ""


def slurm_cause(job: SlurmJob | None) -> str:
    """The cause Slurm gives for a task that ended (an OOM in any of its steps counts), or ''."""
    if job is None:
        return ""
    if job.attempts and "OUT_OF_MEMORY" in job.attempts[-1].step_states:
        return OOM
    return _SLURM_STATES.get(job.state, "")


def error_cause(error: str) -> str:
    """The cause a Python error line stands for (time limit, out of memory), or ''."""
    if "timed-out too many times" in error:
        return TIME_LIMIT
    if _OOM_ERROR.search(error):
        return OOM
    return ""


def describe(cause: str, *, requeues: int = 0, config: dict | None = None, error: str = "") -> str:
    """The one line `status` shows for a cause; `error` is the Python error when there is one."""
    if cause == OOM:
        return f"out of memory{f' ({error})' if error else ''}; {oom_hint(config or {})}"
    if cause == TIME_LIMIT:
        return (f"time limit, after {requeues} requeue(s); raise --time or --max-requeues, "
                "then submit again to resume")
    if cause == NODE_FAILURE:
        return "node failure; submit again to resume from the checkpoint"
    if cause == PREEMPTED:
        return "preempted and not requeued; submit again to resume from the checkpoint"
    if cause == CANCELLED:
        return "cancelled outside ppodd (scancel); submit again to resume from the checkpoint"
    return error


def why(*, job: SlurmJob | None, error: str, log_tail: str, requeues: int, config: dict | None) -> tuple[str, str]:
    """(cause, one line) for a task that died: Slurm's cause, else the recorded error's, else the
    log's; the cause is '' for a plain Python error, and the line '' when nobody says anything."""
    error = error or error_line(log_tail)
    cause = slurm_cause(job) or error_cause(error) or log_cause(log_tail)
    if job is not None and job.attempts:
        requeues = max(requeues, len(job.attempts) - 1)
    if cause == "" and job is not None and job.state == "FAILED" and not error:
        return "", f"failed with exit code {job.attempts[-1].exit_code if job.attempts else '?'}"
    return cause, describe(cause, requeues=requeues, config=config, error=error if cause == OOM else "") or error
