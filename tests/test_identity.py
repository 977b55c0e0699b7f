"""A cell's identity: which config fields name its files, and finding them again."""

import pytest
import torch

import ppodd.cell.stages
from ppodd.cell.host import Host
from ppodd.cell.identity import (RUN_ONLY_KEYS, CellFiles, cell_files, config_digest, is_complete, legacy_digest,
                                  result_fields, result_name)
from ppodd.cell.run import run_cell
from ppodd.cell.stages import Interrupted
from ppodd.config import load_config
from ppodd.storage.reader import read_run
from ppodd.storage.runfile import NewerFormatError

# A value for every key that says where or how fast a run goes, different from the defaults.
ELSEWHERE = {"device": "cpu", "threads": 2, "checkpoint_minutes": 1.5, "data.root": "/moved/data",
             "data.cache_dir": "/moved/cache", "data.download": True, "distill.real_subbatch": 50,
             "eval.test_batch": 7, "eval.batching": "sequential", "eval.compile": True}


def test_run_only_keys_leave_the_digest_and_every_other_key_changes_it():
    base = load_config("configs/demo.yaml")
    assert set(ELSEWHERE) == set(RUN_ONLY_KEYS)
    moved = load_config("configs/demo.yaml", [f"{k}={v}" for k, v in ELSEWHERE.items()])
    assert config_digest(moved) == config_digest(base)
    assert result_fields(moved) == result_fields(base)
    assert legacy_digest(moved) != legacy_digest(base)  # ppodd 0.1 renamed the cell for these
    for change in ("seed=1", "poster.ipc=0.6", "distill.window=5", "eval.lr=0.02", "ppodd.boost=0"):
        assert config_digest(load_config("configs/demo.yaml", [change])) != config_digest(base), change


def test_podd_digest_ignores_the_decay_anchor_that_never_acts_on_one_poster():
    podd = load_config("configs/demo.yaml", ["method=podd"])
    assert podd.ppodd.decay_anchor == "newest"
    for anchor in ("oldest", "newest"):
        other = load_config("configs/demo.yaml", ["method=podd", f"ppodd.decay_anchor={anchor}"])
        assert config_digest(other) == config_digest(podd)
    # P-PoDD cells, where the anchor weighs the pool, differ
    assert config_digest(load_config("configs/demo.yaml", ["ppodd.decay_anchor=oldest"])) != config_digest(
        load_config("configs/demo.yaml"))


def test_cell_files_share_one_stem(tmp_path):
    cfg = load_config("configs/demo.yaml")
    files = cell_files(cfg, tmp_path)
    assert files.result == tmp_path / result_name(cfg) and files.digest == config_digest(cfg)
    assert files.result.name.endswith(f"-{config_digest(cfg)}.h5")
    stem = files.name
    assert [files.checkpoint.name, files.lock.name, files.state.name] == [
        f"{stem}.ckpt", f"{stem}.lock", f"{stem}.state.json"]


def _no_work(*args, **kwargs):
    raise AssertionError("a finished cell was computed again")


def test_rerun_with_moved_data_and_other_threads_redoes_nothing(tmp_path, tiny_overrides, log, monkeypatch):
    first = load_config("configs/demo.yaml", tiny_overrides + ["threads=1", f"data.root={tmp_path / 'data'}"])
    path = run_cell(first, cell_files(first, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False)
    moved = load_config("configs/demo.yaml", tiny_overrides + [
        "threads=2", f"data.root={tmp_path / 'moved'}", f"data.cache_dir={tmp_path / 'other-cache'}"])
    monkeypatch.setattr(ppodd.cell.stages, "meta_gradient", _no_work)
    monkeypatch.setattr(ppodd.cell.stages, "evaluate_pool", _no_work)
    again = run_cell(moved, cell_files(moved, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False)
    assert again == path and sorted(p.name for p in (tmp_path / "out").iterdir()) == [path.name]


def test_resume_on_another_thread_count_finishes_the_same_cell(tmp_path, tiny_overrides, log):
    saved = torch.get_num_threads()
    try:
        one = load_config("configs/demo.yaml", tiny_overrides + ["threads=1"])
        files = cell_files(one, tmp_path / "out")
        steps = []
        with pytest.raises(Interrupted):
            run_cell(one, files, Host(tmp_path / "cache"), log, bar=False,
                     should_stop=lambda: steps.append(1) or len(steps) >= 2)
        assert files.checkpoint.exists() and not files.result.exists()
        two = load_config("configs/demo.yaml", tiny_overrides + ["threads=2"])
        assert cell_files(two, tmp_path / "out") == files
        path = run_cell(two, files, Host(tmp_path / "cache"), log, bar=False)
    finally:
        torch.set_num_threads(saved)
    assert path == files.result and is_complete(path) and not files.checkpoint.exists()
    assert read_run(path).curves["loss"].numel() > 2  # it went on from the checkpoint to the end


def test_result_named_by_ppodd_0_1_is_found_and_not_redone(tmp_path, tiny_overrides, log, monkeypatch):
    cfg = load_config("configs/demo.yaml", tiny_overrides)
    old = CellFiles(tmp_path / "out" / result_name(cfg, legacy_digest(cfg)), legacy_digest(cfg))
    run_cell(cfg, old, Host(tmp_path / "cache"), log, bar=False)
    assert cell_files(cfg, tmp_path / "out") == old
    monkeypatch.setattr(ppodd.cell.stages, "meta_gradient", _no_work)
    assert run_cell(cfg, cell_files(cfg, tmp_path / "out"), Host(tmp_path / "cache"), log, bar=False) == old.result


def test_is_complete_reads_the_header_and_refuses_newer_files(tmp_path):
    import h5py
    import numpy as np

    assert not is_complete(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert not is_complete(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "newer.h5", "w") as f:
        f.attrs["format"] = "ppodd-run"
        f.attrs["format_version"] = np.int64(99)
        f.attrs["complete"] = True
    with pytest.raises(NewerFormatError):
        is_complete(tmp_path / "newer.h5")
