"""Progress of long work: a one-line bar on a terminal, structlog JSON events otherwise.

Batch jobs have no terminal, so there every event becomes one JSON line (cell, stage, epoch,
loss, accuracy, seconds) that `ppodd status` and users can grep.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import structlog


def configure_logging(stream: TextIO | None = None, *, json_lines: bool | None = None,
                      copy: TextIO | None = None) -> None:
    """Send structlog events to `stream` (stderr) as JSON lines, or as key=value text on a tty.

    With `copy`, every event also goes there as a JSON line, the outer steps that a progress bar
    draws instead of printing included (a local cell's own log file).
    """
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    copier = [] if copy is None else [_Copy(copy)]
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    *copier, renderer],
        # Debug events are the bar's outer steps, for the copy only.
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO if copy is None else logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


class _Copy:
    """A structlog processor that writes each event to a file as a JSON line, and passes on
    all but the debug ones."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.render = structlog.processors.JSONRenderer()

    def __call__(self, logger: Any, name: str, event: dict) -> dict:
        self.file.write(self.render(logger, name, dict(event)) + "\n")
        self.file.flush()
        if event.get("level") == "debug":
            raise structlog.DropEvent
        return event


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Reports outer steps of one run: a redrawn bar on a terminal, or an event per step."""

    def __init__(self, total_steps: int, done_steps: int, log: Any, stream: TextIO | None = None,
                 bar: bool | None = None) -> None:
        self.total = total_steps
        self.start_done = done_steps
        self.start = time.monotonic()
        self.log = log
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar

    def eta(self, done: int) -> float:
        """Seconds left at the pace of this process so far (resumed steps excluded)."""
        rate = (time.monotonic() - self.start) / max(1, done - self.start_done)
        return rate * (self.total - done)

    def step(self, done: int, **fields: Any) -> None:
        """Record that `done` of the total outer steps are finished, with their numbers."""
        if self.bar:
            width = 24
            filled = int(width * done / max(1, self.total))
            text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {text} "
                              f"eta {_clock(self.eta(done))} ")
            self.stream.flush()
            self.log.debug("outer_step", step=done, total=self.total, **fields)  # a log file's copy only
        else:
            self.log.info("outer_step", step=done, total=self.total, eta_s=round(self.eta(done), 1), **fields)

    def event(self, name: str, **fields: Any) -> None:
        """A milestone (evaluation, stage end, checkpoint) on its own line."""
        if self.bar:
            self.stream.write("\n")
        self.log.info(name, **fields)
