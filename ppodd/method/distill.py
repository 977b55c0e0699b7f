"""One outer step of PoDD distillation (§8.3) over a pool of posters (§10.1).

The live poster (and its label map, when labels are learned) are the only parameters; frozen
stage snapshots are constants that the inner networks also train on. PoDD is the pool of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ppodd.method.augment import draw_flip_rotate
from ppodd.method.labels import read_patch_labels
from ppodd.method.model import init_params
from ppodd.method.poster import PosterGeometry
from ppodd.method.unroll import (AdamState, draw_step, real_loss_backward, real_loss_grads, unroll, unroll_saved,
                          warm_up, window_backward)


@dataclass(frozen=True)
class StepSettings:
    """What one outer step needs to know, taken from the validated config."""

    batch_patches: int
    window: int
    inner_lr: float
    real_subbatch: int
    augment: bool
    num_classes: int
    width: int
    depth: int
    label_eps: float
    checkpoint_window: bool = False
    real_bf16: bool = False
    bf16: bool = False          # every forward of the step (inner and real) under bfloat16 autocast


@dataclass
class Pool:
    """The posters the inner networks train on, chronological: frozen snapshots, then live.

    `frozen` (M−1, 3, H, W) and `frozen_labels` (M−1, N, K) are constants; `live` (3, H, W) is the
    trained poster; `live_map` (K, h_l, w_l) is its learned label map, or None with fixed labels,
    in which case `fixed_labels` (N, K) labels every member.
    """

    live: torch.Tensor
    live_map: torch.Tensor | None
    fixed_labels: torch.Tensor | None
    frozen: torch.Tensor
    frozen_labels: torch.Tensor

    def live_labels(self, geom: PosterGeometry, eps: float) -> torch.Tensor:
        """(N, K) labels of the live poster's patches (differentiable in the label map)."""
        if self.live_map is None:
            return self.fixed_labels
        return read_patch_labels(self.live_map, geom, eps)

    def stacked(self, geom: PosterGeometry, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """All members as one (M, 3, H, W) tensor and their labels (M, N, K), live last."""
        posters = torch.cat([self.frozen.detach(), self.live.unsqueeze(0)])  # D11: frozen stay constant
        labels = torch.cat([self.frozen_labels.detach(), self.live_labels(geom, eps).unsqueeze(0)])
        return posters, labels

    @property
    def size(self) -> int:
        """Number of members M."""
        return self.frozen.shape[0] + 1


def meta_gradient(pool: Pool, pi: torch.Tensor, geom: PosterGeometry, real_x: torch.Tensor,
                  real_y: torch.Tensor, warmup: int, s: StepSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """Real-batch loss of a freshly trained ConvNet; its gradient is left in the live poster's
    (and label map's) `.grad` (§8.3 steps 1–5).

    A fresh network and inner Adam train for `warmup` steps without poster gradient, then for
    `window` differentiable steps; the outer loss is the CE of the result on the real batch.
    All randomness comes from `generator`, drawn in a fixed order, so a step can be replayed.
    """
    device = pool.live.device
    params = init_params(s.num_classes, s.width, s.depth, geom.tile, generator, device=device,
                         dtype=pool.live.dtype)
    state = AdamState.zeros_like(params)
    n = geom.num_patches
    warm = [draw_step(pi, s.batch_patches, n, s.augment, generator) for _ in range(warmup)]
    window = [draw_step(pi, s.batch_patches, n, s.augment, generator) for _ in range(s.window)]
    real_aug = draw_flip_rotate(1, real_x.shape[0], generator) if s.augment else None
    posters, labels = pool.stacked(geom, s.label_eps)
    real_bf16 = s.real_bf16 or s.bf16
    params, state = warm_up(params, state, posters, labels, warm, geom, s.inner_lr, s.bf16)
    if s.checkpoint_window:
        # Keep each step's weights and Adam state, not its graph; recompute it in the backward.
        final, saved = unroll_saved(params, state, posters, labels, window, geom, s.inner_lr, s.bf16)
        loss, grads = real_loss_grads(final, real_x, real_y, real_aug, s.real_subbatch, real_bf16)
        window_backward(saved, posters, labels, window, geom, s.inner_lr, grads, s.bf16)
        return loss
    params, state = unroll(params, state, posters, labels, window, geom, s.inner_lr, s.bf16)
    return real_loss_backward(params, real_x, real_y, real_aug, s.real_subbatch, real_bf16)


def clip_by_ema(grad: torch.Tensor, ema: torch.Tensor | None, coeff: float,
                factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped gradient, new EMA and raw norm for the EMA-adaptive clip (§8.3 step 6).

    The EMA starts at the first norm of a run or stage and is updated before clipping; the
    gradient is rescaled to `factor`·EMA when its norm exceeds that (PyTorch's clip rule, with
    its 1e-6). Tensor maths only, so no host sync.
    """
    norm = grad.norm()
    ema = norm.clone() if ema is None else coeff * ema + (1 - coeff) * norm
    scale = torch.clamp(factor * ema / (norm + 1e-6), max=1.0)
    return grad * scale, ema, norm
