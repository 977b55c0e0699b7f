"""Replacing a small file atomically: a reader sees the old file, the new one, or none, never half.

HDF5 results (`store.write_run`) and checkpoints (`checkpoint.save_checkpoint`) follow the same
scheme with an fsync of their own; this is the plain form for text, JSON and figures.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ppodd.errors import PpoddError, describe


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it onto `path`.

    A failure removes the temporary file and raises PpoddError naming `path` and the reason.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # the folder itself may be what failed
            tmp.unlink(missing_ok=True)
        raise PpoddError(f"cannot write {path}: {describe(err)}") from None
    return path
