"""The evaluation networks (§9): ConvNet, ResNet-18, VGG-11 and AlexNet, K at a time.

Each architecture is a pair of functions over flat weight lists, like `model.py`: an initialiser
that draws K nets' weights (leading dimension K) from one generator, and a forward pass that runs
the K nets side by side through `layers` (grouped convolutions, per-channel norms and pooling),
each on its own images. With K = 1 it is one network, so training K nets together or one after
another runs the same code on the same weights. Sizes are the CIFAR variants of the
dataset-distillation benchmarks (docs/method.md §9 states each); `width` scales every layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppodd.method import layers
from ppodd.method.layers import conv, linear, max_pool, norm, pooled_side, uniform

Params = list[torch.Tensor]
ARCHITECTURES = ("convnet", "resnet18", "vgg11", "alexnet")
# The width each architecture has in the benchmarks (ConvNet's is the config's `model.width`).
STANDARD_WIDTH = {"resnet18": 64, "vgg11": 64, "alexnet": 128}
# The normalisation each has in the benchmarks; `eval.norm: auto` picks it.
STANDARD_NORM = {"convnet": "instance", "resnet18": "instance", "vgg11": "instance", "alexnet": "none"}
POOLS = ("avg", "max")


@dataclass(frozen=True)
class NetSpec:
    """One evaluation architecture with every size resolved.

    `width` is ConvNet's channel count and the others' first-layer width (the rest scale with
    it); `depth` and `pool` concern ConvNet only; `norm` is instance, batch or none.
    """

    arch: str
    num_classes: int
    image_size: int
    width: int
    depth: int = 3
    norm: str = "instance"
    pool: str = "avg"


@dataclass
class Weights:
    """K nets' trainable weights and, with batch norm, their running [mean, var] per norm layer."""

    params: Params
    buffers: Params

    def net(self, start: int, stop: int) -> "Weights":
        """Nets [start, stop) as a Weights of their own (views, no copy)."""
        return Weights([p[start:stop] for p in self.params], [b[start:stop] for b in self.buffers])


class _Draw:
    """Collects K nets' initial weights in the order the forward pass reads them."""

    def __init__(self, spec: NetSpec, generator: torch.Generator, nets: int) -> None:
        self.spec, self.generator, self.lead = spec, generator, (nets,)
        self.weights = Weights([], [])

    def conv(self, c_out: int, c_in: int, k: int, bias: bool) -> None:
        fan_in = c_in * k * k
        self.weights.params.append(uniform(self.lead + (c_out, c_in, k, k), fan_in, self.generator))
        if bias:
            self.weights.params.append(uniform(self.lead + (c_out,), fan_in, self.generator))

    def norm(self, c: int) -> None:
        if self.spec.norm == "none":
            return
        self.weights.params += [torch.ones(self.lead + (c,)), torch.zeros(self.lead + (c,))]
        if self.spec.norm == "batch":
            self.weights.buffers += [torch.zeros(self.lead + (c,)), torch.ones(self.lead + (c,))]

    def linear(self, fan_in: int) -> None:
        classes = self.spec.num_classes
        self.weights.params.append(uniform(self.lead + (classes, fan_in), fan_in, self.generator))
        self.weights.params.append(uniform(self.lead + (classes,), fan_in, self.generator))


class _Run:
    """Reads the weights in order while the forward pass runs; keeps batch-norm statistics."""

    def __init__(self, spec: NetSpec, weights: Weights, train: bool) -> None:
        self.kind = spec.norm
        self.params, self.buffers = iter(weights.params), iter(weights.buffers)
        self.train = train
        self.stats: list = []

    def conv(self, h: torch.Tensor, bias: bool, stride: int = 1, padding: int = 1) -> torch.Tensor:
        w = next(self.params)
        return conv(h, w, next(self.params) if bias else None, stride, padding)

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return h
        scale, shift = next(self.params), next(self.params)
        running = None if self.kind != "batch" or self.train else (next(self.buffers), next(self.buffers))
        return norm(h, self.kind, scale, shift, running, self.stats)

    def linear(self, h: torch.Tensor) -> torch.Tensor:
        return linear(h, next(self.params), next(self.params))


# --- ConvNet (§6): [conv 3×3 → norm → ReLU → 2×2 pool] × depth → linear ------------------------


