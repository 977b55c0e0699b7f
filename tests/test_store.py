"""Run files: layout, round trip, atomic writes, and readers that refuse what they cannot trust."""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ppodd.storage import folders, reader, runfile, writer
from ppodd.atomic import WriteError
from ppodd.errors import PpoddError
from ppodd.storage.record import EvalResult, RunRecord, StageRecord

CHECKPOINTS = [300, 600, 1000, 2000]
NETS = 3
K, H, W, N = 10, 60, 153, 96


def _eval(gen: torch.Generator, members: list[int], pi: list[float], pixels: int) -> EvalResult:
    per_net = (40 + 10 * torch.rand(len(CHECKPOINTS), NETS, generator=gen)).double()
    return EvalResult(checkpoints=list(CHECKPOINTS), per_net=per_net, members=members, pi=pi,
                      pixels=pixels, effective_ipc=pixels / (K * 32 * 32), seconds=1.5)


def _record(seed: int = 0) -> RunRecord:
    """A two-stage run with three nets and four checkpoints; stage 2 has a learned label map."""
    gen = torch.Generator().manual_seed(seed)
    stages = []
    for t in (1, 2):
        pi_before = [1.0] if t == 1 else [0.4, 0.6]
        pi_after = [0.5, 0.5] if t == 1 else [0.2, 0.3, 0.5]
        members = list(range(1, t)) + [0]
        accuracy = _eval(gen, members, pi_before, 9180 * t)
        stages.append(StageRecord(
            index=t, epochs=3, poster=torch.randn(3, H, W, generator=gen),
            patch_labels=torch.rand(N, K, generator=gen),
            label_map=torch.rand(K, 6, 16, generator=gen) if t == 2 else None,
            pi_before=pi_before, pi_after=pi_after, accuracy=accuracy,
            stage_accuracy=accuracy.best, pool_pixels=9180 * t,
            in_stage=[(1, _eval(gen, members, pi_before, 9180 * t)),
                      (2, _eval(gen, members, pi_before, 9180 * t))]))
    config = {"method": "ppodd", "seed": seed, "data": {"name": "synthetic", "zca": True},
              "poster": {"ipc": 0.9}, "eval": {"nets": NETS, "checkpoints": CHECKPOINTS},
              "ppodd": {"stages": 2, "variant": "code", "max_slots": None}}
    steps = 6
    return RunRecord(
        config=config,
        geometry={"height": H, "width": W, "tile": 32, "rows": 2, "cols": 5, "n_x": 16,
                  "n_y": 6, "pixels": H * W, "effective_ipc": 0.896484375},
        class_order=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]],
        class_names=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "trück"],
        initial_poster=torch.randn(3, H, W, generator=gen),
        stages=stages,
        final_live=_eval(gen, [0], [1.0], 9180),
        final_pool=_eval(gen, [1, 2, 0], [0.2, 0.3, 0.5], 3 * 9180),
        curves={"loss": torch.rand(steps, generator=gen, dtype=torch.float64),
                "grad_norm": torch.rand(steps, generator=gen),
                "stage": torch.tensor([1, 1, 1, 2, 2, 2])},
        provenance={"ppodd_version": "0.1.0", "git_commit": None, "torch_version": "2.14.1",
                    "device": "cpu", "host": "node01", "start_time": "2025-01-01T00:00:00",
                    "end_time": "2025-01-01T00:01:00", "cuda": False,
                    "seconds": {"data": 1.0, "distill": 50.0, "eval": 9.0}},
        zca_key="abc123",
        seeds={"run": seed, "stage": [11, 12], "eval": {"final": 7}},
    )


def _assert_eval_equal(a: EvalResult, b: EvalResult) -> None:
    assert a.checkpoints == b.checkpoints
    assert torch.equal(a.per_net, b.per_net) and b.per_net.dtype == torch.float64
    assert (a.members, a.pi, a.pixels, a.effective_ipc, a.seconds) == \
        (b.members, b.pi, b.pixels, b.effective_ipc, b.seconds)


def _assert_records_equal(a: RunRecord, b: RunRecord) -> None:
    assert (a.config, a.geometry, a.class_order, a.class_names) == \
        (b.config, b.geometry, b.class_order, b.class_names)
    assert (a.provenance, a.zca_key, a.seeds) == (b.provenance, b.zca_key, b.seeds)
    assert torch.equal(a.initial_poster, b.initial_poster)
    assert a.curves.keys() == b.curves.keys()
    for name in a.curves:
        assert torch.equal(a.curves[name], b.curves[name])
    _assert_eval_equal(a.final_live, b.final_live)
    _assert_eval_equal(a.final_pool, b.final_pool)
    assert len(a.stages) == len(b.stages)
    for sa, sb in zip(a.stages, b.stages):
        assert (sa.index, sa.epochs, sa.pi_before, sa.pi_after, sa.stage_accuracy,
                sa.pool_pixels) == (sb.index, sb.epochs, sb.pi_before, sb.pi_after,
                                    sb.stage_accuracy, sb.pool_pixels)
        assert torch.equal(sa.poster, sb.poster) and torch.equal(sa.patch_labels, sb.patch_labels)
        assert (sa.label_map is None) == (sb.label_map is None)
        if sa.label_map is not None:
            assert torch.equal(sa.label_map, sb.label_map)
        _assert_eval_equal(sa.accuracy, sb.accuracy)
        assert [e for e, _ in sa.in_stage] == [e for e, _ in sb.in_stage]
        for (_, ra), (_, rb) in zip(sa.in_stage, sb.in_stage):
            _assert_eval_equal(ra, rb)


