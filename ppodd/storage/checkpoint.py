"""The full state of an unfinished run and its checkpoint file beside the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppodd.atomic import WriteError, write_atomic
from ppodd.errors import PpoddError
from ppodd.storage.folders import free_bytes
from ppodd.storage.record import ArchitectureResult, EvalResult, StageRecord

CHECKPOINT_VERSION = 1


@dataclass
class RunState:
    """Everything needed to continue a run after the last finished outer step.

    stage, epoch and step index the next outer step (0-based within stage and epoch). Together
    with the seed they fix every later random draw, so a resumed run repeats the uninterrupted one.
    """

    stage: int
    epoch: int
    step: int
    live: torch.Tensor
    live_map: torch.Tensor | None
    optimizer: dict
    ema: torch.Tensor | None
    bank: list[torch.Tensor]
    bank_labels: list[torch.Tensor]
    bank_maps: list[torch.Tensor | None]
    accs: list[float]
    pi: list[float]
    initial_poster: torch.Tensor
    stages: list[StageRecord] = field(default_factory=list)
    in_stage: list[tuple[int, EvalResult]] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    started: str = ""
    final: list[EvalResult] = field(default_factory=list)  # [live, pool] once measured
    architectures: dict[str, ArchitectureResult] = field(default_factory=dict)  # eval.models measured so far


def save_checkpoint(state: RunState, path: Path, digest: str) -> None:
    """Write the state next to the result, atomically.

    A failed write (a full disk, a file system gone read-only) raises PpoddError in one line and
    leaves the previous checkpoint as it was.
    """
    blob = {"version": CHECKPOINT_VERSION, "config_digest": digest, "state": state.__dict__}
    try:
        write_atomic(path, lambda tmp: torch.save(blob, tmp))
    except WriteError as err:
        raise PpoddError(f"cannot write checkpoint {path} ({err.reason}; {free_bytes(path.parent)} bytes "
                         "free); the previous checkpoint is intact, rerun to resume from it") from None


def load_checkpoint(path: Path, digest: str, device: torch.device) -> RunState | None:
    """The saved state of this exact config, or None when there is none to resume."""
    if not path.exists():
        return None
    try:
        # Our own file, written by save_checkpoint; it holds dataclass records, hence no weights_only.
        blob = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # a checkpoint cut short by a full disk is not worth a crash: start over
        raise PpoddError(f"checkpoint {path} cannot be read ({type(e).__name__}); delete it to start over") from None
    if blob.get("version") != CHECKPOINT_VERSION or blob.get("config_digest") != digest:
        raise PpoddError(f"checkpoint {path} belongs to another config or ppodd version; delete it to start over")
    return RunState(**blob["state"])
