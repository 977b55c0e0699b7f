"""`precision: ieee | tf32 | bf16`: validated, ieee by default and out of the cell's name there,
the GPU switches it sets, and bf16 on the CPU (autocast) close to, not equal to, float32."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import gen

from ppodd.cell.evalnets import eval_settings
from ppodd.cell.identity import config_digest
from ppodd.cell.prepare import use_precision
from ppodd.cell.stages import settings_of
from ppodd.config import load_config
from ppodd.errors import ConfigError
from ppodd.method.distill import Pool, StepSettings, meta_gradient
from ppodd.method.evaluate import EvalSettings, evaluate_pool
from ppodd.method.labels import fixed_labels
from ppodd.method.poster import init_poster, make_geometry


@pytest.fixture
def gpu_switches():
    """The process-wide GPU float32 switches, restored after the test."""
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield torch.backends.cuda.matmul, torch.backends.cudnn.conv
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def test_precision_is_ieee_by_default_and_in_every_preset():
    assert load_config(None).precision == "ieee"
    for name in ("demo", "cpu", "cifar10"):
        assert load_config(f"configs/{name}.yaml").precision == "ieee"


def test_unknown_precision_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["precision=fp16"])
    assert str(err.value) == "precision: 'fp16' is not one of ieee, tf32, bf16"


def test_ieee_keeps_the_cell_name_and_the_faster_modes_name_other_cells():
    base = load_config("configs/demo.yaml")
    assert config_digest(load_config("configs/demo.yaml", ["precision=ieee"])) == config_digest(base)
    others = {config_digest(load_config("configs/demo.yaml", [f"precision={p}"])) for p in ("tf32", "bf16")}
    assert len(others) == 2 and config_digest(base) not in others


@pytest.mark.parametrize("precision, mode", [("ieee", "ieee"), ("tf32", "tf32"), ("bf16", "ieee")])
def test_use_precision_sets_both_gpu_switches(gpu_switches, precision, mode):
    matmul, conv = gpu_switches
    use_precision("tf32" if precision != "tf32" else "ieee")      # start from the other state
    use_precision(precision)
    assert matmul.fp32_precision == mode and conv.fp32_precision == mode


def test_only_bf16_turns_autocast_on_in_the_steps():
    for precision in ("ieee", "tf32", "bf16"):
        cfg = load_config("configs/demo.yaml", [f"precision={precision}"])
        step, evaluation = settings_of(cfg, 10)
        assert step.bf16 == evaluation.bf16 == eval_settings(cfg, 10).bf16 == (precision == "bf16")
        assert not step.real_bf16


def _tiny():
    geom = make_geometry(1.0, 4, 8, rows=2, cols=2, n_x=3, n_y=3)
    labels = fixed_labels(geom, [[0, 1], [2, 3]])
    pool = Pool(init_poster(geom, gen(3)).requires_grad_(), None, labels, init_poster(geom, gen(4))[None],
                labels[None])
    real_x = torch.randn(10, 3, 8, 8, generator=gen(5))
    real_y = torch.randint(0, 4, (10,), generator=gen(6))
    settings = StepSettings(batch_patches=6, window=3, inner_lr=1e-2, real_subbatch=0, augment=True,
                            num_classes=4, width=4, depth=2, label_eps=0.0)
    return geom, pool, real_x, real_y, settings


def test_bf16_step_on_the_cpu_is_close_to_float32_and_checkpointing_keeps_it_bitwise():
    geom, pool, real_x, real_y, s = _tiny()
    pi = torch.tensor([0.5, 0.5])
    grads = {}
    for name, settings in (("float32", s), ("bf16", dataclasses.replace(s, bf16=True)),
                           ("bf16_ckpt", dataclasses.replace(s, bf16=True, checkpoint_window=True))):
        loss = meta_gradient(pool, pi, geom, real_x, real_y, 2, settings, gen(11))
        grads[name], pool.live.grad = (loss, pool.live.grad), None
    cosine = F.cosine_similarity(grads["float32"][1].flatten(), grads["bf16"][1].flatten(), dim=0)
    # Through Adam's m/√v the meta-gradient amplifies rounding; with 8 bits it keeps its direction
    # (cosine 0.7-0.97 over seeds at this size), not its digits.
    assert not torch.equal(grads["float32"][1], grads["bf16"][1]) and cosine > 0.5
    assert grads["bf16"][1].dtype == torch.float32
    assert torch.equal(grads["bf16"][0], grads["bf16_ckpt"][0]) and torch.equal(grads["bf16"][1], grads["bf16_ckpt"][1])


def test_bf16_evaluation_on_the_cpu_scores_in_range():
    geom, pool, _, _, _ = _tiny()
    posters, labels = pool.stacked(geom, 0.0)
    s = EvalSettings(nets=2, checkpoints=(1, 3), lr=1e-2, batch_patches=5, augment=True, num_classes=4,
                     width=4, depth=2, test_batch=64, bf16=True)
    x = torch.randn(20, 3, 8, 8, generator=gen(7))
    y = torch.randint(0, 4, (20,), generator=gen(8))
    scores = evaluate_pool(posters, labels, torch.tensor([0.5, 0.5]), geom, x, y, s, gen(9))
    assert scores.shape == (2, 2) and ((scores >= 0) & (scores <= 100)).all()
