"""Keeping freed memory for reuse on the CPU, where evaluation allocates the same large tensors
every step.

glibc's malloc serves each block above its mmap threshold (at most 32 MB) with a fresh mmap and
gives it back to the kernel on free, so the next step's block of the same size faults in and
zeroes every page again. The batched evaluation's activations (8 nets × 96 patches × 32 channels
× 32 × 32 floats = 100 MB for ConvNet-32) are all above it; it cost the batched step 23 % of its
time (bench/README.md). Inside `reuse_freed_memory` large blocks come from the heap and stay
there when freed. GPU memory is not concerned (PyTorch caches it already).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (malloc.h) and glibc's own defaults for the state restored on exit: the
# largest mmap threshold its dynamic rule reaches on 64-bit, and twice that as trim threshold.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_KEEP = 2**31 - 1
_DEFAULT_MMAP = 32 << 20
_DEFAULT_TRIM = 64 << 20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    # The C library the process already has loaded (dlopen of NULL); looked up once.
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, freed large blocks stay in the process for the next allocation; on exit
    the memory kept is handed back (malloc_trim) and the thresholds are set to glibc's usual
    values. Yields whether it took effect (False where the C library is not glibc)."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    libc.mallopt(M_MMAP_THRESHOLD, _KEEP)
    libc.mallopt(M_TRIM_THRESHOLD, _KEEP)
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, _DEFAULT_MMAP)
        libc.mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        hand_back_freed_memory()


def hand_back_freed_memory() -> None:
    """Return the memory malloc holds free to the kernel (malloc_trim), so that the RSS is what
    is in use; nothing where the C library is not glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
