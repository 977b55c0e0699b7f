import h5py
import pytest
import torch
from helpers import set_args

from ppodd.config import load_config
from ppodd.errors import ConfigError
from ppodd.cell.host import Host
from ppodd.cell.identity import cell_files, result_name
from ppodd.cell.run import run_cell
from ppodd.cell.stages import Interrupted
from ppodd.storage.reader import read_run


def run(tmp_path, overrides, log, out="out", **kw):
    cfg = load_config("configs/demo.yaml", overrides)
    return cfg, run_cell(cfg, cell_files(cfg, tmp_path / out), Host(tmp_path / "cache"), log, bar=False, **kw)


def assert_same_results(a, b):
    assert len(a.stages) == len(b.stages)
    for sa, sb in zip(a.stages, b.stages):
        assert torch.equal(sa.poster, sb.poster)
        assert torch.equal(sa.patch_labels, sb.patch_labels)
        assert sa.pi_before == sb.pi_before and sa.pi_after == sb.pi_after
        assert torch.equal(sa.accuracy.per_net, sb.accuracy.per_net)
    assert torch.equal(a.final_live.per_net, b.final_live.per_net)
    assert torch.equal(a.final_pool.per_net, b.final_pool.per_net)
    assert torch.equal(a.curves["loss"], b.curves["loss"])


def test_run_cell_writes_complete_record_with_honest_budget(tmp_path, tiny_overrides, log):
    cfg, path = run(tmp_path, tiny_overrides, log)
    assert path.name == result_name(cfg)
    rec = read_run(path)
    assert [s.index for s in rec.stages] == [1, 2]
    assert rec.stages[0].pi_before == [1.0] and len(rec.stages[1].pi_before) == 2
    assert sum(rec.stages[1].pi_after) == pytest.approx(1.0)
    px = rec.geometry["pixels"]
    assert rec.final_live.pixels == px and rec.final_pool.pixels == 2 * px
    assert rec.final_live.per_net.shape == (2, 2)
    assert len(rec.curves["loss"]) == 2 * 2        # 2 stages x 1 epoch x 2 outer steps
    assert rec.provenance["ppodd_version"] and rec.config["seed"] == 0
    with h5py.File(path) as f:
        assert f.attrs["complete"]
    assert not list((tmp_path / "out").glob("*.ckpt"))


def test_run_cell_resumed_after_interruption_is_bitwise_equal(tmp_path, tiny_overrides, log):
    _, straight = run(tmp_path, tiny_overrides, log, out="a")
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] == 3

    with pytest.raises(Interrupted):
        run(tmp_path, tiny_overrides, log, out="b", should_stop=stop_after_three)
    assert not list((tmp_path / "b").glob("*.h5"))
    assert list((tmp_path / "b").glob("*.ckpt"))
    _, resumed = run(tmp_path, tiny_overrides, log, out="b")
    assert_same_results(read_run(straight), read_run(resumed))


@pytest.mark.slow
def test_run_cell_demo_tensor_sizes_on_two_threads_are_bitwise_reproducible(tmp_path, log):
    # The demo config's poster, patch batch and network as they are (large enough for PyTorch's
    # parallel CPU kernels), with fewer steps: two runs on two threads must agree bit for bit.
    over = ["threads=2", "data.synthetic.train_per_class=60", "data.synthetic.test_per_class=20",
            "distill.epochs=3", "eval.checkpoints=[10]", f"data.cache_dir={tmp_path / 'cache'}"]
    before = torch.get_num_threads()
    try:
        _, first = run(tmp_path, over, log, out="a")
        _, second = run(tmp_path, over, log, out="b")
    finally:
        torch.set_num_threads(before)
    assert_same_results(read_run(first), read_run(second))


def test_run_cell_podd_is_single_stage_of_same_path(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides + ["method=podd"], log)
    rec = read_run(path)
    assert len(rec.stages) == 1
    assert torch.equal(rec.final_live.per_net, rec.final_pool.per_net)
    assert rec.final_pool.pixels == rec.geometry["pixels"]


def test_run_cell_code_variant_runs_past_five_stages(tmp_path, tiny_overrides, log):
    over = tiny_overrides + ["ppodd.variant=code", "ppodd.stages=6", "distill.epochs=6"]
    _, path = run(tmp_path, over, log)
    rec = read_run(path)
    assert len(rec.stages) == 6
    assert len(rec.final_pool.pi) == 6
    assert rec.final_pool.pi[4] == 0.0 and rec.final_pool.pi[-1] > 0  # S_5 beyond the 5-slot cap


def test_run_cell_complete_result_is_not_recomputed(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides, log)
    stamp = path.stat().st_mtime_ns
    _, again = run(tmp_path, tiny_overrides, log)
    assert again == path and path.stat().st_mtime_ns == stamp


