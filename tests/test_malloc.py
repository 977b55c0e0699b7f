import resource

import pytest
import torch

from ppodd.cell.malloc import _glibc, reuse_freed_memory

pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc's mallopt (Linux)")


def _faults_of_repeated_64mb_tensors(times: int) -> int:
    # Allocate, touch and free a 64 MB tensor (above glibc's largest mmap threshold) `times`
    # times; the minor page faults counted are the kernel mapping fresh zeroed pages.
    torch.ones(16 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        torch.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_reuse_freed_memory_serves_large_blocks_again_and_hands_them_back_on_exit():
    outside = _faults_of_repeated_64mb_tensors(10)
    with reuse_freed_memory() as active:
        _faults_of_repeated_64mb_tensors(10)   # the heap grows to hold the block once
        inside = _faults_of_repeated_64mb_tensors(10)
        kept = _resident_bytes()
    handed_back = kept - _resident_bytes()
    # Relative bounds: with transparent huge pages a fresh block takes fewer (larger) faults.
    assert active and outside > 100
    assert inside < outside / 3                # the freed block mostly served again
    assert handed_back > 32 << 20              # the freed 64 MB block left the process on exit
