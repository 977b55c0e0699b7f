import os

import pytest
import structlog

from ppodd.cell.host import Host
from ppodd.cell.progress import configure_logging

# A run small enough to go through every stage of the real pipeline in a few seconds.
TINY = [
    "data.synthetic.image_size=8", "data.synthetic.train_per_class=20", "data.synthetic.test_per_class=10",
    "model.width=4", "model.depth=2",
    "distill.epochs=2", "distill.real_batch=100", "distill.window=2", "distill.total_window=4",
    "eval.nets=2", "eval.checkpoints=[2,4]", "ppodd.stages=2",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides that shrink configs/demo.yaml to a seconds-long run with a private cache."""
    return TINY + [f"data.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def host(tmp_path):
    """This machine as a run sees it, with a private cache and no Slurm CPU grant."""
    return Host(cache_dir=tmp_path / "host-cache")


@pytest.fixture
def log():
    # A CLI test before may have pointed structlog at its own, now closed, stderr.
    configure_logging()
    return structlog.get_logger("test")


def pytest_addoption(parser):
    parser.addoption("--kills", type=int, default=5,
                     help="SIGKILLs in tests/test_kill.py's kill series (default 5, one per phase; "
                          "10 or more for the full series; PPODD_KILLS overrides)")
    parser.addoption("--kill-config", choices=["shrunk", "full"], default=None,
                     help="tests/test_kill.py on a seconds-long shrink of configs/demo.yaml (default) "
                          "or on the full demo config; PPODD_KILL_CONFIG overrides")


def pytest_configure(config):
    # test_kill.py builds its command lines at import time, from the environment.
    choice = config.getoption("--kill-config")
    if choice and "PPODD_KILL_CONFIG" not in os.environ:
        os.environ["PPODD_KILL_CONFIG"] = choice
