"""The evaluation networks (§9): each architecture's K-net form against one net at a time and
against torch.nn, nets that stay independent, batch norm, and the evaluation optimisers."""

import pytest
import torch
from helpers import gen

from ppodd.config import EVAL_ARCHITECTURES
from ppodd.method.evaluate import (EvalSettings, MomentumState, evaluate_pool, nets_of, sgd_update,
                                   train_step)
from ppodd.method.labels import fixed_labels
from ppodd.method.model import init_params
from ppodd.method.networks import ARCHITECTURES, NetSpec, Weights, forward, init_weights
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import AdamState, draw_step

NETS = 3
# Every architecture with each normalisation, and ConvNet's max-pooling, at 32 pixels (where each
# has maps larger than 1 × 1) and tiny widths.
CASES = [(arch, norm, "avg") for arch in ARCHITECTURES for norm in ("instance", "batch", "none")]
CASES += [("convnet", "instance", "max")]


def _size(arch):
    # VGG-11 needs 32 pixels to keep its last maps above 1 × 1; the others run on 16.
    return 32 if arch == "vgg11" else 16


def _spec(arch, norm="instance", pool="avg", width=3):
    return NetSpec(arch, 4, _size(arch), width, 2, norm, pool)


def _double(w: Weights) -> Weights:
    return Weights([p.double() for p in w.params], [b.double() for b in w.buffers])


def _pool(size):
    geom = make_geometry(1.0, 4, size, rows=2, cols=2, n_x=3, n_y=3)
    labels = fixed_labels(geom, [[0, 1], [2, 3]])
    posters = torch.stack([init_poster(geom, gen(1)), init_poster(geom, gen(2))]).double()
    return geom, posters, torch.stack([labels, labels]).double()


def _settings(arch, norm, pool="avg", optimizer="adam"):
    return EvalSettings(NETS, (2,), 1e-2, 5, True, 4, 3, 2, 64, arch=arch, norm=norm, pool=pool,
                        optimizer=optimizer, weight_decay=1e-3)


def test_every_config_architecture_is_built():
    assert set(ARCHITECTURES) == set(EVAL_ARCHITECTURES)


def test_convnet_draws_the_distillation_nets_initial_weights():
    w = init_weights(_spec("convnet", width=8), gen(5), NETS)
    assert all(torch.equal(a, b) for a, b in zip(w.params, init_params(4, 8, 2, 16, gen(5), nets=NETS)))


