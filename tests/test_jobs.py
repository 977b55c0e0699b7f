import json
import os
import socket
import sys

import pytest
from helpers import cli, set_args

from ppodd.cluster import grid, slurm, status, submission

from ppodd.cell.identity import CellFiles

from ppodd.atomic import write_json
from ppodd.errors import ConfigError

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "submit_dry_run.txt")


@pytest.mark.parametrize("spec, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]),
                                         ("0-4,9", [0, 1, 2, 3, 4, 9]), ("3", [3]), ("1-2,2,1", [1, 2])])
def test_parse_seeds_specs_give_seeds_in_order(spec, seeds):
    assert grid.parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["4-0", "a", "1-b", "", "1,,2", "-3", "0-4-5"])
def test_parse_seeds_reversed_or_non_numeric_raises_config_error(spec):
    with pytest.raises(ConfigError, match="--seeds"):
        grid.parse_seeds(spec)


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30:00", 90), ("2-00:00:00", 2880), ("0:00:30", 1)])
def test_parse_time_formats_give_minutes(text, minutes):
    assert slurm.parse_time(text) == minutes


def test_parse_sbatch_flags_become_additional_parameters():
    assert slurm.parse_sbatch(("--constraint=a100", "--exclusive")) == {"constraint": "a100", "exclusive": True}
    with pytest.raises(ConfigError, match="--sbatch"):
        slurm.parse_sbatch(("constraint a100",))


def test_expand_grid_cross_product_has_every_cell(tmp_path):
    cells = grid.expand_grid("configs/demo.yaml", [], ["ppodd", "podd"], ["0.6", "0.9"], [0, 1],
                             grid.parse_grid(["ppodd.boost=0,1.5"]), tmp_path)
    assert len(cells) == 2 * 2 * 2 * 2
    assert len({c.path for c in cells}) == 16
    assert cells[0].overrides == ("method=ppodd", "poster.ipc=0.6", "ppodd.boost=0", "seed=0")
    assert cells[1].overrides == ("method=ppodd", "poster.ipc=0.6", "ppodd.boost=0", "seed=1")
    assert {(c.config["method"], c.config["poster"]["ipc"], c.config["ppodd"]["boost"], c.config["seed"])
            for c in cells} == {(m, i, b, s) for m in ("ppodd", "podd") for i in (0.6, 0.9)
                                for b in (0.0, 1.5) for s in (0, 1)}


def test_expand_grid_same_inputs_give_same_paths_other_config_another(tmp_path):
    first = grid.expand_grid("configs/demo.yaml", [], [], ["0.9"], [0, 1], [], tmp_path)
    again = grid.expand_grid("configs/demo.yaml", [], [], ["0.9"], [0, 1], [], tmp_path)
    other = grid.expand_grid("configs/demo.yaml", [("distill.window", 5)], [], ["0.9"], [0, 1], [], tmp_path)
    assert [c.path for c in first] == [c.path for c in again]
    assert first[0].path.name.startswith("ppodd-synthetic-ipc0.9-seed0-")
    assert first[0].path.parent == tmp_path.absolute()
    assert not {c.path for c in first} & {c.path for c in other}


def test_expand_grid_unknown_key_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nokey"):
        grid.expand_grid("configs/demo.yaml", [], [], [], [], grid.parse_grid(["nokey=1"]), tmp_path)


def _dry_run_text(out):
    result = cli("submit", "--config", "configs/demo.yaml", "--ipc", "0.6,0.9", "--seeds", "0-1",
                 "--grid", "ppodd.boost=0,1.5", "--out", str(out), "--cluster", "slurm",
                 "--dry-run", "--gpus-per-node", "1", "--partition", "gpu", "--time", "4:00:00",
                 "--slurm-setup", "module load apptainer", "--sbatch=--constraint=a100")
    assert result.exit_code == 0, result.output
    return result.output.replace(str(out.absolute()), "{out}").replace(sys.executable, "{python}")


