"""Replacing a file atomically: a reader sees the old file, the new one, or none, never half.

The one writer of every file ppodd leaves behind: run files and checkpoints (durable: fsynced
before and after the rename), cached data and ZCA matrices, manifests, state records, tables and
figures. The temporary file is `.<name>.<pid>.tmp` beside the target, so a cell that holds its
lock can recognise and remove what a killed writer left.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ppodd.errors import PpoddError, describe


class WriteError(PpoddError):
    """A file could not be written; the file it was to replace, if any, is intact."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot write {path}: {reason}")


def temporary_name(path: Path) -> Path:
    """The name this process writes `path` under before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def leftover_temporaries(path: Path) -> list[Path]:
    """Temporary files that writers of `path`, of any process, left beside it."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def write_atomic(path: Path, write: Callable[[Path], object], *, durable: bool = False) -> Path:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it onto `path`.

    `durable` also fsyncs the file before the rename and the folder after it, so a finished
    result survives a node crash. On any exception, a preemption's KeyboardInterrupt or
    SystemExit included, the temporary file is removed; an OSError or RuntimeError (torch's and
    h5py's word for a short write) becomes a WriteError naming `path` and the reason.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # the folder itself may be what failed
            tmp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):
            raise WriteError(path, describe(err)) from None
        raise
    if durable:
        with contextlib.suppress(OSError):  # some file systems refuse to fsync a folder
            _fsync(path.parent)
    return path


def write_text(path: Path, text: str) -> Path:
    """`text` as UTF-8 at `path`, atomically, creating the folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(path, describe(err)) from None
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: object) -> Path:
    """`data` as indented JSON at `path`, atomically."""
    return write_text(path, json.dumps(data, indent=1) + "\n")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