@pytest.fixture
def run_file(tmp_path):
    return writer.write_run(_record(), tmp_path / "run.h5")


def test_read_run_after_write_run_round_trip_equal(tmp_path):
    record = _record()
    path = writer.write_run(record, tmp_path / "run.h5")
    assert path == tmp_path / "run.h5"
    _assert_records_equal(record, reader.read_run(path))


def test_write_run_written_again_reads_the_same(tmp_path):
    first = reader.read_run(writer.write_run(_record(), tmp_path / "a.h5"))
    second = reader.read_run(writer.write_run(first, tmp_path / "b.h5"))
    _assert_records_equal(first, second)


def test_write_run_layout_matches_docstring(run_file):
    with h5py.File(run_file, "r") as f:
        assert f.attrs["format"] == "ppodd-run" and f.attrs["format_version"] == 1
        assert bool(f.attrs["complete"]) is True
        assert sorted(f["stages"]) == ["001", "002"]
        assert f["stages/001/poster"].shape == (3, H, W)
        assert f["stages/001/poster"].dtype == np.float32
        assert f["stages/001/poster"].compression == "gzip"
        assert f["initial_poster"].compression == "gzip"
        assert f["stages/001/patch_labels"].shape == (N, K)
        assert f["stages/001/patch_labels"].compression is None
        assert "label_map" not in f["stages/001"] and "label_map" in f["stages/002"]
        assert f["stages/002/pi_before"].shape == (2,) and f["stages/002/pi_after"].shape == (3,)
        assert sorted(f["stages/001/in_stage"]) == ["00001", "00002"]
        assert f["final/pool/per_net"].shape == (len(CHECKPOINTS), NETS)
        assert f["final/pool/per_net"].dtype == np.float64
        assert f["class_order"].shape == (2, 5) and f["class_names"].shape == (K,)
        assert f["provenance/seconds"].attrs["distill"] == 50.0


def test_read_summary_root_scalars_match_record(run_file):
    record = _record()
    summary = reader.read_summary(run_file)
    assert summary["path"] == str(run_file)
    assert summary["format_version"] == 1
    assert (summary["method"], summary["dataset"], summary["ipc"], summary["seed"],
            summary["variant"], summary["stages"]) == ("ppodd", "synthetic", 0.9, 0, "code", 2)
    assert summary["final_accuracy"] == record.final_pool.final
    assert summary["final_accuracy_live"] == record.final_live.final
    assert summary["final_accuracy_pool"] == record.final_pool.final
    assert (summary["pixels_live"], summary["pixels_pool"]) == (9180, 27540)
    assert summary["effective_ipc_live"] == 9180 / 10240
    assert summary["seconds"] == 60.0  # 1 + 50 + 9 seconds per phase
    assert summary["zca_key"] == "abc123"
    assert summary["config"] == record.config
    assert summary["poster_shape"] == (3, H, W)
    assert summary["provenance"]["git_commit"] is None


def test_read_summary_small_arrays_match_record(run_file):
    record = _record()
    summary = reader.read_summary(run_file)
    stage = summary["stage_list"][1]
    assert (stage["index"], stage["epochs"], stage["pool_pixels"]) == (2, 3, 18360)
    assert stage["pi_before"] == [0.4, 0.6] and stage["pi_after"] == [0.2, 0.3, 0.5]
    assert stage["stage_accuracy"] == record.stages[1].stage_accuracy
    assert stage["accuracy_mean"] == record.stages[1].accuracy.mean.tolist()
    assert stage["accuracy_best"] == record.stages[1].accuracy.best
    pool = summary["final"]["pool"]
    assert pool["checkpoints"] == CHECKPOINTS
    assert pool["per_net"] == record.final_pool.per_net.tolist()
    assert pool["mean"] == record.final_pool.mean.tolist()
    assert (pool["members"], pool["pi"]) == ([1, 2, 0], [0.2, 0.3, 0.5])
    assert pool["final"] == record.final_pool.final


