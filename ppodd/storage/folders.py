"""Results folders: can a cell write here, and how much room is left."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ppodd.errors import ConfigError, PpoddError


def free_bytes(folder: Path) -> int | str:
    """Free bytes in `folder`, or '?' when the file system cannot say."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return "?"



def check_creatable(folder: Path) -> None:
    """ConfigError when `folder` can neither exist nor be created: a file stands in its path, or
    its nearest existing parent takes no new entry. Creates nothing."""
    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise ConfigError(f"cannot create output folder {folder}: {existing} is a file")
    if existing != folder and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create output folder {folder}: {existing} is not writable")


def check_writable(folder: Path, need_bytes: int) -> None:
    """Nothing when `folder` exists (or was created), takes a new file and has need_bytes free.

    Raises PpoddError naming the folder, and for space the free and needed bytes, so a run
    fails before its work rather than at the final write; a folder that cannot be created at
    all (under a file, or in a folder it may not write) is bad input, a ConfigError.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create output folder {folder}: {err.strerror or err}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ppodd-write-check-",
                                         suffix=".tmp") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as err:
        raise PpoddError(f"cannot write in output folder {folder}: {err.strerror or err}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise PpoddError(f"not enough space in output folder {folder}: {free} bytes free, "
                         f"{need_bytes} bytes needed")