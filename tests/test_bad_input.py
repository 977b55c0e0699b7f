"""Bad input to `run`, `submit`, `summarize` and `status`: one line naming the value and what is
allowed, exit code 2, no traceback, and nothing written or submitted.

`summarize` keeps its own rule for bad run files (name each, summarise the rest, exit 1); its
argument-level mistakes are bad input like any other.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import cli, set_args, yaml_bomb

from ppodd.storage.manifest import MANIFEST

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
ARCHIVED = REPO / "tests" / "data" / "run-format-v1.h5"

# Expanded, it would hold 9**10 (3.5 billion) strings; its first alias is on line 2.
BOMB = yaml_bomb(levels=9, width=9)
# name -> text of a bad config file (written under the test's tmp_path)
FILES = {
    "bomb.yaml": BOMB,
    "not yaml.yaml": "a: b: c\n",
    "binary.yaml": bytes(range(256)) * 8,
    "deep.yaml": "a: " + "[" * 50000 + "]" * 50000 + "\n",
    "list.yaml": "- method: ppodd\n- seed: 1\n",
}


def _set(*overrides: str) -> list[str]:
    return set_args(overrides)


# (command, arguments, what the one line must say); {tmp} is the test's folder, {out} its output.
CASES = [
    ("run", _set("poster.ipc=0"), "poster.ipc: must be > 0.0, got 0.0"),
    ("run", _set("poster.ipc=-0.5"), "poster.ipc: must be > 0.0, got -0.5"),
    ("run", _set("poster.ipc=.nan"), "poster.ipc: expected a finite number, got nan"),
    ("run", _set("poster.ipc=nan"), "poster.ipc: expected a finite number, got nan"),
    ("run", _set("poster.ipc=abc"), "poster.ipc: expected a number, got 'abc'"),
    ("run", _set("poster.ipc=1e9"), "poster.ipc: must be <= 50.0, got 1000000000.0"),
    ("run", _set("seed=-3"), "seed: must be >= 0, got -3"),
    ("run", _set("seed=three"), "seed: expected an integer, got 'three'"),
    ("run", _set("seeed=1"), "seeed: unknown key; did you mean 'seed'?"),
    ("run", _set("poster.ipcc=0.5"), "poster.ipcc: unknown key; did you mean 'poster.ipc'?"),
    ("run", _set("ppodd.stagse=3"), "ppodd.stagse: unknown key; did you mean 'ppodd.stages'?"),
    ("run", _set("distill.epochs=2.5"), "distill.epochs: expected an integer, got 2.5"),
    ("run", _set("eval.checkpoints=5"), "eval.checkpoints: expected a non-empty list of int, got 5"),
    ("run", _set("ppodd.reset_outer_adam=sometimes"), "ppodd.reset_outer_adam: expected true or false"),
    ("run", _set("model=wide"), "model: expected a mapping of keys, got 'wide'"),
    ("run", _set("device=tpu"), "device: 'tpu' is not one of auto, cpu, cuda"),
    ("run", _set("=3"), "expected KEY=VALUE"),
    ("run", _set("data.name=imagefolder", "data.root={tmp}/none"), "data.root: folder {tmp}/none does not exist"),
    ("run", _set("data.name=imagefolder", "data.root={tmp}/empty"), "data.root: {tmp}/empty/train has no class folders"),
    ("run", _set("data.name=imagefolder", "data.root={tmp}/no images"), "holds no images"),
    ("run", _set("data.name=cifar10", "data.root={tmp}/none"), "data.root: no cifar10 copy found at {tmp}/none"),
    ("run", _set("poster.rows=3", "poster.cols=3"), "class grid 3 x 3 does not hold 10 classes"),
    ("run", _set("poster.height=200", "poster.width=200"), "poster 200 x 200 has 40000 pixels, over the budget"),
    ("run", _set("poster.patches_x=100", "poster.patches_y=2"), "n_x = 100 patches, but a 76 x 30 poster has 61"),
    ("run", _set("distill.batch_patches=5000"), "distill.batch_patches: must be <= the poster's"),
    ("run", _set("distill.epochs=2"), "distill.epochs: must be >= ppodd.stages (3) so every stage gets an epoch"),
    ("run", _set("poster.class_order={tmp}/order.json"), "class order file {tmp}/order.json cannot be read"),
    ("run", ["--config", "{tmp}/bomb.yaml"], "YAML aliases are not allowed in configs (line 2)"),
    ("run", ["--config", "{tmp}/not yaml.yaml"], "config file '{tmp}/not yaml.yaml' is not valid YAML (line 1)"),
    ("run", ["--config", "{tmp}/binary.yaml"], "is not UTF-8 text"),
    ("run", ["--config", "{tmp}/deep.yaml"], "nests lists or mappings too deeply"),
    ("run", ["--config", "{tmp}/list.yaml"], "must hold a mapping of keys, got list"),
    ("run", ["--config", "{tmp}"], "is a folder; expected a YAML file"),
    ("run", ["--config", "{tmp}/absent.yaml"], "config file not found: '{tmp}/absent.yaml'"),
    ("submit", ["--seeds", "5-2"], "--seeds '5-2': range '5-2' runs backwards; write 2-5"),
    ("submit", ["--seeds", "a-b"], "--seeds 'a-b': 'a-b' is not a seed or a range"),
    ("submit", ["--seeds", "0-2000000000"], "--seeds '0-2000000000': 2000000001 seeds; allowed at most 100000"),
    ("submit", ["--seeds", "0-999"], "grid of 1000 cells (1000 (--seeds)) is above 500; add --yes"),
    ("submit", ["--ipc", "0.5,0.9", "--grid", "ppodd.boost=0,1,2", "--seeds", "0-99"],
     "grid of 600 cells (2 (--ipc) x 3 (--grid ppodd.boost) x 100 (--seeds)) is above 500"),
    ("submit", ["--ipc", "0.6,,0.9"], "--ipc '0.6,,0.9': expected a comma-separated list without empty items"),
    ("submit", ["--ipc", "0,0.5"], "poster.ipc: must be > 0.0, got 0.0"),
    ("submit", ["--grid", "ppodd.bost=0,1"], "ppodd.bost: unknown key; did you mean 'ppodd.boost'?"),
    ("submit", ["--grid", "boost"], "--grid 'boost': expected KEY=V1,V2"),
    # Every cell's poster is checked, not one per poster setting: the second cell has too many patches.
    ("submit", ["--grid", "distill.batch_patches=96,5000"], "distill.batch_patches: must be <= the poster's"),
    ("submit", ["--method", "ppod"], "--method 'ppod': allowed ppodd, podd"),
    ("submit", ["--cluster", "slurmm"], "--cluster 'slurmm': allowed auto, slurm, local, debug"),
    ("submit", ["--workers", "0"], "--workers: must be >= 1, got 0"),
    ("submit", ["--array-parallelism", "0"], "--array-parallelism: must be >= 1, got 0"),
    ("submit", ["--time", "0"], "--time '0': must be at least one minute"),
    ("submit", ["--cpus-per-task", "-1"], "--cpus-per-task: must be >= 0, got -1"),
    ("submit", ["--mem", "32GB"], "--mem '32GB': expected a number with an optional K, M, G or T suffix"),
    ("submit", ["--sbatch=constraint"], "--sbatch 'constraint': expected --KEY=VALUE or --FLAG"),
    ("submit", _set("poster.ipc=0"), "poster.ipc: must be > 0.0"),
    ("submit", ["--config", "{tmp}/bomb.yaml"], "YAML aliases are not allowed"),
    ("summarize", ["{tmp}/empty", "--format", "xml"], "--format 'xml': allowed table, markdown, csv, json"),
    ("summarize", ["{tmp}/empty", "--workers", "-1"], "--workers: must be >= 0, got -1"),
    ("summarize", ["{tmp}/empty", "--default", "noequals"], "'noequals': expected KEY=VALUE"),
    ("summarize", ["{tmp}/empty/train"], "no run files (*.h5) found in {tmp}/empty/train"),
    ("status", ["{tmp}/empty", "--format", "xml"], "--format 'xml': allowed table, json"),
    ("status", ["{tmp}/empty"], "{tmp}/empty: no manifest.json"),
    # An empty list is an error naming the option, never "keep the config's value".
    ("submit", ["--ipc", ""], "--ipc '': empty; expected a comma-separated list"),
    ("submit", ["--seeds", ""], "--seeds '': empty; expected N, A-B"),
    ("submit", ["--method", " "], "--method ' ': empty; expected a comma-separated list"),
    # A path that names nothing, or not the kind of file the command reads.
    ("plot", ["{tmp}/list.yaml", "--out", "{tmp}/out folder"], "{tmp}/list.yaml: not an HDF5 file"),
    ("plot", ["{tmp}/absent.h5", "--out", "{tmp}/out folder"], "{tmp}/absent.h5: no such file"),
    ("plot", ["{tmp}/empty", "--out", "{tmp}/out folder"], "{tmp}/empty: not a file"),
    ("evaluate", ["{tmp}/absent.h5", "--json", "{tmp}/out folder/e.json"], "{tmp}/absent.h5: no such file"),
    ("summarize", ["{tmp}/no such folder"], "{tmp}/no such folder: no such file; expected run files"),
    ("summarize", ["{tmp}/list.yaml"], "{tmp}/list.yaml: not an HDF5 file; expected run files"),
    ("logs", ["{tmp}/empty", "a-cell"], "{tmp}/empty: no manifest.json"),
    ("cancel", ["{tmp}/empty", "--yes"], "{tmp}/empty: no manifest.json"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """The bad files and folders the cases name, a private cache, and a record of submissions."""
    for name, text in FILES.items():
        path = tmp_path / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    for folder in ("empty/train", "empty/test", "no images/train/a", "no images/test/a"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setenv("PPODD_CACHE", str(tmp_path / "cache"))
    submitted = []
    monkeypatch.setattr("ppodd.cluster.slurm.submit_slurm", lambda *a, **k: submitted.append(a) or [])
    monkeypatch.setattr("ppodd.cluster.submit.run_local", lambda *a, **k: submitted.append(a))
    monkeypatch.setattr("ppodd.cluster.submit.run_debug", lambda *a, **k: submitted.append(a))
    return tmp_path, submitted


def invoke(command: str, args: list[str], tmp: Path, out: Path):
    args = [a.replace("{tmp}", str(tmp)) for a in args]
    if command in ("run", "submit"):
        if "--config" not in args:
            args = ["--config", DEMO, *args]
        args += ["--out", str(out)]
        if command == "submit":
            args += ["--cluster", "local"] if "--cluster" not in args else []
    elif command == "summarize":
        args += ["--out", str(out / "table.txt")]
    return cli(command, *args)


def assert_one_line_exit_2(result, says: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert says in lines[0], lines[0]
    assert "Traceback" not in result.output and not isinstance(result.exception, (RecursionError, MemoryError))


@pytest.mark.parametrize("command, args, says", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_bad_input_one_line_exit_2_nothing_written_or_submitted(workspace, command, args, says):
    tmp, submitted = workspace
    out = tmp / "out folder"
    result = invoke(command, args, tmp, out)
    assert_one_line_exit_2(result, says.replace("{tmp}", str(tmp)))
    assert not out.exists() and not submitted


def test_run_poster_or_zca_beyond_free_memory_exits_2_before_allocating(workspace, monkeypatch):
    import ppodd.cell.prepare

    tmp, _ = workspace
    monkeypatch.setattr(ppodd.cell.prepare, "free_memory", lambda device: 64 << 20)
    small = ["data.synthetic.image_size=32", "data.synthetic.train_per_class=1", "data.synthetic.test_per_class=1"]
    # 50 IPC of 10 classes at 32 x 32 is a 0.5 Mpx poster: 24 posters' worth is 0.14 GiB.
    result = invoke("run", _set(*small, "poster.ipc=50", "ppodd.stages=20", "distill.epochs=20"), tmp, tmp / "out")
    assert_one_line_exit_2(result, "poster.ipc: 50 gives a")
    assert "stage(s) hold at least 0.137 GiB of posters, more than the 0.0625 GiB free on cpu; lower" in result.output
    # ZCA at 64 x 64 holds four (12288, 12288) float64 matrices: 4.5 GiB.
    result = invoke("run", _set(*small, "data.synthetic.image_size=64"), tmp, tmp / "out")
    assert_one_line_exit_2(result, "data.zca: whitening 64 x 64 images needs at least 4.5 GiB, more than the")
    assert not (tmp / "out").exists()


def test_yaml_bomb_refused_for_its_aliases_naming_the_line_with_bounded_memory(workspace):
    """The bomb is refused for what it is, a YAML alias, at the first one and before anything is
    expanded: the error names its line, and memory stays small. No clock: a busy machine can
    neither fail nor pass this test."""
    from ppodd.config import load_config
    from ppodd.errors import ConfigError

    tmp, _ = workspace
    says = "YAML aliases are not allowed in configs (line 2)"
    with pytest.raises(ConfigError) as refused:
        load_config(tmp / "bomb.yaml")
    assert says in str(refused.value)
    # Once untraced, so that the modules `run` imports on first use are not counted as the bomb's.
    assert_one_line_exit_2(invoke("run", ["--config", "{tmp}/bomb.yaml"], tmp, tmp / "out"), says)
    tracemalloc.start()
    try:
        result = invoke("run", ["--config", "{tmp}/bomb.yaml"], tmp, tmp / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_one_line_exit_2(result, says)
    assert peak < 20 * 2**20, peak  # expanded, 3.5 billion string references alone are 26 GiB
    assert not (tmp / "out").exists()


def _newer(path: Path) -> Path:
    shutil.copy(ARCHIVED, path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(7)
    return path


def test_run_and_submit_newer_result_at_cell_path_exit_2_file_kept(workspace):
    from ppodd.config import load_config
    from ppodd.cell.identity import result_name

    tmp, submitted = workspace
    out = tmp / "out"
    out.mkdir()
    newer = _newer(out / result_name(load_config(DEMO)))
    before = newer.read_bytes()
    for command in ("run", "submit"):
        result = invoke(command, [], tmp, out)
        assert_one_line_exit_2(result, f"{newer}: written by a newer ppodd (format_version 7 > 1); upgrade ppodd")
    assert newer.read_bytes() == before and [p.name for p in out.iterdir()] == [newer.name]
    assert not submitted


def test_evaluate_newer_run_file_exit_2(workspace):
    tmp, _ = workspace
    newer = _newer(tmp / "newer.h5")
    result = cli("evaluate", str(newer))
    assert_one_line_exit_2(result, "format_version 7 > 1")


def test_summarize_bad_files_named_rest_summarised_exit_1(workspace):
    tmp, _ = workspace
    good = tmp / "runs" / "good.h5"
    good.parent.mkdir()
    shutil.copy(ARCHIVED, good)
    newer = _newer(tmp / "runs" / "newer.h5")
    (tmp / "runs" / "notes.h5").write_text("not a run")
    result = cli("summarize", str(tmp / "runs"), str(tmp / "absent.h5"), "--format", "json")
    assert result.exit_code == 1
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 3 and "Traceback" not in result.output
    assert any(str(newer) in line and "newer" in line for line in skipped)
    assert any("notes.h5" in line for line in skipped) and any("absent.h5" in line for line in skipped)
    assert str(good) in result.output or "good.h5" in result.output


def test_paths_with_spaces_work_for_run_and_submit(tmp_path, monkeypatch):
    from conftest import TINY

    monkeypatch.setenv("PPODD_CACHE", str(tmp_path / "my cache"))
    config = tmp_path / "my configs" / "demo config.yaml"
    config.parent.mkdir()
    shutil.copy(DEMO, config)
    out = tmp_path / "my results" / "grid one"
    result = cli("run", "--config", str(config), *_set(*TINY), "--out", str(out))
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip().splitlines()[-1])
    assert path.parent == out and path.exists()
    result = cli("submit", "--config", str(config), *_set(*TINY), "--seeds", "0-1", "--out", str(out),
                 "--cluster", "local")
    assert result.exit_code == 0, result.output
    assert "1 cell(s) to run on local, 1 skipped" in result.output
    assert len(list(out.glob("*.h5"))) == 2 and (out / "manifest.json").exists()


def test_status_and_submit_newer_manifest_exit_2_manifest_kept(workspace):
    tmp, submitted = workspace
    out = tmp / "out"
    out.mkdir()
    manifest = out / MANIFEST
    manifest.write_text('{"format": "ppodd-manifest", "format_version": 2, "cells": {}, "submissions": []}\n')
    before = manifest.read_text()
    says = "manifest format_version 2 is not one this ppodd reads (1); upgrade ppodd"
    assert_one_line_exit_2(cli("status", str(out)), says)
    assert_one_line_exit_2(invoke("submit", [], tmp, out), says)
    assert manifest.read_text() == before and [p.name for p in out.iterdir()] == [MANIFEST]
    assert not submitted


@pytest.mark.parametrize("command", ["run", "submit"])
def test_out_that_cannot_be_created_exit_2_one_line(workspace, command):
    tmp, submitted = workspace
    out = tmp / "list.yaml" / "results"  # under a file
    result = cli(command, "--config", DEMO, "--out", str(out), *(["--cluster", "local"] if command == "submit" else []))
    assert_one_line_exit_2(result, f"cannot create output folder {out}")
    assert not submitted and (tmp / "list.yaml").is_file()
