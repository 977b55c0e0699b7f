"""Evaluation protocol (§9): K fresh networks trained on a pool of posters, tested at checkpoints.

The K networks' weights are stacked along a leading dimension. Trained together, one gradient of
`networks.forward` per step trains all of them, so 8 × b patches fill the device where b alone
would not; trained one after another, the same code runs on one net's slice at a time. Both draw
the same patches and augmentation per net from the same generator, so they compute the same
numbers up to float rounding, and each network sees exactly what it would alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ppodd.method.layers import update_running
from ppodd.method.networks import NetSpec, Weights, forward, init_weights
from ppodd.method.poster import PosterGeometry
from ppodd.method.unroll import AdamState, StepDraw, adam_update, draw_step, soft_cross_entropy, synthetic_batch

OPTIMIZERS = ("adam", "sgd")
BATCHING = ("auto", "stacked", "sequential")
# Which form `batching: auto` takes on the CPU, by `python -m bench.architectures` at the wider
# of its two settings (bench/README.md): VGG-11 ran 1.47× faster together, ResNet-18 and AlexNet
# 1.4× faster one after another. ConvNet stays together, as ppodd always ran it (1.14× at width 32
# over 300 steps; same numbers bit for bit). On a GPU one launch for all K nets fills it better.
STACKED_ON_CPU = {"convnet": True, "resnet18": False, "vgg11": True, "alexnet": False}


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation needs from the validated config; sizes already resolved."""

    nets: int
    checkpoints: tuple[int, ...]
    lr: float
    batch_patches: int
    augment: bool
    num_classes: int
    width: int
    depth: int
    test_batch: int
    arch: str = "convnet"
    norm: str = "instance"
    pool: str = "avg"
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batching: str = "auto"
    bf16: bool = False          # the nets' forward (training and test) under bfloat16 autocast
    compile: bool = False       # the training step's gradient built by torch.compile

    def spec(self, image_size: int) -> NetSpec:
        """The network every evaluation net is, for images of `image_size` pixels a side."""
        return NetSpec(self.arch, self.num_classes, image_size, self.width, self.depth, self.norm, self.pool)

    def stacked(self, device: torch.device) -> bool:
        """Whether the nets train together (else one after another) on `device`."""
        if self.batching != "auto":
            return self.batching == "stacked"
        return device.type != "cpu" or STACKED_ON_CPU[self.arch]


@dataclass
class MomentumState:
    """SGD's momentum buffers (same layout as the weights)."""

    buf: list[torch.Tensor]


def sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor], state: MomentumState, lr: float,
               momentum: float) -> tuple[list[torch.Tensor], MomentumState]:
    """Weights after one step of SGD with momentum as torch.optim.SGD takes it (no dampening):
    b ← μ·b + g, θ ← θ − lr·b; zero buffers make the first step b = g."""
    buf = [momentum * b + g for b, g in zip(state.buf, grads)]
    return [p - lr * b for p, b in zip(params, buf)], MomentumState(buf)


def optimizer_state(params: list[torch.Tensor], s: EvalSettings) -> AdamState | MomentumState:
    """A fresh state of the evaluation optimiser for `params`."""
    if s.optimizer == "adam":
        return AdamState.zeros_like(params)
    return MomentumState([torch.zeros_like(p) for p in params])


