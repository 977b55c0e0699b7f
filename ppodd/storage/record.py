"""What one run produces, in memory: the engine returns it, `store` writes it, nothing else.

Accuracies are percentages (0–100). Pools are listed in chronological order: frozen stage
snapshots oldest first, the live poster last (members are named by stage number, 0 = live).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: readers of tables import this module without torch
    import torch


@dataclass
class EvalResult:
    """Test accuracy of `nets` fresh ConvNets trained on a pool of posters (§9)."""

    checkpoints: list[int]          # cumulative training steps at which the test set was scored
    per_net: torch.Tensor           # (S, nets) float64, top-1 test accuracy in percent
    members: list[int]              # pool members: stage numbers of snapshots, 0 for the live poster
    pi: list[float]                 # sampling weight of each member, same order
    pixels: int                     # spatial pixels of every member with non-zero weight, summed
    effective_ipc: float            # pixels / (K · a²)
    seconds: float

    @property
    def mean(self) -> torch.Tensor:
        """(S,) mean over the nets at each checkpoint."""
        return self.per_net.mean(dim=1)

    @property
    def final(self) -> float:
        """The reported number: the mean over nets at the last checkpoint (2000 steps, §9)."""
        return float(self.mean[-1])

    @property
    def best(self) -> float:
        """The maximum over checkpoints of the mean over nets (P-PoDD's stage accuracy A_t)."""
        return float(self.mean.max())


@dataclass
class ArchitectureResult:
    """The final live poster and pool scored on one architecture of `eval.models` (§9)."""

    network: dict                   # arch, width, norm (and ConvNet's depth and pool) as they ran
    live: EvalResult
    pool: EvalResult


@dataclass
class StageRecord:
    """One P-PoDD stage (§10.6); PoDD runs have exactly one."""

    index: int                      # 1-based stage number t
    epochs: int                     # epochs of distillation in this stage
    poster: torch.Tensor            # (3, H, W) live poster at the end of the stage (its snapshot S_t)
    patch_labels: torch.Tensor      # (N, K) label of every patch of the snapshot
    label_map: torch.Tensor | None  # (K, h_l, w_l) learned label map, None with fixed labels
    pi_before: list[float]          # π the stage trained with, over [S_1 … S_{t-1}, live]
    pi_after: list[float]           # π for the next stage, over [S_1 … S_t, live]
    accuracy: EvalResult            # the stage-end measurement behind A_t
    stage_accuracy: float           # A_t as fed to the stage-weight update
    pool_pixels: int                # pixels of the pool the stage trained with
    in_stage: list[tuple[int, EvalResult]] = field(default_factory=list)  # (epoch, result)


@dataclass
class RunRecord:
    """Everything one run leaves behind; `storage.writer.write_run` turns it into one HDF5 file."""

    config: dict                    # resolved RunConfig as a plain mapping
    geometry: dict                  # height, width, tile, rows, cols, n_x, n_y, pixels, effective_ipc
    class_order: list[list[int]]    # order[row][col] (§4)
    class_names: list[str]
    initial_poster: torch.Tensor    # (3, H, W) the poster before any distillation (§3)
    stages: list[StageRecord]
    final_live: EvalResult          # the final live poster alone (honest budget, D12)
    final_pool: EvalResult          # the final pool with its final π
    curves: dict[str, torch.Tensor] # per outer step: stage, epoch, loss, grad_norm, clip_threshold, warmup
    provenance: dict                # versions, host, device, times, seconds per phase
    zca_key: str                    # key of the cached ZCA matrices, "" when ZCA is off
    seeds: dict = field(default_factory=dict)
    architectures: dict[str, ArchitectureResult] = field(default_factory=dict)  # by name, as listed