def test_run_cell_too_many_patches_per_step_fails_before_work(tmp_path, tiny_overrides, log):
    with pytest.raises(ConfigError, match="distill.batch_patches: must be <= the poster's"):
        run(tmp_path, tiny_overrides + ["distill.batch_patches=500"], log)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ppodd_run_sigterm_checkpoints_exits_and_resumes(tmp_path, tiny_overrides):
    import os
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ppodd.cli", "run", "--config", "configs/demo.yaml",
           *set_args(tiny_overrides + ["distill.epochs=20"]), "--out", str(tmp_path / "out")]
    env = {**os.environ, "PPODD_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
        if '"outer_step"' in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "rerun to resume" in err
    assert list((tmp_path / "out").glob("*.ckpt")) and not list((tmp_path / "out").glob("*.h5"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"resume"' in done.stderr
    assert done.stdout.strip().endswith(".h5")


def test_run_cell_learned_labels_train_and_stay_nonnegative(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides + ["poster.labels=learned"], log)
    rec = read_run(path)
    for stage in rec.stages:
        assert stage.label_map is not None and (stage.label_map >= 0).all()
        torch.testing.assert_close(stage.patch_labels.sum(1), torch.ones(len(stage.patch_labels)))
    assert not torch.equal(rec.stages[0].label_map, rec.stages[1].label_map)


def test_run_cell_in_stage_evaluations_skip_the_stage_end(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides + ["distill.epochs=4", "eval.every_epochs=1"], log)
    rec = read_run(path)
    assert [[e for e, _ in s.in_stage] for s in rec.stages] == [[1], [3]]


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_run_cell_checkpoint_write_fails_one_line_previous_checkpoint_intact_then_resumes(
        tmp_path, tiny_overrides, log, monkeypatch):
    import ppodd.storage.checkpoint
    from ppodd.storage.checkpoint import load_checkpoint
    from ppodd.cell.identity import config_digest
    from ppodd.errors import PpoddError

    _, straight = run(tmp_path, tiny_overrides, log, out="a")
    real_save, calls = torch.save, []

    def save_then_fill_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the stage-2 checkpoint: stage 1 is saved, then the disk is full
            _disk_full()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ppodd.storage.checkpoint.torch, "save", save_then_fill_disk)
    with pytest.raises(PpoddError) as err:
        run(tmp_path, tiny_overrides, log, out="b")
    monkeypatch.undo()
    message = str(err.value)
    assert "cannot write checkpoint" in message and "No space left on device" in message
    assert "previous checkpoint is intact" in message and "\n" not in message
    cfg = load_config("configs/demo.yaml", tiny_overrides)
    ckpt = (tmp_path / "b" / result_name(cfg)).with_suffix(".ckpt")
    assert load_checkpoint(ckpt, config_digest(cfg), torch.device("cpu")).stage == 1
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ckpt.name]  # no temporary file, no lock
    _, resumed = run(tmp_path, tiny_overrides, log, out="b")
    assert_same_results(read_run(straight), read_run(resumed))


def test_run_cell_result_write_fails_one_line_rerun_writes_without_evaluating(
        tmp_path, tiny_overrides, log, monkeypatch):
    import ppodd.cell.stages
    import ppodd.storage.writer
    from ppodd.errors import PpoddError

    # The disk fills up while the run file is written, after every evaluation.
    monkeypatch.setattr(ppodd.storage.writer, "_write_layout", _disk_full)
    with pytest.raises(PpoddError, match=r"cannot write result .*No space left on device.*rerun to write it"):
        run(tmp_path, tiny_overrides, log)
    monkeypatch.undo()
    assert not list((tmp_path / "out").glob("*.h5")) and not list((tmp_path / "out").glob(".*.tmp"))
    monkeypatch.setattr(ppodd.cell.stages, "evaluate_pool", lambda *a, **k: pytest.fail("evaluated again"))
    _, path = run(tmp_path, tiny_overrides, log)
    assert read_run(path).final_pool.per_net.shape == (2, 2)


def test_run_cell_newer_result_at_its_path_refused_and_kept(tmp_path, tiny_overrides, log):
    import numpy as np

    from ppodd.storage.runfile import NewerFormatError

    _, path = run(tmp_path, tiny_overrides, log)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(99)
    before = path.read_bytes()
    with pytest.raises(NewerFormatError, match="format_version 99 > 1"):
        run(tmp_path, tiny_overrides, log)
    assert path.read_bytes() == before


def test_run_cell_complete_result_beside_leftovers_of_a_killed_run_tidies_them(tmp_path, tiny_overrides, log):
    _, path = run(tmp_path, tiny_overrides, log)
    stamp = path.stat().st_mtime_ns
    # A kill just after the rename leaves the checkpoint, a temporary file and the lock file.
    leftovers = [path.with_suffix(".ckpt"), path.with_name(f".{path.name}.99999.tmp"), path.with_suffix(".lock")]
    for leftover in leftovers:
        leftover.write_bytes(b"left by a killed run")
    _, again = run(tmp_path, tiny_overrides, log)
    assert again == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_prepare_makes_gpu_convolutions_full_float32(tmp_path, tiny_overrides):
    # cuDNN's default for float32 convolutions is TF32 on Ampere and later GPUs; a run must not
    # silently compute in 10-bit mantissas there. The flag is process-wide, so restore it.
    from ppodd.cell.prepare import prepare

    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    conv.fp32_precision = "tf32"
    try:
        prepare(load_config("configs/demo.yaml", tiny_overrides), Host(tmp_path / "cache"))
        assert conv.fp32_precision == "ieee"
    finally:
        conv.fp32_precision = saved
