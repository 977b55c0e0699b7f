import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import gen

from ppodd.method.distill import Pool, StepSettings, clip_by_ema, meta_gradient
from ppodd.method.labels import fixed_labels, init_label_map
from ppodd.method.model import forward, init_params
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import AdamState, adam_update, draw_step, synthetic_batch, unroll, warm_up


def test_adam_update_matches_torch_optim_adam_over_steps():
    params = [torch.randn(5, 3, generator=gen(1)), torch.randn(7, generator=gen(2))]
    ref = [p.clone().requires_grad_() for p in params]
    opt = torch.optim.Adam(ref, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    state = AdamState.zeros_like(params)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=gen(10 + step)) for p in params]
        for r, g in zip(ref, grads):
            r.grad = g.clone()
        opt.step()
        params, state = adam_update(params, grads, state, 1e-3)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p, r.detach(), rtol=0, atol=1e-7)
    assert state.t == 5


def test_adam_update_zero_moment_entries_give_finite_meta_gradient():
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    params = [torch.zeros(2)]
    new, _ = adam_update(params, [x * torch.tensor([0.0, 1.0])], AdamState.zeros_like(params), 1e-3)
    new[0].sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.fixture
def tiny():
    geom = make_geometry(1.0, 4, 8, rows=2, cols=2, n_x=3, n_y=3)
    order = [[0, 1], [2, 3]]
    live = init_poster(geom, gen(3)).requires_grad_()
    labels = fixed_labels(geom, order)
    frozen = init_poster(geom, gen(4))[None]
    pool = Pool(live, None, labels, frozen, labels[None])
    real_x = torch.randn(10, 3, 8, 8, generator=gen(5))
    real_y = torch.randint(0, 4, (10,), generator=gen(6))
    settings = StepSettings(batch_patches=6, window=3, inner_lr=1e-2, real_subbatch=0, augment=True,
                            num_classes=4, width=4, depth=2, label_eps=0.0)
    return geom, pool, real_x, real_y, settings


