"""Results folders: can a cell write here, and how much room is left."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ppodd.errors import PpoddError


def free_bytes(folder: Path) -> int | str:
    """Free bytes in `folder`, or '?' when the file system cannot say."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return "?"



def check_writable(folder: Path, need_bytes: int) -> None:
    """Nothing when `folder` exists (or was created), takes a new file and has need_bytes free.

    Raises PpoddError naming the folder, and for space the free and needed bytes, so a run
    fails before its work rather than at the final write.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PpoddError(f"cannot create output folder {folder}: {err.strerror or err}") from None
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