@pytest.mark.parametrize("arch, norm, pool", CASES)
def test_nets_trained_together_equal_nets_trained_one_by_one(arch, norm, pool):
    # float64: Adam divides by √v, which would magnify float32 rounding in near-zero gradients.
    geom, posters, labels = _pool(_size(arch))
    spec, s = _spec(arch, norm, pool), _settings(arch, norm, pool)
    start = _double(init_weights(spec, gen(3), NETS))
    x = torch.randn(NETS, 4, 3, spec.image_size, spec.image_size, generator=gen(4), dtype=torch.float64)
    logits, stats = forward(spec, start, x, train=True)
    draws = [draw_step(torch.tensor([0.4, 0.6]), 5, 9, True, gen(10 + i), nets=NETS) for i in range(2)]
    together, state = start, AdamState.zeros_like(start.params)
    for draw in draws:
        together, state = train_step(spec, together, state, posters, labels, draw, geom, s)
    for k in range(NETS):
        one = start.net(k, k + 1)
        single, _ = forward(spec, one, x[k:k + 1], train=True)
        torch.testing.assert_close(logits[k:k + 1], single, rtol=1e-10, atol=1e-12)
        state = AdamState.zeros_like(one.params)
        for draw in draws:
            one, state = train_step(spec, one, state, posters, labels, nets_of(draw, k, k + 1), geom, s)
        for got, want in zip(together.params + together.buffers, one.params + one.buffers):
            torch.testing.assert_close(got[k:k + 1], want, rtol=1e-9, atol=1e-11)
    assert len(stats) == (0 if norm != "batch" else len(start.buffers) // 2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_changing_one_nets_data_leaves_the_others_alone(arch):
    geom, posters, labels = _pool(_size(arch))
    spec, s = _spec(arch, "batch"), _settings(arch, "batch")
    start = _double(init_weights(spec, gen(3), NETS))
    draw = draw_step(torch.tensor([0.4, 0.6]), 5, 9, True, gen(10), nets=NETS)
    other = type(draw)(draw.member.clone(), draw.patch.clone(), draw.aug)
    other.patch[1] = (other.patch[1] + 1) % 9                     # net 1 sees other patches
    a, _ = train_step(spec, start, AdamState.zeros_like(start.params), posters, labels, draw, geom, s)
    b, _ = train_step(spec, start, AdamState.zeros_like(start.params), posters, labels, other, geom, s)
    for pa, pb in zip(a.params + a.buffers, b.params + b.buffers):
        torch.testing.assert_close(pa[[0, 2]], pb[[0, 2]], rtol=1e-12, atol=1e-14)
    assert any(not torch.allclose(pa[1], pb[1]) for pa, pb in zip(a.params, b.params))


def _module(spec: NetSpec) -> torch.nn.Module:
    """The same network written with torch.nn, as the benchmarks' code builds it."""
    def block(c_in, c, k=3, stride=1, bias=False):
        norm = {"batch": torch.nn.BatchNorm2d(c), "instance": torch.nn.GroupNorm(c, c),
                "none": torch.nn.Identity()}[spec.norm]
        return [torch.nn.Conv2d(c_in, c, k, stride, k // 2, bias=bias), norm]

    w, relu, pool = spec.width, torch.nn.ReLU(), torch.nn.MaxPool2d(2, ceil_mode=True)
    if spec.arch == "resnet18":
        import torchvision
        net = torchvision.models.resnet18(num_classes=spec.num_classes, norm_layer=lambda c: block(c, c)[1])
        net.conv1, net.maxpool = torch.nn.Conv2d(3, w, 3, 1, 1, bias=False), torch.nn.Identity()
        return net
    layers, c_in = [], 3
    if spec.arch == "vgg11":
        for item in [w, "M", 2 * w, "M", 4 * w, 4 * w, "M", 8 * w, 8 * w, "M", 8 * w, 8 * w, "M"]:
            layers += [pool] if item == "M" else block(c_in, item, bias=True) + [relu]
            c_in = c_in if item == "M" else item
    else:  # alexnet
        for c, k, after in [(w, 5, True), (3 * w // 2, 5, True), (2 * w, 3, False), (3 * w // 2, 3, False),
                            (3 * w // 2, 3, True)]:
            layers += block(c_in, c, k, bias=True) + [relu] + ([pool] if after else [])
            c_in = c
    features = torch.nn.Sequential(*layers).eval()          # eval: the probe must not move running statistics
    side = features(torch.zeros(1, 3, spec.image_size, spec.image_size)).shape[-1]
    return torch.nn.Sequential(features, torch.nn.Flatten(), torch.nn.Linear(c_in * side * side, spec.num_classes))


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "alexnet"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_architectures_compute_what_torch_nn_computes(arch, norm):
    # ResNet-18 against torchvision's (whose width is fixed at 64) with the CIFAR stem (3 × 3
    # conv, no max-pool), the others against torch.nn layers as the benchmarks stack them;
    # weights moved off their initial values, and batch norm in both modes with its running
    # statistics.
    spec = _spec(arch, norm, width=64 if arch == "resnet18" else 4)
    torch.manual_seed(0)
    module = _module(spec).double()
    weights = _double(init_weights(spec, gen(3), 1))
    assert [tuple(p.shape) for p in module.parameters()] == [tuple(p.shape[1:]) for p in weights.params]
    with torch.no_grad():
        for p, mine in zip(module.parameters(), weights.params):
            p.copy_(mine[0] + 0.1 * torch.rand_like(mine[0]))
    weights = Weights([p.detach().clone()[None] for p in module.parameters()], weights.buffers)
    x = torch.randn(6, 3, spec.image_size, spec.image_size, generator=gen(4), dtype=torch.float64)
    module.train()
    logits, stats = forward(spec, weights, x[None], train=True)
    torch.testing.assert_close(logits[0], module(x), rtol=1e-9, atol=1e-10)
    if norm == "batch":
        from ppodd.method.layers import update_running
        running = update_running(weights.buffers, stats)
        theirs = [t for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)
                  for t in (m.running_mean, m.running_var)]
        for got, want in zip(running, theirs):
            torch.testing.assert_close(got[0], want, rtol=1e-9, atol=1e-12)
        module.eval()
        logits, _ = forward(spec, Weights(weights.params, running), x[None], train=False)
        torch.testing.assert_close(logits[0], module(x), rtol=1e-9, atol=1e-10)


def test_sgd_with_momentum_and_weight_decay_is_torchs():
    params = [torch.randn(3, 4, generator=gen(1), dtype=torch.float64), torch.randn(5, generator=gen(2),
                                                                                    dtype=torch.float64)]
    theirs = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, weight_decay=1e-3)
    state = MomentumState([torch.zeros_like(p) for p in params])
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen(10 + step), dtype=torch.float64) for p in params]
        for t, g in zip(theirs, grads):
            t.grad = g.clone()
        opt.step()
        params, state = sgd_update(params, [g + 1e-3 * p for g, p in zip(grads, params)], state, 0.05, 0.9)
    for got, want in zip(params, theirs):
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_evaluate_pool_gives_the_same_scores_stacked_or_sequential(arch):
    geom, posters, labels = _pool(_size(arch))
    x = torch.randn(20, 3, _size(arch), _size(arch), generator=gen(7), dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=gen(8))
    base = EvalSettings(2, (1, 3), 1e-2, 5, True, 4, 3, 2, 64, arch=arch, norm="batch", optimizer="sgd")
    scores = [evaluate_pool(posters, labels, torch.tensor([1.0, 0.0]), geom, x, y,
                            EvalSettings(**{**base.__dict__, "batching": batching}), gen(9))
              for batching in ("stacked", "sequential", "stacked")]
    assert scores[0].shape == (2, 2) and torch.equal(scores[0], scores[2])
    torch.testing.assert_close(scores[0], scores[1])
