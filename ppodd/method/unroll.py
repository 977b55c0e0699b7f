"""The inner loop of RaT-BPTT (§8.3): warm-up, unrolled window and the meta-gradient.

Everything here is a function of plain tensors. Weights are the flat lists of `model.py`, the
inner optimiser is an explicit Adam on those lists, and gradients come from `torch.func.grad`,
so the window stays differentiable with respect to the poster without any module patching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppodd.method.augment import AugDraw, draw_flip_rotate, flip_rotate
from ppodd.method.model import Params, forward
from ppodd.method.poster import PosterGeometry, extract_patches
from ppodd.method.sampler import sample_pool
from ppodd.method.transfer import to_device

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
    member = to_device(draw.member.reshape(-1), pool.device)
    patch = to_device(draw.patch.reshape(-1), pool.device)
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


def _inner_loss(params: Params, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    # With bf16 the network runs under bfloat16 autocast; the loss, and so the weights' gradient
    # and Adam, stay in the weights' dtype.
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = forward(params, x)
    return soft_cross_entropy(logits.to(x.dtype), y)


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


def inner_step(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor, draw: StepDraw,
               geom: PosterGeometry, lr: float, bf16: bool = False) -> tuple[Params, AdamState]:
    """One inner Adam step on the patch batch of `draw`. Under no_grad it builds no graph (the
    gradient itself still runs with grad enabled); otherwise it stays differentiable with respect
    to the weights, the Adam state, the pool and the labels. With `bf16` the network's forward
    runs under bfloat16 autocast."""
    x, y = synthetic_batch(pool, labels, draw, geom)
    with torch.enable_grad():
        grads = inner_grad(params, x, y, bf16)
    return adam_update(params, grads, state, lr)


def warm_up(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor,
            draws: list[StepDraw], geom: PosterGeometry, lr: float, bf16: bool = False) -> tuple[Params, AdamState]:
    """Weights and Adam state after c plain training steps that send no gradient to the poster."""
    pool, labels = pool.detach(), labels.detach()
    with torch.no_grad():
        for draw in draws:
            params, state = inner_step(params, state, pool, labels, draw, geom, lr, bf16)
    return params, state


def unroll(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor,
           draws: list[StepDraw], geom: PosterGeometry, lr: float, bf16: bool = False) -> tuple[Params, AdamState]:
    """Weights after ω differentiable steps, carrying the graph back to `pool` and `labels`."""
    for draw in draws:
        params, state = inner_step(params, state, pool, labels, draw, geom, lr, bf16)
    return params, state


def real_loss_grads(final: Params, real_x: torch.Tensor, real_y: torch.Tensor, aug: AugDraw | None,
                    subbatch: int, bf16: bool = False) -> tuple[torch.Tensor, Params]:
    """Mean CE of weights `final` on the augmented real batch (§8.3 step 4) and its gradient
    with respect to those weights, as plain tensors with no graph behind them.

    The batch is split into chunks of `subbatch` images (0: one chunk). Each chunk's loss, weighted
    by its share of the batch, is differentiated with respect to detached copies of the weights,
    which frees its activations at once, so the peak holds one chunk, not B images. With `bf16`
    the chunk's network runs under bfloat16 autocast (the loss itself stays float32). Returns the
    loss as a 0-d tensor, so the caller decides when to sync.
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
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(leaves, x)
        loss = F.cross_entropy(logits.to(x.dtype), real_y[start:stop]) * ((stop - start) / n)
        loss.backward()
        total += loss.detach()
    return total, [p.grad for p in leaves]


def real_loss_backward(final: Params, real_x: torch.Tensor, real_y: torch.Tensor,
                       aug: AugDraw | None, subbatch: int, bf16: bool = False) -> torch.Tensor:
    """Mean CE of the unrolled weights on the real batch, backpropagated to the poster (§8.3 4–5).

    The weight gradient of `real_loss_grads` is sent through the unrolled graph in one backward
    pass. With sub-batching the poster gradient equals the un-split one up to floating-point
    summation order. Returns the loss as a 0-d tensor.
    """
    total, grads = real_loss_grads(final, real_x, real_y, aug, subbatch, bf16)
    torch.autograd.backward(final, grad_tensors=grads)
    return total


def unroll_saved(params: Params, state: AdamState, pool: torch.Tensor, labels: torch.Tensor,
                 draws: list[StepDraw], geom: PosterGeometry, lr: float,
                 bf16: bool = False) -> tuple[Params, list[tuple[Params, AdamState]]]:
    """Weights after ω inner steps taken without a graph, and the weights and Adam state
    before each step: all that `window_backward` needs to recompute the step's graph.

    That is 3 × the network's size per step (≈ 4 MB for ConvNet-128), in place of the step's
    activations and inner-gradient graph (≈ 150 MB at b = 96).
    """
    pool, labels = pool.detach(), labels.detach()
    saved = []
    with torch.no_grad():
        for draw in draws:
            saved.append((params, state))
            params, state = inner_step(params, state, pool, labels, draw, geom, lr, bf16)
    return params, saved


def window_backward(saved: list[tuple[Params, AdamState]], pool: torch.Tensor, labels: torch.Tensor,
                    draws: list[StepDraw], geom: PosterGeometry, lr: float, final_grads: Params,
                    bf16: bool = False) -> None:
    """Backpropagate `final_grads` (∂L/∂ final weights) through the ω saved steps to the poster
    (and label map), recomputing one step's graph at a time, last step first.

    Each step is replayed from its saved weights and Adam state with the same draw, so it computes
    the same values as `unroll`; backpropagating the incoming gradients of its new weights and
    moments yields those of its old ones, and its share of the poster gradient. The sum equals
    `unroll` + one backward up to floating-point summation order, with one step's graph alive.
    The warm-up weights (the first saved entry) receive no gradient, as in `unroll`.
    """
    pool_leaf = pool.detach().requires_grad_(pool.requires_grad)
    labels_leaf = labels.detach().requires_grad_(labels.requires_grad)
    grads: list[torch.Tensor | None] = list(final_grads)          # ∂L/∂(θ, m, v) after the step
    for i in reversed(range(len(draws))):
        params, state = saved[i]
        first = i == 0
        inputs = [t.detach().requires_grad_(not first) for t in params + state.m + state.v]
        k = len(params)
        p, m, v = inputs[:k], inputs[k:2 * k], inputs[2 * k:]
        new, new_state = inner_step(p, AdamState(m, v, state.t), pool_leaf, labels_leaf, draws[i], geom, lr,
                                    bf16)
        pairs = [(o, g) for o, g in zip(new + new_state.m + new_state.v, grads) if g is not None]
        torch.autograd.backward([o for o, _ in pairs], grad_tensors=[g for _, g in pairs])
        grads = [t.grad for t in inputs]
    sources = [(t, leaf.grad) for t, leaf in ((pool, pool_leaf), (labels, labels_leaf)) if leaf.grad is not None]
    if sources:
        torch.autograd.backward([t for t, _ in sources], grad_tensors=[g for _, g in sources])
