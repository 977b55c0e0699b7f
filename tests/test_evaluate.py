import torch
from helpers import gen

from ppodd.method.evaluate import EvalSettings, evaluate_pool, score_nets, train_step
from ppodd.method.labels import fixed_labels
from ppodd.method.model import forward, init_params
from ppodd.method.networks import NetSpec, Weights
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import AdamState, adam_update, draw_step, inner_grad, synthetic_batch


def setup():
    geom = make_geometry(1.0, 4, 8, rows=2, cols=2, n_x=3, n_y=3)
    labels = fixed_labels(geom, [[0, 1], [2, 3]])
    posters = torch.stack([init_poster(geom, gen(1)), init_poster(geom, gen(2))])
    return geom, posters, torch.stack([labels, labels])


def test_batched_training_equals_training_nets_one_by_one():
    # float64: Adam divides by √v, which would magnify float32 rounding in near-zero gradients.
    geom, posters, labels = setup()
    posters, labels = posters.double(), labels.double()
    nets, steps = 3, 4
    pi = torch.tensor([0.4, 0.6])
    stacked = [p.double() for p in init_params(4, 4, 2, 8, gen(3), nets=nets)]
    draws = [draw_step(pi, 5, 9, True, gen(10 + s), nets=nets) for s in range(steps)]
    state = AdamState.zeros_like(stacked)
    spec = NetSpec("convnet", 4, 8, 4, 2)
    settings = EvalSettings(nets, (steps,), 1e-2, 5, True, 4, 4, 2, 64)
    batched = Weights(stacked, [])
    for draw in draws:
        batched, state = train_step(spec, batched, state, posters, labels, draw, geom, settings)
    for k in range(nets):
        params = [p[k] for p in stacked]
        single = AdamState.zeros_like(params)
        for draw in draws:
            one = type(draw)(draw.member[k], draw.patch[k],
                             type(draw.aug)(draw.aug.use_flip[k:k + 1], draw.aug.flip[k:k + 1],
                                            draw.aug.angle[k:k + 1]))
            x, y = synthetic_batch(posters, labels, one, geom)
            params, single = adam_update(params, inner_grad(params, x, y), single, 1e-2)
        for got, want in zip(batched.params, params):
            torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-8)


def test_test_accuracy_counts_correct_predictions_per_net():
    params = init_params(4, 4, 2, 8, gen(4), nets=2)
    x = torch.randn(30, 3, 8, 8, generator=gen(5))
    y = torch.randint(0, 4, (30,), generator=gen(6))
    acc = score_nets(NetSpec("convnet", 4, 8, 4, 2), Weights(params, []), x, y, chunk=14)
    for k in range(2):
        pred = forward([p[k] for p in params], x).argmax(-1)
        assert acc[k].item() == (pred == y).double().mean().item() * 100


def test_evaluate_pool_returns_one_row_per_checkpoint_and_is_reproducible():
    geom, posters, labels = setup()
    s = EvalSettings(nets=2, checkpoints=(1, 3), lr=1e-2, batch_patches=5, augment=True,
                     num_classes=4, width=4, depth=2, test_batch=64)
    x = torch.randn(20, 3, 8, 8, generator=gen(7))
    y = torch.randint(0, 4, (20,), generator=gen(8))
    a = evaluate_pool(posters, labels, torch.tensor([1.0, 0.0]), geom, x, y, s, gen(9))
    b = evaluate_pool(posters, labels, torch.tensor([1.0, 0.0]), geom, x, y, s, gen(9))
    assert a.shape == (2, 2) and torch.equal(a, b)
    assert ((a >= 0) & (a <= 100)).all()
