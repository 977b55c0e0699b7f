"""`ppodd submit` against a real Slurm: a single-node cluster on loopback with fake GPUs.

The cluster comes from $SLURM_CONF when a controller answers (`.ci/run` starts one), or this module
starts one with scripts/slurm-local.sh when it runs as root. Otherwise the tests skip, saying why;
under CI (CI=true) that is a failure. Every wait here is bounded: with no slurmdbd a job that dies
without a result would make an unbounded wait hang.
"""

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli, set_args

from ppodd.cluster.slurm import slurm_reachable

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
# A cluster to start and stop, and real array jobs: 5 to 25 s a test on 2 cores.
pytestmark = pytest.mark.slow


def _start_cluster(base: Path) -> str:
    """Start a loopback cluster under `base`; '' on success, else why it could not."""
    if os.geteuid() != 0:
        return "no Slurm controller answers and starting one needs root (run scripts/slurm-local.sh start as root)"
    env = {**os.environ, "BASE": str(base), "GPUS": "2"}
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "scripts/slurm-local.sh start took over 600 s"
    if done.returncode != 0:
        return f"scripts/slurm-local.sh start failed: {done.stderr.strip()[-500:]}"
    os.environ["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
    return "" if slurm_reachable() else "a cluster was started but no controller answers"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A reachable Slurm controller with 2 fake GPUs, or a skip (a failure under CI) saying why."""
    started = None
    old_conf = os.environ.get("SLURM_CONF")
    if not (old_conf and slurm_reachable()):
        base = tmp_path_factory.mktemp("slurm")
        why = _start_cluster(base)
        started = base
        if why:
            subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, "BASE": str(base)}, timeout=60)
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI must run the Slurm tests: {why}")
            pytest.skip(why)
    yield
    if started is not None:
        subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, "BASE": str(started)}, timeout=60)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf


def _submit(out, overrides, *extra):
    args = ["submit", "--config", "configs/demo.yaml", *set_args(overrides),
            "--out", str(out), "--cluster", "slurm", "--gpus-per-node", "1", *extra]
    return cli(*args)


def _status(out):
    result = cli("status", str(out), "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _row_in(out, *states):
    """The status row of the one cell in `out` when its state is one of `states`, else None."""
    (row,) = _status(out)
    return row if row["state"] in states else None


def _wait_until(check, seconds, what, every=0.5):
    """`check()` once it is true. Wait only on a state that stays once reached (a file, a line in
    a log, a final state): a poll can miss a short one. `seconds` guards against a hang."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"waited {seconds} s for {what}")


def _node_of(job: str) -> str:
    """The node a running job runs on."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True, check=True,
                          timeout=30)
    node = done.stdout.strip()
    assert node, f"job {job} is not running on any node: {done.stderr.strip()}"
    return node


@contextlib.contextmanager
def _drained(node: str):
    """No job starts on `node` inside the block; those that run there go on."""
    update = ["scontrol", "update", f"NodeName={node}"]
    subprocess.run([*update, "State=DRAIN", "Reason=ppodd-test-holds-the-requeue"], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run([*update, "State=RESUME"], check=True, timeout=30)


def test_submit_slurm_grid_writes_every_cell_then_skips_done(slurm, tmp_path, tiny_overrides):
    from ppodd.storage.reader import read_summary

    out = tmp_path / "r"
    overrides = tiny_overrides + ["threads=1"]
    result = _submit(out, overrides, "--seeds", "0-1", "--wait", "240")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    (sub,) = manifest["submissions"]
    assert sub["cluster"] == "slurm" and sub["slurm"]["gpus_per_node"] == 1
    base = sub["tasks"][0]["job_id"].split("_")[0]
    assert [t["job_id"] for t in sub["tasks"]] == [f"{base}_0", f"{base}_1"]
    for task in sub["tasks"]:
        cell = manifest["cells"][task["cell"]]
        summary = read_summary(out / cell["file"])
        assert summary["seed"] == cell["config"]["seed"] == task["array_index"]
        log = (out / "logs" / task["job_id"] / f"{task['job_id']}_0_log.err").read_text()
        assert '"event": "run_done"' in log and f'"job_id": "{task["job_id"]}"' in log
    assert [r["state"] for r in _status(out)] == ["done", "done"]
    again = _submit(out, overrides, "--seeds", "0-1")
    assert again.exit_code == 0 and "0 cell(s) to run on slurm, 2 skipped" in again.output
    assert json.loads((out / "manifest.json").read_text())["submissions"][1]["tasks"] == []


def test_submit_slurm_failing_cell_shows_failed_with_reason(slurm, tmp_path, tiny_overrides):
    out = tmp_path / "r"
    overrides = tiny_overrides + ["threads=1"]
    plan = _submit(out, overrides, "--dry-run")
    name = plan.output.strip().splitlines()[-1].split()[1]
    out.mkdir()
    (out / name).with_suffix(".ckpt").write_text("not a checkpoint")  # the task raises on reading it
    result = _submit(out, overrides, "--wait", "240")
    assert result.exit_code == 1, result.output
    (row,) = _status(out)
    assert row["state"] == "failed"
    assert row["detail"].startswith("PpoddError: checkpoint") and "cannot be read" in row["detail"]
    table = cli("status", str(out)).output
    assert "failed" in table and "cannot be read" in table


def test_submit_slurm_preempted_cell_requeues_resumes_and_matches_uninterrupted(slurm, tmp_path, tiny_overrides,
                                                                                 log):
    from ppodd.config import load_config
    from ppodd.cell.host import Host
    from ppodd.cell.identity import cell_files
    from ppodd.cell.run import run_cell
    from ppodd.storage.reader import read_run

    out = tmp_path / "r"
    overrides = tiny_overrides + ["threads=1", "distill.epochs=8"]
    result = _submit(out, overrides)
    assert result.exit_code == 0, result.output
    (task,) = json.loads((out / "manifest.json").read_text())["submissions"][0]["tasks"]
    job = task["job_id"]
    err = out / "logs" / job / f"{job}_0_log.err"
    _wait_until(lambda: err.exists() and err.read_text().count('"outer_step"') >= 2, 180, "the task's first steps",
                every=0.05)
    # The node is drained first, so the requeued task stays pending until the node is resumed:
    # `status` shows the requeue as a state that lasts, not a moment between two polls.
    with _drained(_node_of(job)):
        # What submitit's SlurmJob._interrupt does: SIGTERM (ignored by submitit), then USR2 (checkpoint, requeue).
        for sig in ("SIGTERM", "USR2"):
            subprocess.run(["scancel", "--signal", sig, job], check=True, timeout=30)
        row = _wait_until(lambda: _row_in(out, "requeued", "done", "failed"), 240, "the task to be requeued")
        assert row["state"] == "requeued", f"status did not show the requeue: {row}"
    row = _wait_until(lambda: _row_in(out, "done", "failed"), 240, "the requeued task to finish")
    assert row["state"] == "done", row
    text = err.read_text()
    assert "this job is preempted" in text and text.count('"event": "resume"') == 1
    path = out / f"{task['cell']}.h5"
    cfg = load_config("configs/demo.yaml", overrides)
    reference = run_cell(cfg, cell_files(cfg, tmp_path / "ref"), Host(tmp_path / "cache"), log, bar=False)
    resumed, straight = read_run(path), read_run(reference)
    assert path.name == reference.name
    assert [s.poster.tolist() for s in resumed.stages] == [s.poster.tolist() for s in straight.stages]
    assert resumed.final_pool.per_net.tolist() == straight.final_pool.per_net.tolist()
