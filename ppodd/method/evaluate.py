"""Evaluation protocol (§9): K fresh ConvNets trained together on a pool of posters.

The K networks' weights are stacked along a leading dimension and trained with one gradient of
`forward_stacked` per step, so 8 × b patches fill the device where b alone would not. Each network draws
its own patches and augmentation from the pool, exactly as it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ppodd.method.model import Params, forward_stacked, init_params
from ppodd.method.poster import PosterGeometry
from ppodd.method.unroll import AdamState, adam_update, draw_step, soft_cross_entropy, synthetic_batch


def _summed_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Σ over nets of each net's mean CE: the gradient for net k is that of its own loss alone.
    nets = x.shape[0]
    return soft_cross_entropy(forward_stacked(params, x).flatten(0, 1), y.flatten(0, 1)) * nets


_stacked_grad = torch.func.grad(_summed_loss)


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation needs from the validated config."""

    nets: int
    checkpoints: tuple[int, ...]
    lr: float
    batch_patches: int
    augment: bool
    num_classes: int
    width: int
    depth: int
    test_batch: int


def score_nets(params: Params, test_x: torch.Tensor, test_y: torch.Tensor,
                  chunk: int) -> torch.Tensor:
    """(nets,) top-1 accuracy in percent of stacked networks on the test set, no augmentation."""
    nets = params[0].shape[0]
    correct = torch.zeros(nets, dtype=torch.long, device=test_x.device)
    size = max(1, chunk // nets)
    with torch.no_grad():
        for start in range(0, test_x.shape[0], size):
            x = test_x[start:start + size]
            logits = forward_stacked(params, x.expand(nets, *x.shape))         # (nets, n, K)
            correct += (logits.argmax(-1) == test_y[start:start + size]).sum(-1)
    return correct.double() * (100.0 / test_x.shape[0])


def train_step(params: Params, state: AdamState, posters: torch.Tensor, labels: torch.Tensor,
               draw, geom: PosterGeometry, lr: float) -> tuple[Params, AdamState]:
    """Stacked weights after one Adam step of every network on its own patch batch."""
    nets = params[0].shape[0]
    x, y = synthetic_batch(posters, labels, draw, geom)
    x = x.view(nets, -1, *x.shape[1:])                                    # (nets, b, 3, a, a)
    y = y.view(nets, -1, y.shape[-1])                                     # (nets, b, K)
    with torch.enable_grad():
        grads = _stacked_grad(params, x, y)
    return adam_update(params, grads, state, lr)


def evaluate_pool(posters: torch.Tensor, labels: torch.Tensor, pi: torch.Tensor,
                  geom: PosterGeometry, test_x: torch.Tensor, test_y: torch.Tensor,
                  s: EvalSettings, generator: torch.Generator) -> torch.Tensor:
    """(S, nets) test accuracy in percent at each checkpoint of `nets` ConvNets trained on the pool.

    `posters` (M, 3, H, W) and `labels` (M, N, K) are the pool, `pi` (M,) its sampling weights.
    Each step every net draws b patches through the pool sampler, augments them and takes an
    Adam step (lr, no schedule, no weight decay); at each checkpoint the stacked nets are scored.
    """
    posters, labels = posters.detach(), labels.detach()
    params = init_params(s.num_classes, s.width, s.depth, geom.tile, generator,
                         nets=s.nets, device=posters.device)
    state = AdamState.zeros_like(params)
    scores = []
    step = 0
    with torch.no_grad():
        for checkpoint in s.checkpoints:
            while step < checkpoint:
                draw = draw_step(pi, s.batch_patches, geom.num_patches, s.augment, generator, nets=s.nets)
                params, state = train_step(params, state, posters, labels, draw, geom, s.lr)
                step += 1
            scores.append(score_nets(params, test_x, test_y, s.test_batch))
    return torch.stack(scores).cpu()
