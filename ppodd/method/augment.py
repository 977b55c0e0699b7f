"""flip_rotate augmentation (§7), split into a random draw and a pure, differentiable apply.

Drawing first and applying second lets a step be replayed exactly (resume, recomputation in the
meta-backward) and lets K evaluation networks each get their own draw in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppodd.method.transfer import to_device

MAX_DEGREES = 15.0


@dataclass(frozen=True)
class AugDraw:
    """The randomness of one flip_rotate call per group of images.

    `use_flip` (G,) picks the operation of each group (one op per call, §7); `flip` (G, n) and
    `angle` (G, n, radians) are the per-sample draws of both operations.
    """

    use_flip: torch.Tensor
    flip: torch.Tensor
    angle: torch.Tensor

    def to(self, device: torch.device) -> "AugDraw":
        """The same draw on `device`; the op choice stays on the CPU, where reading it is free."""
        return AugDraw(self.use_flip, to_device(self.flip, device), to_device(self.angle, device))

    def slice(self, start: int, stop: int) -> "AugDraw":
        """The draw restricted to samples [start, stop) of every group (real-batch sub-batching)."""
        return AugDraw(self.use_flip, self.flip[:, start:stop], self.angle[:, start:stop])


def draw_flip_rotate(groups: int, n: int, generator: torch.Generator) -> AugDraw:
    """Random choices for `groups` calls of flip_rotate on n images each (CPU tensors)."""
    use_flip = torch.rand(groups, generator=generator) < 0.5
    flip = torch.rand(groups, n, generator=generator) < 0.5
    degrees = (torch.rand(groups, n, generator=generator) * 2 - 1) * MAX_DEGREES
    return AugDraw(use_flip, flip, degrees * (math.pi / 180.0))


def _flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def _rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def flip_rotate(x: torch.Tensor, draw: AugDraw) -> torch.Tensor:
    """Augmented images (G·n, 3, a, a) for x (G·n, 3, a, a) under `draw` (§7).

    Differentiable in x. With one group the chosen operation alone is computed; with several
    groups both are computed and selected per group, which keeps the call free of host syncs.
    """
    groups, n = draw.flip.shape
    if groups == 1:
        # use_flip stays on the CPU (see AugDraw.to), so reading it costs no device sync.
        if bool(draw.use_flip[0]):
            return _flip(x, draw.flip.reshape(-1))
        return _rotate(x, draw.angle.reshape(-1))
    flipped = _flip(x, draw.flip.reshape(-1))
    rotated = _rotate(x, draw.angle.reshape(-1))
    pick = to_device(draw.use_flip.repeat_interleave(n), x.device).view(-1, 1, 1, 1)
    return torch.where(pick, flipped, rotated)
