"""Living with a grid on a real Slurm (the loopback cluster of scripts/slurm-local.sh): a grid
with a failing cell, a cell that hits its time limit, is requeued and hits it again, and a cell
cancelled with `ppodd cancel`; `status` gives each its state and reason, `logs` shows each log,
and `cancel` leaves another job of the same user alone.

The cluster comes from $SLURM_CONF when a controller answers, or this module starts one as root;
otherwise the test skips, saying why (under CI=true it fails). It has no accounting, so the
reasons come from squeue, the state records and the task logs. Every wait is on a state that
lasts, bounded only against a hang; nothing here measures time.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli, set_args

from ppodd.cluster.slurm import slurm_reachable

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loopback_slurm(tmp_path_factory):
    """A reachable controller with 2 fake GPUs: $SLURM_CONF's, or one started here and stopped after."""
    old = os.environ.get("SLURM_CONF")
    if old and slurm_reachable():
        yield
        return
    why = "no Slurm controller answers and starting one needs root"
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "BASE": str(base), "GPUS": "2"}
    if os.geteuid() == 0:
        done = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
        os.environ["SLURM_CONF"] = str(base / "etc" / "slurm.conf")
        why = "" if done.returncode == 0 and slurm_reachable() else f"slurm-local.sh start: {done.stderr[-500:]}"
    try:
        if why:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI must run the Slurm tests: {why}")
            pytest.skip(why)
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _wait_until(check, seconds, what):
    """`check()` once true; only for states that last. `seconds` guards against a hang."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"waited {seconds} s for {what}")


def _rows(out):
    result = cli("status", out, "--format", "json")
    assert result.exit_code == 0, result.output
    return {row["cell"]: row for row in json.loads(result.stdout)}


def _job_state(job: str) -> str:
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_failed_timed_out_and_cancelled_cells_reasons_logs_and_cancel_spares_other_jobs(loopback_slurm, tmp_path,
                                                                                        tiny_overrides):
    out = tmp_path / "r"
    # Long enough that no cell finishes: one fails at once, one runs into its 1-minute limit twice.
    overrides = tiny_overrides + ["threads=1", "distill.epochs=200000", "eval.every_epochs=0"]
    args = ["submit", "--config", "configs/demo.yaml", *set_args(overrides), "--seeds", "0-2", "--out", out,
            "--cluster", "slurm", "--gpus-per-node", "1", "--time", "1", "--signal-delay", "30",
            "--max-requeues", "1"]
    plan = cli(*args, "--dry-run")
    names = [line.split()[1].removesuffix(".h5") for line in plan.stdout.splitlines()[-3:]]
    out.mkdir()
    (out / f"{names[0]}.ckpt").write_text("not a checkpoint")  # seed 0's task fails on reading it
    other = subprocess.run(["sbatch", "--hold", "--parsable", "--job-name", "not-ppodd", "--wrap", "sleep 600"],
                           capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]
    try:
        submitted = cli(*args)
        assert submitted.exit_code == 0, submitted.output
        tasks = {t["cell"]: t["job_id"] for t in json.loads((out / "manifest.json").read_text())["submissions"][0]["tasks"]}
        logs = {name: out / "logs" / tasks[name] / f"{tasks[name]}_0_log.err" for name in names}
        _wait_until(lambda: logs[names[2]].exists() and '"outer_step"' in logs[names[2]].read_text(), 300,
                    "the third cell to run")
        cancelled = cli("cancel", out, "--cells", names[2], "--yes")
        assert cancelled.exit_code == 0, cancelled.output
        assert "cancelled 1 task(s)" in cancelled.stdout and tasks[names[2]] in cancelled.stdout
        print(cancelled.stdout)
        final = {"failed", "cancelled", "done"}
        rows = _wait_until(lambda: (lambda r: r if all(r[n]["state"] in final for n in names) else None)(_rows(out)),
                           600, "every cell to end")
        assert _job_state(other) == "PENDING", "ppodd cancel touched a job outside the grid"
    finally:
        subprocess.run(["scancel", other], timeout=30)
    failing, timed_out, cancel = (rows[n] for n in names)
    assert failing["state"] == "failed" and failing["detail"].startswith("PpoddError: checkpoint"), failing
    assert timed_out["state"] == "failed" and timed_out["detail"].startswith("time limit, after 1 requeue(s)"), timed_out
    assert timed_out["requeues"] == 1 and timed_out["device_hours"] > 0
    assert cancel["state"] == "cancelled" and cancel["detail"].startswith("by ppodd cancel at"), cancel
    table = cli("status", out)
    print(table.stdout)
    assert "1 cancelled" in table.stdout and "device-hours:" in table.stdout

    shown = {n: cli("logs", out, n, "--lines", "3") for n in names}
    assert all(s.exit_code == 0 for s in shown.values()), {n: s.output for n, s in shown.items()}
    assert "PpoddError: checkpoint" in cli("logs", out, names[0]).stdout
    # Under load the first attempt may be requeued before it logs its start; every attempt that
    # started is in the cell's state file and must show in the log, split by its task_start.
    started = len(json.loads((out / f"{names[1]}.state.json").read_text())["attempts"])
    both = cli("logs", out, names[1], "--all")
    assert started >= 1 and f"attempt {started} of {started}" in both.stderr
    assert both.stdout.count('"event": "task_start"') == started
    assert "timed-out too many times" in both.stdout
    assert '"outer_step"' in cli("logs", out, "2").stdout  # the array index names the cancelled cell
    for name in names:
        print(f"$ ppodd logs OUT {name} --lines 3\n{shown[name].stderr}{shown[name].stdout}")
    # A later submit runs the cancelled and failed cells again (from their checkpoints).
    again = cli(*args, "--dry-run")
    assert again.exit_code == 0 and "# 3 cell(s) to run, 0 skipped" in again.stdout