def test_meta_gradient_subbatched_real_loss_equals_unsplit(tiny):
    geom, pool, real_x, real_y, settings = tiny
    pi = torch.tensor([0.3, 0.7])
    loss_full = meta_gradient(pool, pi, geom, real_x, real_y, 2, settings, gen(7))
    full = pool.live.grad.clone()
    pool.live.grad = None
    split = dataclasses.replace(settings, real_subbatch=3)
    loss_split = meta_gradient(pool, pi, geom, real_x, real_y, 2, split, gen(7))
    torch.testing.assert_close(pool.live.grad, full, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(loss_split, loss_full)
    assert full.abs().sum() > 0


def test_meta_gradient_equals_plain_autograd_through_the_window(tiny):
    geom, pool, real_x, real_y, s = tiny
    pi = torch.tensor([0.5, 0.5])
    meta_gradient(pool, pi, geom, real_x, real_y, 2, dataclasses.replace(s, augment=False), gen(8))
    ours = pool.live.grad.clone()
    pool.live.grad = None
    # The same draws in the same order, then one ordinary backward of the whole graph.
    g = gen(8)
    params = init_params(4, 4, 2, 8, g)
    state = AdamState.zeros_like(params)
    warm = [draw_step(pi, 6, 9, False, g) for _ in range(2)]
    window = [draw_step(pi, 6, 9, False, g) for _ in range(3)]
    posters, labels = pool.stacked(geom, 0.0)
    params, state = warm_up(params, state, posters, labels, warm, geom, 1e-2)
    params, state = unroll(params, state, posters, labels, window, geom, 1e-2)
    F.cross_entropy(forward(params, real_x), real_y).backward()
    torch.testing.assert_close(ours, pool.live.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("subbatch", [0, 4])
def test_checkpointed_window_gives_the_same_gradient_bitwise(tiny, subbatch):
    # The replay starts from bitwise-equal saved weights and Adam state and runs the same ops on the
    # same draws, so every step's vector-Jacobian product is the same computation; only the order
    # in which autograd sums contributions could differ, and it does not, so demand equality.
    geom, pool, real_x, real_y, s = tiny
    s = dataclasses.replace(s, window=4, real_subbatch=subbatch)
    label_map = init_label_map(2, 2, [[0, 1], [2, 3]]).requires_grad_()
    learned = Pool(pool.live, label_map, None, pool.frozen, pool.frozen_labels)
    pi = torch.tensor([0.3, 0.7])
    grads = []
    for checkpoint in (False, True):
        loss = meta_gradient(learned, pi, geom, real_x, real_y, 2,
                             dataclasses.replace(s, checkpoint_window=checkpoint), gen(7))
        grads.append((loss, pool.live.grad, label_map.grad))
        pool.live.grad = label_map.grad = None
    (loss_a, live_a, map_a), (loss_b, live_b, map_b) = grads
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(live_a, live_b) and torch.equal(map_a, map_b)
    assert live_a.abs().sum() > 0 and map_a.abs().sum() > 0


@pytest.fixture
def float64_default():
    # torch.optim.Adam keeps its step count as a tensor of the default dtype; in float32 its bias
    # corrections are rounded to float32 where ppodd's are exact, so compare in float64 throughout.
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


@pytest.mark.parametrize("warmup, window", [(0, 2), (2, 3)])
def test_meta_gradient_equals_the_one_higher_computes(tiny, float64_default, warmup, window):
    # An independent computation of the same outer step: an nn.Module ConvNet, torch.optim.Adam
    # for the warm-up and `higher`'s differentiable Adam for the window, as the PoDD reference
    # does it, with higher's ε moved to where torch.optim.Adam puts it (torch_eps).
    from bench.higher_step import higher_meta_gradient

    geom, pool, real_x, real_y, s = tiny
    s = dataclasses.replace(s, window=window)
    label_map = init_label_map(2, 2, [[0, 1], [2, 3]]).double().requires_grad_()
    live = pool.live.detach().double().requires_grad_()
    learned = Pool(live, label_map, None, pool.frozen.double(), pool.frozen_labels.double())
    pi = torch.tensor([0.3, 0.7])
    results = []
    for fn, kwargs in ((meta_gradient, {}), (higher_meta_gradient, {"torch_eps": True})):
        loss = fn(learned, pi, geom, real_x.double(), real_y, warmup, s, gen(7), **kwargs)
        results.append((loss, live.grad, label_map.grad))
        live.grad = label_map.grad = None
    (loss_a, live_a, map_a), (loss_b, live_b, map_b) = results
    assert live_a.abs().sum() > 0 and map_a.abs().sum() > 0
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-10, atol=0)
    torch.testing.assert_close(live_a, live_b, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(map_a, map_b, rtol=1e-7, atol=1e-12)


def test_bf16_real_batch_gradient_is_close_to_float32(tiny):
    geom, pool, real_x, real_y, s = tiny
    pi = torch.tensor([0.5, 0.5])
    meta_gradient(pool, pi, geom, real_x, real_y, 1, s, gen(11))
    exact = pool.live.grad.clone()
    pool.live.grad = None
    meta_gradient(pool, pi, geom, real_x, real_y, 1, dataclasses.replace(s, real_bf16=True), gen(11))
    cosine = F.cosine_similarity(exact.flatten(), pool.live.grad.flatten(), dim=0)
    assert not torch.equal(exact, pool.live.grad) and cosine > 0.99


def test_meta_gradient_frozen_members_get_no_gradient(tiny):
    geom, pool, real_x, real_y, settings = tiny
    pool.frozen.requires_grad_()
    meta_gradient(pool, torch.tensor([0.5, 0.5]), geom, real_x, real_y, 1, settings, gen(9))
    assert pool.frozen.grad is None or pool.frozen.grad.abs().sum() == 0


def test_synthetic_batch_reads_member_and_patch(tiny):
    geom, pool, *_ = tiny
    posters, labels = pool.stacked(geom, 0.0)
    draw = draw_step(torch.tensor([0.0, 1.0]), 4, 9, False, gen(1))
    x, y = synthetic_batch(posters, labels, draw, geom)
    assert x.shape == (4, 3, 8, 8) and y.shape == (4, 4)
    assert (draw.member == 1).all()
    k = int(draw.patch[0])
    y0, x0 = geom.patch_origins[k].tolist()
    torch.testing.assert_close(x[0], pool.live[:, y0:y0 + 8, x0:x0 + 8])


def test_clip_by_ema_first_step_sets_ema_and_clips_spikes():
    grad = torch.full((4,), 1.0)   # norm 2
    clipped, ema, norm = clip_by_ema(grad, None, 0.9, 2.0)
    assert float(ema) == pytest.approx(2.0) and torch.equal(clipped, grad)
    spike = torch.full((4,), 10.0)  # norm 20; EMA -> 0.9·2 + 0.1·20 = 3.8, threshold 7.6
    clipped, ema, norm = clip_by_ema(spike, ema, 0.9, 2.0)
    assert float(ema) == pytest.approx(3.8)
    assert float(clipped.norm()) == pytest.approx(7.6, rel=1e-5)
