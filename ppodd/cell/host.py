"""What the machine running a cell says about where and how to run it.

Read from the environment once, at the edge (the CLI, an array task's entry), and passed in:
nothing below reads the environment itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Host:
    """The cache folder for data sets and ZCA matrices, and the CPUs Slurm granted (0: not said)."""

    cache_dir: Path
    slurm_cpus: int = 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> Host:
        """`$PPODD_CACHE` (else `~/.cache/ppodd`) and `$SLURM_CPUS_PER_TASK` of `env`."""
        cache = env.get("PPODD_CACHE") or str(Path(env.get("HOME") or "~") / ".cache" / "ppodd")
        cpus = env.get("SLURM_CPUS_PER_TASK", "")
        return cls(Path(cache).expanduser(), int(cpus) if cpus.isdigit() else 0)

    def threads(self, configured: int) -> int:
        """torch CPU threads for a run: the config's `threads`, else Slurm's grant, else 0 (torch's own).

        Slurm grants CPUs without always binding them; torch would otherwise use every core of
        the node.
        """
        return configured or self.slurm_cpus
