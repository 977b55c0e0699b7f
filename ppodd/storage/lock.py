"""An exclusive lock on one cell, so that two runs of the same cell never write it at once.

The lock is a POSIX record lock (`fcntl.lockf`) on `<result>.lock` beside the result. The kernel
drops it when the holding process ends, however it ends (SIGKILL, OOM, a node crash on NFSv4
once its lease expires), so a crash never leaves a cell locked. POSIX locks, unlike `flock` on some
NFS setups, also exclude processes on other hosts of a shared NFSv4 file system. They exclude
other processes only: one process taking the same lock twice is not refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ppodd.errors import PpoddError, describe


class LockedError(PpoddError):
    """Another process is running the same cell; the CLI exits 1 and the other run goes on."""


@contextlib.contextmanager
def cell_lock(path: Path) -> Iterator[None]:
    """Hold the lock file `path` for the block, or raise LockedError at once naming its holder.

    The file holds `host`, `pid` and `since` of the holder while the block runs and is removed
    when it ends; a file left by a killed holder is simply locked again.
    """
    path = Path(path)
    fd = _acquire(path)
    try:
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()} since {since}\n".encode(), 0)
        yield
    finally:
        # Removed while still held: a process that opened the old file re-checks the inode below.
        path.unlink(missing_ok=True)
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(path: Path) -> int:
    """A descriptor of `path` holding its lock, the file at `path` being the one locked."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise PpoddError(f"cannot create lock file {path}: {describe(err)}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "a process that just started"
            os.close(fd)
            if err.errno in (errno.EACCES, errno.EAGAIN):
                raise LockedError(f"{path.stem}: another run of this cell is writing it (lock {path} held by "
                                  f"{holder}); wait for it to end or stop it, then rerun") from None
            raise PpoddError(f"cannot lock {path}: {describe(err)}") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # the holder removed the file between our open and lock: lock the new one