def _convnet_init(d: _Draw, s: NetSpec) -> None:
    c_in = 3
    for _ in range(s.depth):
        d.conv(s.width, c_in, 3, bias=True)
        d.norm(s.width)
        c_in = s.width
    d.linear(s.width * (s.image_size // 2 ** s.depth) ** 2)


def _convnet(r: _Run, s: NetSpec, h: torch.Tensor) -> torch.Tensor:
    pool = F.avg_pool2d if s.pool == "avg" else F.max_pool2d
    for _ in range(s.depth):
        h = pool(F.relu(r.norm(r.conv(h, bias=True))), 2)
    return r.linear(h)


# --- VGG-11: 8 conv 3×3 layers (norm, ReLU), 5 max-pools, one linear layer ------------------------


def _vgg_plan(w: int) -> list[int | str]:
    return [w, "M", 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M", 8 * w, 8 * w, "M"]


def _vgg11_init(d: _Draw, s: NetSpec) -> None:
    c_in = 3
    for item in _vgg_plan(s.width):
        if item != "M":
            d.conv(item, c_in, 3, bias=True)
            d.norm(item)
            c_in = item
    d.linear(8 * s.width * pooled_side(s.image_size, 5) ** 2)


def _vgg11(r: _Run, s: NetSpec, h: torch.Tensor) -> torch.Tensor:
    for item in _vgg_plan(s.width):
        h = max_pool(h) if item == "M" else F.relu(r.norm(r.conv(h, bias=True)))
    return r.linear(h)


# --- AlexNet: conv 5×5, conv 5×5, 3 × conv 3×3 (ReLU, norm when asked), 3 max-pools, linear -----


def _alexnet_plan(w: int) -> list[tuple[int, int, bool]]:
    """(channels, kernel, max-pool after) of each conv layer: 128, 192, 256, 192, 192 at w = 128."""
    return [(w, 5, True), (3 * w // 2, 5, True), (2 * w, 3, False), (3 * w // 2, 3, False),
            (3 * w // 2, 3, True)]


def _alexnet_init(d: _Draw, s: NetSpec) -> None:
    c_in = 3
    for c, k, _ in _alexnet_plan(s.width):
        d.conv(c, c_in, k, bias=True)
        d.norm(c)
        c_in = c
    d.linear(c_in * pooled_side(s.image_size, 3) ** 2)


def _alexnet(r: _Run, s: NetSpec, h: torch.Tensor) -> torch.Tensor:
    for _, k, pool in _alexnet_plan(s.width):
        h = F.relu(r.norm(r.conv(h, bias=True, padding=k // 2)))
        if pool:
            h = max_pool(h)
    return r.linear(h)


# --- ResNet-18, CIFAR variant: 3×3 stem, no max-pool, 4 stages of 2 basic blocks ----------------


def _resnet_blocks(w: int) -> list[tuple[int, int, int]]:
    """(in channels, out channels, stride) of the 8 basic blocks."""
    blocks, c_in = [], w
    for c, stride in ((w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)):
        blocks += [(c_in, c, stride), (c, c, 1)]
        c_in = c
    return blocks


def _resnet18_init(d: _Draw, s: NetSpec) -> None:
    d.conv(s.width, 3, 3, bias=False)
    d.norm(s.width)
    for c_in, c, stride in _resnet_blocks(s.width):
        d.conv(c, c_in, 3, bias=False)
        d.norm(c)
        d.conv(c, c, 3, bias=False)
        d.norm(c)
        if stride != 1 or c_in != c:
            d.conv(c, c_in, 1, bias=False)
            d.norm(c)
    d.linear(8 * s.width)


def _resnet18(r: _Run, s: NetSpec, h: torch.Tensor) -> torch.Tensor:
    h = F.relu(r.norm(r.conv(h, bias=False)))
    for c_in, c, stride in _resnet_blocks(s.width):
        out = F.relu(r.norm(r.conv(h, bias=False, stride=stride)))
        out = r.norm(r.conv(out, bias=False))
        if stride != 1 or c_in != c:
            h = r.norm(r.conv(h, bias=False, stride=stride, padding=0))
        h = F.relu(out + h)
    return r.linear(h.mean((2, 3)))


_ARCHS: dict[str, tuple[Callable[[_Draw, NetSpec], None], Callable[[_Run, NetSpec, torch.Tensor], torch.Tensor]]] = {
    "convnet": (_convnet_init, _convnet), "resnet18": (_resnet18_init, _resnet18),
    "vgg11": (_vgg11_init, _vgg11), "alexnet": (_alexnet_init, _alexnet)}


def init_weights(spec: NetSpec, generator: torch.Generator, nets: int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Weights:
    """Fresh weights of `nets` networks with PyTorch's default initialisation (§6).

    Every draw comes from `generator` (a CPU generator, so a seed gives the same weights on every
    device), in float32 whatever `dtype` they are then cast to; norms start at scale 1, shift 0,
    running mean 0 and variance 1. For ConvNet these are `model.init_params`'s draws.
    """
    draw = _Draw(spec, generator, nets)
    _ARCHS[spec.arch][0](draw, spec)
    w = draw.weights
    return Weights([p.to(device, dtype) for p in w.params], [b.to(device, dtype) for b in w.buffers])


def forward(spec: NetSpec, weights: Weights, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, list]:
    """Logits (K, n, classes) of K nets on their own images x (K, n, 3, a, a), and the batch
    statistics of each batch-norm layer in training mode (empty otherwise).

    In test mode (`train` False) batch norm uses the running statistics in `weights.buffers`.
    """
    run = _Run(spec, weights, train)
    logits = _ARCHS[spec.arch][1](run, spec, layers.stack_inputs(x))
    return logits, run.stats
