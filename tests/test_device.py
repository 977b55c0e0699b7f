"""On a CUDA device: an outer step and an evaluation step make no host synchronisation, the GPU
computes what the CPU computes from the same draws, and the precision modes run.

Every test here is marked `device` and skips without CUDA, so CI (no GPU) skips them all;
`python -m bench gpu` runs this file first on a lent GPU (bench/README.md, GPU check).
`torch.cuda.set_sync_debug_mode("error")` makes any operation that would make the host wait for
the device raise, naming it; each checked step runs once unchecked first, so one-off set-up
(cuBLAS and cuDNN handles, the caching allocators) stays out of the check.
"""

import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import gen

from ppodd.method.distill import Pool, StepSettings, clip_by_ema, meta_gradient
from ppodd.method.evaluate import EvalSettings, evaluate_pool, optimizer_state, score_nets, train_step
from ppodd.method.labels import fixed_labels, init_label_map
from ppodd.method.networks import init_weights
from ppodd.method.poster import init_poster, make_geometry
from ppodd.method.unroll import draw_step

pytestmark = [pytest.mark.device,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


@contextlib.contextmanager
def no_host_sync():
    """Raise on any operation that synchronises the host with the device, inside the block."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def tiny(device, dtype=torch.float32, learned=False):
    """A two-member pool (one frozen snapshot, the live poster), a real batch and step settings."""
    geom = make_geometry(1.0, 4, 8, rows=2, cols=2, n_x=3, n_y=3)
    order = [[0, 1], [2, 3]]
    labels = fixed_labels(geom, order).to(device, dtype)
    live = init_poster(geom, gen(3)).to(device, dtype).requires_grad_()
    frozen = init_poster(geom, gen(4))[None].to(device, dtype)
    live_map = init_label_map(2, 2, order).to(device, dtype).requires_grad_() if learned else None
    pool = Pool(live, live_map, None if learned else labels, frozen, labels[None])
    real_x = torch.randn(10, 3, 8, 8, generator=gen(5)).to(device, dtype)
    real_y = torch.randint(0, 4, (10,), generator=gen(6)).to(device)
    settings = StepSettings(batch_patches=6, window=3, inner_lr=1e-2, real_subbatch=4, augment=True,
                            num_classes=4, width=4, depth=2, label_eps=1e-6)
    return geom, pool, real_x, real_y, settings


def outer_step(pool, geom, real_x, real_y, s, optimizer, ema, seed):
    """One outer step as `cell.stages.distill_stages` takes it, up to its one logging read."""
    optimizer.zero_grad(set_to_none=True)
    loss = meta_gradient(pool, torch.tensor([0.4, 0.6]), geom, real_x, real_y, 2, s, gen(seed))
    pool.live.grad, ema, norm = clip_by_ema(pool.live.grad, ema, 0.9, 2.0)
    optimizer.step()
    if pool.live_map is not None:
        with torch.no_grad():
            pool.live_map.clamp_(min=0)
    return loss, norm, ema


@pytest.mark.parametrize("checkpoint_window", [False, True])
@pytest.mark.parametrize("learned", [False, True])
def test_outer_step_makes_no_host_sync(checkpoint_window, learned):
    geom, pool, real_x, real_y, s = tiny(CUDA, learned=learned)
    s = dataclasses.replace(s, checkpoint_window=checkpoint_window)
    params = [pool.live] + ([pool.live_map] if learned else [])
    optimizer = torch.optim.Adam(params, lr=1e-3)
    _, _, ema = outer_step(pool, geom, real_x, real_y, s, optimizer, None, 1)
    with no_host_sync():
        loss, norm, ema = outer_step(pool, geom, real_x, real_y, s, optimizer, ema, 2)
    values = torch.stack([loss, norm, ema]).tolist()     # the run's one read per outer step, for logging
    assert all(map(math.isfinite, values))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "eval.compile"])
def test_evaluation_step_makes_no_host_sync(compiled):
    geom, pool, _, _, _ = tiny(CUDA)
    posters, labels = pool.stacked(geom, 0.0)
    posters, labels = posters.detach(), labels.detach()
    s = EvalSettings(nets=3, checkpoints=(2,), lr=1e-2, batch_patches=5, augment=True, num_classes=4,
                     width=4, depth=2, test_batch=64, compile=compiled)
    spec = s.spec(geom.tile)
    weights = init_weights(spec, gen(7), s.nets, device=CUDA)
    state = optimizer_state(weights.params, s)
    pi = torch.tensor([0.5, 0.5])
    test_x = torch.randn(20, 3, 8, 8, generator=gen(8)).to(CUDA)
    test_y = torch.randint(0, 4, (20,), generator=gen(9)).to(CUDA)
    with torch.no_grad():
        for step in range(3):
            draw = draw_step(pi, s.batch_patches, geom.num_patches, True, gen(10 + step), nets=s.nets)
            with no_host_sync() if step else contextlib.nullcontext():
                weights, state = train_step(spec, weights, state, posters, labels, draw, geom, s)
                scores = score_nets(spec, weights, test_x, test_y, s.test_batch)
    assert scores.shape == (3,)


def test_gpu_gradient_equals_the_cpu_gradient_for_the_same_draws():
    # float64, so that what is left is summation order, not the draws: with another draw the
    # gradients would differ entirely.
    grads = {}
    for device in ("cpu", "cuda"):
        geom, pool, real_x, real_y, s = tiny(torch.device(device), torch.float64, learned=True)
        loss = meta_gradient(pool, torch.tensor([0.4, 0.6]), geom, real_x, real_y, 2, s, gen(11))
        grads[device] = (loss.cpu(), pool.live.grad.cpu(), pool.live_map.grad.cpu())
    for cpu, gpu in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-7, atol=1e-10)


def test_gpu_evaluation_scores_like_the_cpu():
    scores = {}
    for name in ("cpu", "cuda"):
        device = torch.device(name)
        geom, pool, _, _, _ = tiny(device, torch.float64)
        posters, labels = pool.stacked(geom, 0.0)
        s = EvalSettings(nets=2, checkpoints=(2, 4), lr=1e-2, batch_patches=5, augment=True, num_classes=4,
                         width=4, depth=2, test_batch=64)
        x = torch.randn(40, 3, 8, 8, generator=gen(12)).to(device, torch.float64)
        y = torch.randint(0, 4, (40,), generator=gen(13)).to(device)
        scores[name] = evaluate_pool(posters, labels, torch.tensor([0.5, 0.5]), geom, x, y, s, gen(14))
    assert torch.equal(scores["cpu"], scores["cuda"])


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_faster_precisions_give_a_close_gradient(precision):
    from ppodd.cell.prepare import use_precision

    geom, pool, real_x, real_y, s = tiny(CUDA)
    pi = torch.tensor([0.4, 0.6])
    meta_gradient(pool, pi, geom, real_x, real_y, 2, s, gen(15))
    exact, pool.live.grad = pool.live.grad.clone(), None
    try:
        use_precision(precision)
        assert torch.backends.cudnn.conv.fp32_precision == ("tf32" if precision == "tf32" else "ieee")
        meta_gradient(pool, pi, geom, real_x, real_y, 2, dataclasses.replace(s, bf16=precision == "bf16"), gen(15))
    finally:
        use_precision("ieee")
    # Differentiating through Adam's m/√v amplifies rounding (bench/README.md, precision), and
    # bfloat16 keeps 8 bits: its gradient points the same way, not much more (0.7-0.97 on the CPU).
    cosine = F.cosine_similarity(exact.flatten(), pool.live.grad.flatten(), dim=0)
    assert torch.isfinite(pool.live.grad).all() and cosine > (0.9 if precision == "tf32" else 0.5)


def test_a_tiny_run_completes_on_the_gpu(tmp_path, tiny_overrides, log):
    from ppodd.cell.host import Host
    from ppodd.cell.identity import cell_files
    from ppodd.cell.run import run_cell
    from ppodd.config import load_config
    from ppodd.storage.reader import read_scores

    cfg = load_config("configs/demo.yaml", tiny_overrides + ["device=cuda"])
    path = run_cell(cfg, cell_files(cfg, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False)
    assert 0 <= read_scores(path)["final_accuracy"] <= 100