def _summed_loss(params: list[torch.Tensor], spec: NetSpec, buffers: list[torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor, bf16: bool = False) -> tuple[torch.Tensor, list]:
    # Σ over nets of each net's mean CE: the gradient for net k is that of its own loss alone.
    nets = x.shape[0]
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits, stats = forward(spec, Weights(params, buffers), x, train=True)
    return soft_cross_entropy(logits.flatten(0, 1).to(x.dtype), y.flatten(0, 1)) * nets, stats


_stacked_grad = torch.func.grad(_summed_loss, has_aux=True)


@functools.cache
def compiled_grad():
    """`_stacked_grad` through torch.compile, built on its first call and kept for the process.

    An evaluation's shapes never change from step to step, so one static graph serves all of its
    steps (`dynamic=False`); another architecture or batch shape compiles its own. Only the
    gradient is compiled: Adam's step count is a Python number, which would recompile every step.
    """
    return torch.compile(_stacked_grad, dynamic=False)


def train_step(spec: NetSpec, weights: Weights, state, posters: torch.Tensor, labels: torch.Tensor,
               draw: StepDraw, geom: PosterGeometry, s: EvalSettings) -> tuple[Weights, object]:
    """Stacked weights and optimiser state after one step of every net on its own patch batch.

    Weight decay, when set, is added to the gradient as torch.optim's optimisers add it.
    """
    nets = weights.params[0].shape[0]
    x, y = synthetic_batch(posters, labels, draw, geom)
    x = x.view(nets, -1, *x.shape[1:])                                    # (nets, b, 3, a, a)
    y = y.view(nets, -1, y.shape[-1])                                     # (nets, b, K)
    with torch.enable_grad():
        grad = compiled_grad() if s.compile else _stacked_grad
        grads, stats = grad(weights.params, spec, weights.buffers, x, y, s.bf16)
    if s.weight_decay:
        grads = [g + s.weight_decay * p for g, p in zip(grads, weights.params)]
    if s.optimizer == "adam":
        params, state = adam_update(weights.params, grads, state, s.lr)
    else:
        params, state = sgd_update(weights.params, grads, state, s.lr, s.momentum)
    return Weights(params, update_running(weights.buffers, stats) if stats else weights.buffers), state


def score_nets(spec: NetSpec, weights: Weights, test_x: torch.Tensor, test_y: torch.Tensor,
               chunk: int, bf16: bool = False) -> torch.Tensor:
    """(nets,) top-1 accuracy in percent of stacked networks on the test set, no augmentation; with
    `bf16` under bfloat16 autocast."""
    nets = weights.params[0].shape[0]
    correct = torch.zeros(nets, dtype=torch.long, device=test_x.device)
    size = max(1, chunk // nets)
    with torch.no_grad(), torch.autocast(test_x.device.type, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, test_x.shape[0], size):
            x = test_x[start:start + size]
            logits, _ = forward(spec, weights, x.expand(nets, *x.shape), train=False)   # (nets, n, K)
            correct += (logits.argmax(-1) == test_y[start:start + size]).sum(-1)
    return correct.double() * (100.0 / test_x.shape[0])


def nets_of(draw: StepDraw, start: int, stop: int) -> StepDraw:
    """The draws of nets [start, stop) of a K-net draw."""
    aug = draw.aug
    if aug is not None:
        aug = type(aug)(aug.use_flip[start:stop], aug.flip[start:stop], aug.angle[start:stop])
    return StepDraw(draw.member[start:stop], draw.patch[start:stop], aug)


def evaluate_pool(posters: torch.Tensor, labels: torch.Tensor, pi: torch.Tensor,
                  geom: PosterGeometry, test_x: torch.Tensor, test_y: torch.Tensor,
                  s: EvalSettings, generator: torch.Generator) -> torch.Tensor:
    """(S, nets) test accuracy in percent at each checkpoint of `nets` networks trained on the pool.

    `posters` (M, 3, H, W) and `labels` (M, N, K) are the pool, `pi` (M,) its sampling weights.
    Each step every net draws b patches through the pool sampler, augments them and takes an
    optimiser step (lr, no schedule); at each checkpoint the nets are scored. Every draw comes from
    `generator` in the same order whether the nets train together or one after another.
    """
    posters, labels = posters.detach(), labels.detach()
    spec = s.spec(geom.tile)
    weights = init_weights(spec, generator, s.nets, device=posters.device, dtype=posters.dtype)
    size = s.nets if s.stacked(posters.device) else 1
    groups = [weights.net(k, k + size) for k in range(0, s.nets, size)]
    states = [optimizer_state(g.params, s) for g in groups]
    scores = []
    step = 0
    with torch.no_grad():
        for checkpoint in s.checkpoints:
            while step < checkpoint:
                draw = draw_step(pi, s.batch_patches, geom.num_patches, s.augment, generator, nets=s.nets)
                for i, group in enumerate(groups):
                    groups[i], states[i] = train_step(spec, group, states[i], posters, labels,
                                                      nets_of(draw, i * size, (i + 1) * size), geom, s)
                step += 1
            scores.append(torch.cat([score_nets(spec, g, test_x, test_y, s.test_batch, s.bf16) for g in groups]))
    return torch.stack(scores).cpu()
