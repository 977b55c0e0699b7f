import json

from helpers import cli, set_args


def test_version_prints_package_version():
    result = cli("--version")
    assert result.exit_code == 0 and result.output.startswith("ppodd ")


def test_run_unknown_key_exits_2_with_one_line(tmp_path):
    result = cli("run", "--config", "configs/demo.yaml", "--set", "distill.windw=3", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: distill.windw: unknown key; did you mean 'distill.window'? (allowed: epochs, batch_patches, "
        "real_batch, real_subbatch, window, total_window, min_window, warmup, inner_lr, outer_lr, clip_ema, "
        "clip_factor, augment, checkpoint_window, real_bf16)"]
    assert not list(tmp_path.iterdir())


def test_run_missing_imagefolder_names_data_root(tmp_path):
    result = cli("run", "--config", "configs/cpu.yaml", "--set", f"data.root={tmp_path / 'none'}",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "data.root" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_run_demo_tiny_prints_result_path_then_skips(tmp_path, tiny_overrides):
    sets = set_args(tiny_overrides)
    first = cli("run", "--config", "configs/demo.yaml", *sets, "--out", str(tmp_path / "r"))
    assert first.exit_code == 0, first.output
    path = first.output.strip().splitlines()[-1]
    assert path.endswith(".h5") and (tmp_path / "r").joinpath(path.rsplit("/", 1)[-1]).exists()
    again = cli("run", "--config", "configs/demo.yaml", *sets, "--out", str(tmp_path / "r"))
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1] == path


def test_evaluate_initial_poster_writes_json(tmp_path, tiny_overrides):
    sets = set_args(tiny_overrides)
    out = tmp_path / "initial.json"
    result = cli("evaluate", "initial", "--config", "configs/demo.yaml", *sets, "--json", str(out))
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())
    assert row["checkpoints"] == [2, 4] and len(row["per_net"]) == 2
    # What `ppodd summarize` needs to put the reference next to the runs of its cell.
    assert (row["dataset"], row["ipc"], row["seed"]) == ("synthetic", 0.9, 0)


def test_evaluate_unknown_poster_kind_exits_2():
    result = cli("evaluate", "best")
    assert result.exit_code == 2 and "is not one of initial, real" in result.output
