"""Layers of K networks at once, the evaluation networks' building blocks (§9).

Activations hold the K nets side by side in the channel dimension, (n, K·C, s, s): net k owns
channels [k·C, (k+1)·C). Convolutions are grouped (groups = K), so no net sees another's channels;
normalisation, ReLU and pooling act per channel, so each net's statistics are its own. With K = 1
these are the plain layers of one network. Weights carry a leading (K,) dimension.

Batch norm in training mode normalises with the batch's statistics and hands them back, so the
caller keeps the running statistics outside the differentiated function (a transform of
`torch.func` may not mutate tensors it did not create).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-5
BN_MOMENTUM = 0.1          # torch.nn.BatchNorm2d's default, as the benchmarks' BN nets run it
NORMS = ("instance", "batch", "none")


def uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """U(−1/√fan_in, 1/√fan_in) in float32: PyTorch's default for conv and linear weights and
    biases (Kaiming-uniform with a = √5 reduces to it, §6)."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


def stack_inputs(x: torch.Tensor) -> torch.Tensor:
    """(n, K·3, a, a) from each net's own images x (K, n, 3, a, a)."""
    nets, n = x.shape[:2]
    return x.transpose(0, 1).reshape(n, nets * x.shape[2], *x.shape[3:])


def conv(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int = 1,
         padding: int = 1) -> torch.Tensor:
    """Every net's convolution in one grouped convolution; w (K, C, C_in, k, k), b (K, C) or None."""
    nets = w.shape[0]
    return F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                    stride=stride, padding=padding, groups=nets)


def norm(h: torch.Tensor, kind: str, scale: torch.Tensor | None, shift: torch.Tensor | None,
         running: tuple[torch.Tensor, torch.Tensor] | None, stats: list) -> torch.Tensor:
    """Instance, batch or no normalisation of stacked channels, with affine scale and shift (K, C).

    Batch norm uses `running` (mean, var) when given (test mode); without it (training mode) it
    normalises with the batch's own statistics and appends them, detached, to `stats`.
    """
    if kind == "none":
        return h
    weight, bias = scale.reshape(-1), shift.reshape(-1)
    if kind == "instance":
        # Through the batch-norm kernels, whose backward on K·C channels runs several times
        # faster on the CPU than group norm's (bench/README.md).
        return F.instance_norm(h, weight=weight, bias=bias, eps=EPS)
    if running is not None:
        return F.batch_norm(h, running[0].reshape(-1), running[1].reshape(-1), weight, bias, training=False,
                            eps=EPS)
    dims = (0, 2, 3)
    stats.append((h.mean(dims).detach(), h.var(dims, unbiased=True).detach()))
    return F.batch_norm(h, None, None, weight, bias, training=True, eps=EPS)


def update_running(running: list[torch.Tensor], stats: list) -> list[torch.Tensor]:
    """Running [mean, var, mean, var, …] after one training step's batch statistics, as
    torch.nn.BatchNorm2d keeps them: (1 − m)·running + m·batch, unbiased variance."""
    flat = [t for pair in stats for t in pair]
    return [(1 - BN_MOMENTUM) * r + BN_MOMENTUM * s.reshape(r.shape) for r, s in zip(running, flat)]


def max_pool(h: torch.Tensor) -> torch.Tensor:
    """2 × 2 max-pooling, rounding the side up: the same as flooring on even sides, and a 1 × 1
    map stays 1 × 1, so nets made for 32-pixel images also take smaller ones."""
    return F.max_pool2d(h, 2, ceil_mode=True)


def pooled_side(side: int, times: int) -> int:
    """The side of a map after `times` of `max_pool`."""
    for _ in range(times):
        side = -(-side // 2)
    return side


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits (K, n, classes) of every net's linear layer on stacked features h (n, K·F, …).

    Each net's block of channels is flattened in the order a single net flattens (C, s, s).
    """
    nets, n = w.shape[0], h.shape[0]
    h = h.contiguous().view(n, nets, -1).transpose(0, 1)                  # (K, n, F)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