def test_read_summary_any_file_never_reads_posters(run_file, monkeypatch):
    read = []

    def spy(original):
        def read_dataset(loc, member, *args):
            read.append(member)
            return original(loc, member, *args)
        return read_dataset

    # Every dataset read of the readers goes through runfile._array or runfile._numbers.
    monkeypatch.setattr(reader, "_array", spy(reader._array))
    monkeypatch.setattr(reader, "_numbers", spy(reader._numbers))
    reader.read_summary(run_file)
    assert "final/pool/per_net" in read
    assert not [name for name in read if "poster" in name or "label" in name]
    reader.read_run(run_file)
    assert "poster" in read  # the spy does see poster reads where they happen


def test_write_run_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    seen = []

    def broken(group, result):
        seen.append(group.file.filename)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer, "_write_eval", broken)
    with pytest.raises(WriteError, match="run.h5: disk on fire"):
        writer.write_run(_record(), tmp_path / "run.h5")
    name = os.path.basename(seen[0])
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert name.startswith(".") and name.endswith(".tmp")
    assert os.listdir(tmp_path) == []


def test_write_run_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = writer.write_run(_record(seed=1), tmp_path / "run.h5")
    monkeypatch.setattr(writer, "_write_stage", lambda group, stage: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.write_run(_record(seed=2), path)
    assert os.listdir(tmp_path) == ["run.h5"]
    assert reader.read_summary(path)["seed"] == 1


@pytest.mark.parametrize("complete", [False, None])
def test_read_summary_incomplete_file_refused(run_file, complete):
    with h5py.File(run_file, "r+") as f:
        if complete is None:
            del f.attrs["complete"]
        else:
            f.attrs["complete"] = complete
    with pytest.raises(runfile.IncompleteFileError) as err:
        reader.read_summary(run_file)
    assert str(err.value) == (f"{run_file}: incomplete: the run has not finished or was "
                              "interrupted")
    assert err.value.reason == "incomplete"


def test_read_summary_newer_format_version_refused_with_upgrade_message(run_file):
    with h5py.File(run_file, "r+") as f:
        f.attrs["format_version"] = np.int64(2)
    with pytest.raises(runfile.NewerFormatError) as err:
        reader.read_run(run_file)
    assert str(err.value) == (f"{run_file}: written by a newer ppodd (format_version 2 > 1); "
                              "upgrade ppodd to read it")
    assert isinstance(err.value, PpoddError) and err.value.reason == "newer"


def test_read_summary_unknown_older_format_version_refused(run_file):
    with h5py.File(run_file, "r+") as f:
        f.attrs["format_version"] = np.int64(0)
    with pytest.raises(runfile.ForeignFileError, match="format_version 0 is unknown"):
        reader.read_summary(run_file)


def test_read_summary_plain_hdf5_file_refused_as_foreign(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(runfile.ForeignFileError, match="no 'format' attribute") as err:
        reader.read_summary(path)
    assert str(path) in str(err.value) and err.value.reason == "foreign"


def test_read_summary_other_format_refused_as_foreign(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "anndata"
    with pytest.raises(runfile.ForeignFileError, match="format 'anndata'"):
        reader.read_summary(path)


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_read_summary_truncated_file_refused_as_corrupt(run_file, keep):
    data = run_file.read_bytes()
    run_file.write_bytes(data[:int(len(data) * keep)])
    for read in (reader.read_summary, reader.read_run):
        with pytest.raises(runfile.CorruptFileError) as err:
            read(run_file)
        message = str(err.value)
        assert message.startswith(f"{run_file}: ") and "\n" not in message
        assert err.value.reason == "corrupt"


def test_read_summary_text_file_refused_as_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just some notes\n")
    with pytest.raises(runfile.CorruptFileError) as err:
        reader.read_summary(path)
    assert str(err.value) == f"{path}: not an HDF5 file"


def test_read_run_missing_file_refused(tmp_path):
    with pytest.raises(runfile.MissingFileError, match="no such file"):
        reader.read_run(tmp_path / "absent.h5")


def test_read_summary_missing_dataset_refused_as_corrupt(run_file):
    with h5py.File(run_file, "r+") as f:
        del f["final/pool/mean"]
    with pytest.raises(runfile.CorruptFileError, match="damaged run file"):
        reader.read_summary(run_file)


def test_write_run_unknown_provenance_value_stored_as_text(tmp_path):
    record = _record()
    record.provenance = {"device": torch.device("cpu"), "seconds_total": 12.5}
    summary = reader.read_summary(writer.write_run(record, tmp_path / "run.h5"))
    assert summary["provenance"]["device"] == "cpu"
    assert summary["seconds"] == 12.5


def test_write_run_no_timing_seconds_is_nan(tmp_path):
    record = _record()
    record.provenance = {}
    assert math.isnan(reader.read_summary(writer.write_run(record, tmp_path / "r.h5"))["seconds"])


def test_check_writable_existing_folder_passes(tmp_path):
    folders.check_writable(tmp_path / "new" / "sub", need_bytes=1)
    assert (tmp_path / "new" / "sub").is_dir()
    assert os.listdir(tmp_path / "new" / "sub") == []


def test_check_writable_too_little_space_names_bytes(tmp_path):
    with pytest.raises(PpoddError, match=r"bytes free, 1000000000000000000000 bytes needed") as err:
        folders.check_writable(tmp_path, need_bytes=10**21)
    assert str(tmp_path) in str(err.value)


def test_check_writable_folder_under_a_file_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PpoddError, match="cannot create output folder"):
        folders.check_writable(blocker / "out", need_bytes=0)


def test_read_archived_format_v1():
    path = Path(__file__).parent / "data" / "run-format-v1.h5"
    record = reader.read_run(path)
    summary = reader.read_summary(path)
    assert summary["format_version"] == 1 and summary["method"] == "ppodd"
    assert list(summary["poster_shape"]) == [3, 15, 38]
    assert len(record.stages) == 2 and record.stages[1].pi_before == summary["stage_list"][1]["pi_before"]
    assert summary["final_accuracy_live"] == record.final_live.final


def test_read_scores_agrees_with_read_summary_for_cells_of_a_grid(tmp_path):
    for seed, ipc, method in ((0, 0.9, "ppodd"), (1, 0.6, "ppodd"), (2, 0.9, "podd")):
        record = _record(seed)
        record.config = {**record.config, "method": method, "poster": {"ipc": ipc}}
        path = writer.write_run(record, tmp_path / f"run{seed}.h5")
        scores, summary = reader.read_scores(path), reader.read_summary(path)
        assert scores["config"] == summary["config"] == record.config
        for key in ("method", "dataset", "ipc", "seed", "variant", "stages", "final_accuracy",
                    "final_accuracy_live", "final_accuracy_pool", "pixels_live", "pixels_pool",
                    "effective_ipc_live", "effective_ipc_pool", "seconds", "format_version",
                    "poster_shape", "path"):
            assert scores[key] == summary[key], key
        assert scores["stage_accuracies"] == [s["stage_accuracy"] for s in summary["stage_list"]]
        assert scores["pi_after"] == [s["pi_after"] for s in summary["stage_list"]]
        for name in ("live", "pool"):
            assert scores["final"][name] == {k: summary["final"][name][k] for k in ("checkpoints", "mean")}
        scores["config"]["data"]["name"] = "changed"  # the parsed config is never shared
        assert reader.read_scores(path)["config"]["data"]["name"] == "synthetic"


def test_read_scores_archived_format_v1_and_refusals(run_file):
    path = Path(__file__).parent / "data" / "run-format-v1.h5"
    assert reader.read_scores(path)["config"] == reader.read_summary(path)["config"]
    with h5py.File(run_file, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(runfile.IncompleteFileError):
        reader.read_scores(run_file)


def test_schema_bump_keeps_reading_older_files_and_refuses_newer(tmp_path, monkeypatch):
    # What a format_version 2 would do: add a reader per version and keep the old ones.
    archived = Path(__file__).parent / "data" / "run-format-v1.h5"
    used = []
    v1 = reader._SUMMARY_READERS[1]

    def read_v2(*args, **kwargs):
        used.append(2)
        return {**v1(*args, **kwargs), "format_version": 2}

    monkeypatch.setattr(runfile, "FORMAT_VERSION", 2)
    monkeypatch.setitem(reader._SUMMARY_READERS, 2, read_v2)
    assert reader.read_summary(archived)["format_version"] == 1 and used == []
    for version, outcome in ((2, None), (3, runfile.NewerFormatError)):
        path = tmp_path / f"v{version}.h5"
        path.write_bytes(archived.read_bytes())
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = np.int64(version)
        if outcome is None:
            assert reader.read_summary(path)["format_version"] == 2 and used == [2]
        else:
            with pytest.raises(outcome, match=r"format_version 3 > 2\); upgrade ppodd") as err:
                reader.read_summary(path)
            assert err.value.exit_code == 2


def test_checkpoint_of_another_format_refused_with_one_line(tmp_path):
    from ppodd.storage import checkpoint

    path = tmp_path / "cell.ckpt"
    torch.save({"version": checkpoint.CHECKPOINT_VERSION + 1, "config_digest": "abc", "state": {}}, path)
    with pytest.raises(PpoddError, match="belongs to another config or ppodd version; delete it to start over"):
        checkpoint.load_checkpoint(path, "abc", torch.device("cpu"))
    path.write_bytes(b"cut short")
    with pytest.raises(PpoddError, match=r"cannot be read \(.*\); delete it to start over"):
        checkpoint.load_checkpoint(path, "abc", torch.device("cpu"))
