"""Named random generators derived from the one run seed (D13)."""

from __future__ import annotations

import hashlib

import torch


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator seeded from the run seed and a name path, e.g. ("step", 2, 14, 3).

    Every random draw of a run comes from one of these (D13), so any step can be replayed on
    resume without storing generator states, and nothing depends on the device.
    """
    digest = hashlib.sha256(repr((seed,) + names).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
