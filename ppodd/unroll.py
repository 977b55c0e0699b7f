"""The inner loop of RaT-BPTT (§8.3): warm-up, unrolled window and the meta-gradient.

Everything here is a function of plain tensors. Weights are the flat lists of `model.py`, the
inner optimiser is an explicit Adam on those lists, and gradients come from `torch.func.grad`,
so the window stays differentiable with respect to the poster without any module patching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppodd.augment import AugDraw, draw_flip_rotate, flip_rotate
from ppodd.model import Params, forward
from ppodd.poster import PosterGeometry, extract_patches
from ppodd.sampler import sample_pool

BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class StepDraw:
    """The randomness of one inner step: which pool member and patch fills each of the b slots,
    and the augmentation; member and patch are (b,) or (nets, b)."""

    member: torch.Tensor
    patch: torch.Tensor
    aug: AugDraw | None


@dataclass
class AdamState:
    """Adam's moments (same layout as the weights) and its step count t."""

    m: Params
    v: Params
    t: int

    @staticmethod
    def zeros_like(params: Params) -> "AdamState":
        """A fresh Adam state, as a newly built torch.optim.Adam would have."""
        return AdamState([torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params], 0)


def draw_step(pi: torch.Tensor, batch: int, num_patches: int, augment: bool,
              generator: torch.Generator, nets: int | None = None) -> StepDraw:
    """Patch slots and augmentation for one inner step (CPU tensors, §10.1 sampler)."""
    member, patch = sample_pool(pi, batch, num_patches, generator, nets=nets)
    aug = draw_flip_rotate(nets or 1, batch, generator) if augment else None
    return StepDraw(member, patch, aug)


def synthetic_batch(pool: torch.Tensor, labels: torch.Tensor, draw: StepDraw,
                    geom: PosterGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented patches (…·b, 3, a, a) and their soft labels (…·b, K) for one draw.

    `pool` (M, 3, H, W) stacks the frozen posters and the live one; `labels` (M, N, K) holds each
    member's patch labels. Gradients reach only the members that carry them (the live poster).
    """
    member = draw.member.reshape(-1).to(pool.device, non_blocking=True)
    patch = draw.patch.reshape(-1).to(pool.device, non_blocking=True)
    x = extract_patches(pool, member, patch, geom)
    y = labels[member, patch]
    if draw.aug is not None:
        x = flip_rotate(x, draw.aug.to(pool.device))
    return x, y


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ_c y_c log softmax(z)_c (§5.2); hard labels when target is long."""
    if target.dtype == torch.long:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def _inner_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return soft_cross_entropy(forward(params, x), y)


inner_grad = torch.func.grad(_inner_loss)


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    # √v has an infinite derivative at v = 0; those entries never moved, so give them zero
    # gradient (as `higher` does) instead of letting inf·0 poison the meta-gradient with NaN.
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def adam_update(params: Params, grads: Params, state: AdamState, lr: float) -> tuple[Params, AdamState]:
    """Weights and state after one Adam step (§8.3 step 3), differentiable in every input.

    The arithmetic follows torch.optim.Adam's single-tensor path term by term, so the result
    matches it to rounding: θ − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
    """
    b1, b2 = BETAS
    t = state.t + 1
    m = [b1 * mi + (1 - b1) * g for mi, g in zip(state.m, grads)]
    v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(state.v, grads)]
    step_size = lr / (1 - b1 ** t)
    root_bc2 = (1 - b2 ** t) ** 0.5
    new = [p - step_size * mi / (_safe_sqrt(vi) / root_bc2 + ADAM_EPS) for p, mi, vi in zip(params, m, v)]
    return new, AdamState(m, v, t)


def warm_up(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor,
            draws: list[StepDraw], geom: PosterGeometry, lr: float) -> tuple[Params, AdamState]:
    """Weights and Adam state after c plain training steps that send no gradient to the poster."""
    pool, labels = pool.detach(), labels.detach()
    with torch.no_grad():
        for draw in draws:
            x, y = synthetic_batch(pool, labels, draw, geom)
            with torch.enable_grad():
                grads = inner_grad(params, x, y)
            params, state = adam_update(params, grads, state, lr)
    return params, state


def unroll(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor,
           draws: list[StepDraw], geom: PosterGeometry, lr: float) -> tuple[Params, AdamState]:
    """Weights after ω differentiable steps, carrying the graph back to `pool` and `labels`."""
    for draw in draws:
        x, y = synthetic_batch(pool, labels, draw, geom)
        grads = inner_grad(params, x, y)
        params, state = adam_update(params, grads, state, lr)
    return params, state


def real_loss_backward(final: Params, real_x: torch.Tensor, real_y: torch.Tensor,
                       aug: AugDraw | None, subbatch: int) -> torch.Tensor:
    """Mean CE of the unrolled weights on the real batch, backpropagated to the poster (§8.3 4–5).

    The real batch is split into chunks of `subbatch` images (0: one chunk). Each chunk's loss,
    weighted by its share of the batch, is differentiated with respect to detached copies of the
    final weights, which frees its activations at once; the summed weight gradient is then sent
    through the unrolled graph in one backward pass. The poster gradient equals the un-split one
    up to floating-point summation order, while the peak memory holds one chunk, not B images.
    Returns the loss as a 0-d tensor, so the caller decides when to sync.
    """
    leaves = [p.detach().requires_grad_() for p in final]
    n = real_x.shape[0]
    size = subbatch or n
    total = torch.zeros((), device=real_x.device)
    for start in range(0, n, size):
        stop = min(n, start + size)
        x = real_x[start:stop]
        if aug is not None:
            x = flip_rotate(x, aug.slice(start, stop).to(x.device))
        loss = F.cross_entropy(forward(leaves, x), real_y[start:stop]) * ((stop - start) / n)
        loss.backward()
        total += loss.detach()
    torch.autograd.backward(final, grad_tensors=[p.grad for p in leaves])
    return total
