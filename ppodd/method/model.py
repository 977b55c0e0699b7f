"""ConvNet-3 (§6) as a pure function of a flat list of weight tensors.

Keeping the weights as plain tensors (not an nn.Module) lets the inner loop differentiate through
its own Adam updates. Evaluation trains K networks at once through `networks.py`, whose ConvNet
draws the same initial weights as `init_params`.

Weight list layout, per block i < depth: conv weight (C, C_in, 3, 3), conv bias (C,),
norm scale (C,), norm shift (C,); then the linear weight (K, C·s·s) and bias (K,), s = a / 2^depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ppodd.method.transfer import to_device

Params = list[torch.Tensor]


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


def init_params(num_classes: int, width: int, depth: int, image_size: int,
                generator: torch.Generator, *, nets: int | None = None,
                device: torch.device | str = "cpu", in_channels: int = 3,
                dtype: torch.dtype = torch.float32) -> Params:
    """Fresh ConvNet weights with PyTorch's default initialisation (§6).

    Kaiming-uniform with a = √5 reduces to U(−1/√fan_in, 1/√fan_in) for weights and biases alike;
    the norm starts at scale 1, shift 0. With `nets`, every tensor gets a leading (nets,) dimension
    of independent draws. Draws come from `generator` (a CPU generator, so a seed gives the same
    weights on every device), in float32 whatever `dtype` the weights are then cast to.
    """
    lead = () if nets is None else (nets,)
    params: Params = []
    c_in = in_channels
    for _ in range(depth):
        bound = 1.0 / math.sqrt(c_in * 9)
        params.append(_uniform(lead + (width, c_in, 3, 3), bound, generator))
        params.append(_uniform(lead + (width,), bound, generator))
        params.append(torch.ones(lead + (width,)))
        params.append(torch.zeros(lead + (width,)))
        c_in = width
    side = image_size // 2 ** depth
    fan_in = width * side * side
    bound = 1.0 / math.sqrt(fan_in)
    params.append(_uniform(lead + (num_classes, fan_in), bound, generator))
    params.append(_uniform(lead + (num_classes,), bound, generator))
    return [to_device(p, device).to(dtype) for p in params]


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Logits (n, K) of ConvNet-3 for images x (n, 3, a, a).

    GroupNorm with one group per channel is instance norm, so train and eval behave the same.
    group_norm rather than instance_norm here: the meta-gradient differentiates this twice, and
    group_norm's double backward was the faster one on the CPU.
    """
    depth = (len(params) - 2) // 4
    h = x
    for i in range(depth):
        w, b, g, s = params[4 * i: 4 * i + 4]
        h = F.conv2d(h, w, b, padding=1)
        h = F.group_norm(h, w.shape[0], g, s, eps=1e-5)
        h = F.avg_pool2d(F.relu(h), 2)
    return F.linear(h.flatten(1), params[-2], params[-1])


def num_params(params: Params) -> int:
    """Number of scalar weights of one network."""
    return sum(p.numel() for p in params)