def test_submit_dry_run_matches_golden_and_writes_nothing(tmp_path):
    out = tmp_path / "results"
    text = _dry_run_text(out)
    assert not out.exists()
    if os.environ.get("PPODD_UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(text)
    with open(GOLDEN) as f:
        expected = f.read()
    assert text == expected, (
        "the sbatch script or array map of `ppodd submit --dry-run` changed; if the change is intended, "
        "review the diff and accept it with: PPODD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest "
        "tests/test_jobs.py -k golden")


@pytest.mark.parametrize("args, says", [(["--cluster", "foo"], "--cluster 'foo'"),
                                        (["--seeds", "4-0"], "--seeds '4-0'"),
                                        (["--grid", "nokey=1"], "nokey"),
                                        (["--method", "podd,dd"], "--method 'dd'"),
                                        (["--mem", "lots"], "--mem 'lots'"),
                                        (["--time", "soon"], "--time 'soon'")])
def test_submit_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, says):
    result = cli("submit", "--config", "configs/demo.yaml", "--out", str(tmp_path / "r"), *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert not (tmp_path / "r").exists()


def test_submit_slurm_out_with_whitespace_exits_2(tmp_path):
    out = tmp_path / "my results\nnew"
    result = cli("submit", "--config", "configs/demo.yaml", "--out", str(out), "--cluster", "slurm",
                 "--dry-run")
    assert result.exit_code == 2 and "cannot contain whitespace" in result.output
    assert not out.exists()


def test_submit_local_runs_grid_writes_manifest_then_skips_done(tmp_path, tiny_overrides):
    from ppodd.storage.reader import read_summary

    out = tmp_path / "r"
    args = ["submit", "--config", "configs/demo.yaml", *set_args(tiny_overrides), "--seeds", "0-1",
            "--out", str(out), "--cluster", "local"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["cells"]) == 2 and len(manifest["submissions"]) == 1
    sub = manifest["submissions"][0]
    assert sub["cluster"] == "local" and [t["array_index"] for t in sub["tasks"]] == [0, 1]
    for task in sub["tasks"]:
        cell = manifest["cells"][task["cell"]]
        assert cell["config"]["seed"] == task["array_index"]
        assert read_summary(out / cell["file"])["seed"] == task["array_index"]
    assert not list(out.glob("*.state.json")) and not list(out.glob("*.ckpt"))
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "0 cell(s) to run on local, 2 skipped" in again.output
    status = cli("status", str(out), "--format", "json")
    assert [r["state"] for r in json.loads(status.output)] == ["done", "done"]


def _fake_submission(out, names, cluster="local", job_ids=None):
    cells = [grid.Cell((f"seed={i}",), {"seed": i}, CellFiles(out / f"{n}.h5")) for i, n in enumerate(names)]
    tasks = [{"array_index": i, "job_id": (job_ids or [None] * len(names))[i], "cell": n}
             for i, n in enumerate(names)]
    out.mkdir(parents=True, exist_ok=True)
    submission.record_submission(out, cells, cluster, None, tasks, [], ["ppodd", "submit"])
    return cells


def test_cell_statuses_read_states_from_files(tmp_path):
    out = tmp_path / "r"
    cells = _fake_submission(out, ["failed", "running", "stopped", "pending", "requeued"])
    base = {"host": socket.gethostname(), "restarts": 0}
    write_json(CellFiles(cells[0].path).state, {**base, "state": "failed", "pid": 1,
                                                      "error": "PpoddError: checkpoint x cannot be read"})
    write_json(CellFiles(cells[1].path).state, {**base, "state": "running", "pid": os.getpid()})
    cells[2].path.with_suffix(".ckpt").write_bytes(b"")
    rows = status.cell_statuses(out, None)
    assert [(r.cell, r.state) for r in rows] == [("failed", "failed"), ("running", "running"),
                                                 ("stopped", "incomplete"), ("pending", "pending"),
                                                 ("requeued", "pending")]
    assert rows[0].detail == "PpoddError: checkpoint x cannot be read"
    table = status.status_table(rows)
    assert table.splitlines()[-1] == "2 pending, 1 running, 1 failed, 1 incomplete"


def test_cell_statuses_slurm_queue_states(tmp_path):
    out = tmp_path / "r"
    cells = _fake_submission(out, ["queued", "requeued", "running", "vanished"], "slurm",
                             ["7_0", "7_1", "7_2", "7_3"])
    write_json(CellFiles(cells[1].path).state, {"state": "requeued", "restarts": 0})
    queue = {"7_0": "PENDING", "7_1": "PENDING", "7_2": "RUNNING"}
    rows = status.cell_statuses(out, queue)
    assert [r.state for r in rows] == ["pending", "requeued", "running", "failed"]
    assert "left the queue without a result" in rows[3].detail


def test_status_missing_manifest_exits_2(tmp_path):
    result = cli("status", str(tmp_path))
    assert result.exit_code == 2 and "no manifest.json" in result.output


def test_submit_slurm_splits_arrays_at_max_array_size(tmp_path, monkeypatch):
    arrays = []

    class Job:
        def __init__(self, job_id):
            self.job_id = job_id

    class Executor:
        def __init__(self, folder, max_num_timeout):
            self.parameters = {}

        def update_parameters(self, **params):
            self.parameters.update(params)

        def batch(self):
            import contextlib

            arrays.append([])
            return contextlib.nullcontext()

        def submit(self, task):
            arrays[-1].append(task)
            return Job(f"{len(arrays)}_{len(arrays[-1]) - 1}")

    monkeypatch.setattr(slurm.submitit, "SlurmExecutor", Executor)
    monkeypatch.setattr(slurm, "max_array_size", lambda: 2)
    cells = grid.expand_grid("configs/demo.yaml", [], [], [], [0, 1, 2, 3, 4], [], tmp_path)
    tasks = slurm.submit_slurm(cells, tmp_path, slurm.SlurmOptions())
    assert [len(a) for a in arrays] == [2, 2, 1]
    assert [(t["array_index"], t["job_id"]) for t in tasks] == [(0, "1_0"), (1, "1_1"), (0, "2_0"), (1, "2_1"),
                                                               (0, "3_0")]
    assert [a.config["seed"] for chunk in arrays for a in chunk] == [0, 1, 2, 3, 4]
