"""`eval.compile`: the evaluation step's gradient built by torch.compile computes the eager numbers
up to rounding, repeats itself bit for bit, runs a whole cell, and a node that cannot build
kernels is refused before any work."""

import shutil

import pytest
import torch
import torch._dynamo
from helpers import gen
from test_evaluate import setup
from test_run import run

from ppodd.cell.identity import result_name
from ppodd.config import load_config
from ppodd.errors import ConfigError
from ppodd.method.evaluate import EvalSettings, evaluate_pool, train_step
from ppodd.method.model import init_params
from ppodd.method.networks import NetSpec, Weights
from ppodd.method.unroll import AdamState, draw_step
from ppodd.storage.reader import read_run

# Building the kernels takes 10-30 s on 2 cores (a C++ compiler runs for each graph).
pytestmark = pytest.mark.slow
needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                                    reason="torch.compile on the CPU needs a C++ compiler (g++ or clang++)")


@needs_compiler
def test_compiled_training_steps_equal_eager_ones_to_rounding():
    # float64, so that Adam's division by √v cannot blow float32 rounding up to a visible step.
    geom, posters, labels = setup()
    posters, labels = posters.double(), labels.double()
    nets, pi = 2, torch.tensor([0.5, 0.5])
    start = [p.double() for p in init_params(4, 4, 2, 8, gen(3), nets=nets)]
    draws = [draw_step(pi, 5, 9, True, gen(10 + s), nets=nets) for s in range(3)]
    spec = NetSpec("convnet", 4, 8, 4, 2)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    trained = {}
    for compiled in (False, True):
        settings = EvalSettings(nets, (3,), 1e-2, 5, True, 4, 4, 2, 64, compile=compiled)
        weights, state = Weights(list(start), []), AdamState.zeros_like(start)
        for draw in draws:
            weights, state = train_step(spec, weights, state, posters, labels, draw, geom, settings)
        trained[compiled] = weights.params
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs   # the compiled path ran
    for eager, compiled, first in zip(trained[False], trained[True], start):
        assert not torch.equal(eager, first)
        # float64's default tolerance (1e-7): Adam's first steps divide near-zero gradients by
        # their own size, which lifts the compiled kernels' other summation order to about 1e-8.
        torch.testing.assert_close(compiled, eager)


@needs_compiler
def test_compiled_evaluation_is_bitwise_repeatable():
    geom, posters, labels = setup()
    s = EvalSettings(nets=2, checkpoints=(2, 4), lr=1e-2, batch_patches=5, augment=True, num_classes=4,
                     width=4, depth=2, test_batch=64, compile=True)
    x = torch.randn(20, 3, 8, 8, generator=gen(7))
    y = torch.randint(0, 4, (20,), generator=gen(8))
    a = evaluate_pool(posters, labels, torch.tensor([0.5, 0.5]), geom, x, y, s, gen(9))
    b = evaluate_pool(posters, labels, torch.tensor([0.5, 0.5]), geom, x, y, s, gen(9))
    assert a.shape == (2, 2) and torch.equal(a, b)


@needs_compiler
def test_a_cell_runs_with_compiled_evaluation_under_the_eager_cells_name(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides + ["eval.compile=true"], log)
    assert path.name == result_name(load_config("configs/demo.yaml", tiny_overrides))
    rec = read_run(path)
    assert rec.config["eval"]["compile"] is True
    assert rec.final_pool.per_net.shape == (2, 2)
    assert ((rec.final_pool.per_net >= 0) & (rec.final_pool.per_net <= 100)).all()


def test_a_node_without_a_compiler_is_refused_before_any_work(tmp_path, tiny_overrides, log, monkeypatch):
    from torch._inductor import config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("no-such-c++-compiler",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)     # a cached kernel would need no compiler
    torch._dynamo.reset()                                       # nor would a graph this process built
    with pytest.raises(ConfigError, match=r"eval.compile: torch.compile cannot build kernels on cpu .*"
                                          r"or set eval.compile: false"):
        run(tmp_path, tiny_overrides + ["eval.compile=true"], log)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
