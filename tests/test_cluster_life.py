"""Living with a grid: why a task died (parsed from recorded sacct, squeue and log outputs), what
each cell cost, `ppodd logs` and `ppodd cancel` on fabricated results folders, and the task's
record of its attempts. No Slurm is needed: its outputs are recorded strings, and its commands are
replaced by a fake that counts the calls.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from pathlib import Path

import pytest
from helpers import cli

from ppodd.atomic import write_json
from ppodd.cell.identity import CellFiles
from ppodd.cluster import accounting, cost, logs, reasons, slurm, status, submission, task
from ppodd.cluster.grid import Cell
from ppodd.errors import ConfigError, PpoddError

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
CONFIG = {"method": "ppodd", "distill": {"checkpoint_window": False, "real_batch": 5000, "real_subbatch": 1000}}

# --- recorded outputs -----------------------------------------------------------------------------

# squeue --noheader --array --states all --user U --format '%i|%T|%r'
SQUEUE = """\
7_0|PENDING|Resources
7_1|PENDING|BeginTime
7_2|RUNNING|None
7_4|TIMEOUT|TimeLimit
7_5|OUT_OF_MEMORY|OutOfMemory
7_6|NODE_FAIL|NodeDown
7_7|CANCELLED|None
7_[8-10%2]|PENDING|JobArrayTaskLimit
99|RUNNING|None
"""

# sacct --noheader --parsable2 --duplicates --format JobID,State,ExitCode,ElapsedRaw,AllocTRES,Reason
SACCT = """\
8_0|OUT_OF_MEMORY|0:125|600|billing=2,cpu=2,gres/gpu=1,mem=16G,node=1|None
8_0.batch|OUT_OF_MEMORY|0:125|600|cpu=2,gres/gpu=1,mem=16G,node=1|
8_0.extern|COMPLETED|0:0|600|billing=2,cpu=2,gres/gpu=1,mem=16G,node=1|
8_1|REQUEUED|0:0|3540|billing=2,cpu=2,gres/gpu=1,node=1|None
8_1.batch|CANCELLED|0:15|3541|cpu=2,gres/gpu=1,node=1|
8_1|REQUEUED|0:0|3540|billing=2,cpu=2,gres/gpu=1,node=1|None
8_1|TIMEOUT|0:0|3600|billing=2,cpu=2,gres/gpu=1,node=1|None
8_2|NODE_FAIL|0:0|120|billing=2,cpu=2,gres/gpu=1,node=1|None
8_3|PREEMPTED|0:0|300|billing=2,cpu=2,gres/gpu=1,node=1|None
8_4|CANCELLED by 0|0:0|30|billing=2,cpu=2,gres/gpu=1,node=1|None
8_5|FAILED|1:0|45|billing=2,cpu=2,gres/gpu=1,node=1|None
8_5.batch|FAILED|1:0|45|cpu=2,gres/gpu=1,node=1|
8_6|COMPLETED|0:0|1800|billing=4,cpu=4,gres/gpu=2,mem=32G,node=1|None
8_7|RUNNING|0:0|100|billing=2,cpu=2,gres/gpu=1,node=1|None
8_8|FAILED|0:125|50|billing=2,cpu=2,gres/gpu:a100=1,node=1|None
8_8.0|OUT_OF_MEMORY|0:125|49|cpu=2,gres/gpu:a100=1,node=1|
8_[9-11]|PENDING|0:0|0||Priority
"""

# What slurmstepd, the OOM killer, submitit and Python leave in a task's log.
LOGS = {
    "time limit": "slurmstepd: error: *** JOB 9_1 ON n01 CANCELLED AT 2026-11-25T11:00:00 DUE TO TIME LIMIT ***\n",
    "oom kill": ("slurmstepd: error: Detected 1 oom-kill event(s) in StepId=9_2.0. Some of your processes may "
                 "have been killed by the cgroup out-of-memory handler.\n"),
    "node failure": ("slurmstepd: error: *** JOB 9_3 ON n01 CANCELLED AT 2026-11-25T11:00:00 DUE TO NODE FAILURE, "
                     "SEE SLURMCTLD LOG FOR DETAILS ***\n"),
    "preemption": "slurmstepd: error: *** JOB 9_4 ON n01 CANCELLED AT 2026-11-25T11:00:00 DUE TO PREEMPTION ***\n",
    "cancel": "slurmstepd: error: *** STEP 9_5.0 ON n01 CANCELLED AT 2026-11-25T11:00:00 ***\n",
    "python": ('{"event": "outer_step", "step": 3}\nTraceback (most recent call last):\n'
               '  File "x.py", line 1, in <module>\n    raise PpoddError("x")\n'
               "ppodd.errors.PpoddError: checkpoint /r/a.ckpt cannot be read\n"
               "srun: error: n01: task 0: Exited with exit code 1\n"),
    "cuda oom": ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"),
    "timed out too often": ("submitit WARNING (2026-11-25 11:00:00,000) - Caught signal SIGUSR2 on n01: this job is "
                            "timed-out.\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                            "submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many "
                            "times.\n"),
}


# --- parsing Slurm's outputs ---------------------------------------------------------------------

def test_squeue_listing_states_reasons_and_pending_ranges():
    jobs = accounting.parse_squeue(SQUEUE)
    assert {j: (s.state, s.queued) for j, s in jobs.items() if j.startswith("7_")} == {
        "7_0": ("PENDING", True), "7_1": ("PENDING", True), "7_2": ("RUNNING", True), "7_4": ("TIMEOUT", False),
        "7_5": ("OUT_OF_MEMORY", False), "7_6": ("NODE_FAIL", False), "7_7": ("CANCELLED", False),
        "7_8": ("PENDING", True), "7_9": ("PENDING", True), "7_10": ("PENDING", True)}
    assert jobs["7_0"].reason == "Resources" and jobs["99"].state == "RUNNING"


def test_sacct_listing_every_attempt_with_seconds_gpus_and_steps():
    jobs = accounting.parse_sacct(SACCT)
    assert [a.state for a in jobs["8_1"].attempts] == ["REQUEUED", "REQUEUED", "TIMEOUT"]
    assert jobs["8_1"].state == "TIMEOUT" and not jobs["8_1"].queued
    assert jobs["8_0"].attempts[0].step_states == ("OUT_OF_MEMORY", "COMPLETED")
    assert jobs["8_4"].state == "CANCELLED" and jobs["8_7"].queued
    assert (jobs["8_6"].attempts[0].seconds, jobs["8_6"].attempts[0].gpus) == (1800.0, 2)
    assert jobs["8_8"].attempts[0].gpus == 1  # a typed GPU: gres/gpu:a100=1
    assert [j for j in jobs if j.startswith("8_") and jobs[j].state == "PENDING"] == ["8_9", "8_10", "8_11"]
    assert cost.sacct_seconds([jobs["8_1"], jobs["8_6"]]) == 3540 * 2 + 3600 + 1800 * 2


@pytest.mark.parametrize("job_id, ids", [("5_3", ["5_3"]), ("5", ["5"]), ("5_[0-2]", ["5_0", "5_1", "5_2"]),
                                         ("5_[1,4-5%2]", ["5_1", "5_4", "5_5"]), ("5_[0-6:3]", ["5_0", "5_3", "5_6"])])
def test_job_ids_as_slurm_prints_them_expand_to_tasks(job_id, ids):
    assert accounting.expand_ids(job_id) == ids


# --- why a task died ------------------------------------------------------------------------------

@pytest.mark.parametrize("job, cause, says", [
    ("8_0", reasons.OOM, "out of memory; --set distill.checkpoint_window=true"),
    ("8_8", reasons.OOM, "out of memory; "),      # FAILED, but its srun step ran out of memory
    ("8_1", reasons.TIME_LIMIT, "time limit, after 2 requeue(s)"),
    ("8_2", reasons.NODE_FAILURE, "node failure"),
    ("8_3", reasons.PREEMPTED, "preempted and not requeued"),
    ("8_4", reasons.CANCELLED, "cancelled outside ppodd (scancel)"),
    ("8_5", "", "failed with exit code 1:0"),
])
def test_sacct_states_give_the_cause(job, cause, says):
    found, line = reasons.why(job=accounting.parse_sacct(SACCT)[job], error="", log_tail="", requeues=0,
                              config=CONFIG)
    assert found == cause and says in line and "\n" not in line


@pytest.mark.parametrize("log, cause, says", [
    ("time limit", reasons.TIME_LIMIT, "time limit, after 1 requeue(s); raise --time or --max-requeues"),
    ("oom kill", reasons.OOM, "out of memory"),
    ("node failure", reasons.NODE_FAILURE, "node failure"),
    ("preemption", reasons.PREEMPTED, "preempted"),
    ("cancel", reasons.CANCELLED, "cancelled outside ppodd"),
    ("python", "", "PpoddError: checkpoint /r/a.ckpt cannot be read"),
    ("cuda oom", reasons.OOM, "out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB)"),
    ("timed out too often", reasons.TIME_LIMIT, "time limit, after 1 requeue(s)"),
])
def test_log_tails_give_the_cause_when_slurm_knows_nothing(log, cause, says):
    found, line = reasons.why(job=None, error="", log_tail=LOGS[log], requeues=1, config=CONFIG)
    assert found == cause and line.startswith(says), line


def test_oom_hint_names_both_settings_with_what_they_save_and_follows_the_cell():
    hint = reasons.oom_hint(CONFIG)
    assert "distill.checkpoint_window=true" in hint and "65 % less peak memory" in hint
    assert "distill.real_subbatch=500" in hint and "500 images instead of 1000" in hint
    done = reasons.oom_hint({"distill": {"checkpoint_window": True, "real_batch": 256, "real_subbatch": 0}})
    assert "checkpoint_window" not in done and "distill.real_subbatch=128" in done


def test_recorded_python_error_wins_over_an_older_log_cause():
    found, line = reasons.why(job=None, error="ValueError: bad", log_tail=LOGS["python"], requeues=0, config={})
    assert (found, line) == ("", "ValueError: bad")


# --- status of a fabricated grid --------------------------------------------------------------------

def _grid(out: Path, names: list[str], cluster: str = "slurm", array: str = "7", gpus: int = 1) -> list[Cell]:
    """A manifest with one submission of `names` (job ids ARRAY_0, ARRAY_1, ... on Slurm)."""
    cells = [Cell((f"seed={i}",), {**CONFIG, "seed": i}, CellFiles(out / f"{n}.h5")) for i, n in enumerate(names)]
    tasks = [{"array_index": i, "job_id": f"{array}_{i}" if cluster == "slurm" else None, "cell": n}
             for i, n in enumerate(names)]
    out.mkdir(parents=True, exist_ok=True)
    submission.record_submission(out, cells, cluster, {"gpus_per_node": gpus} if cluster == "slurm" else None,
                                 tasks, [], ["ppodd", "submit"])
    return cells


def _log(out: Path, job: str, text: str) -> None:
    path = out / "logs" / job / f"{job}_0_log.err"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _start(job: str, attempt: int) -> str:
    return json.dumps({"job_id": job, "attempt": attempt, "event": "task_start"}) + "\n"


def test_status_gives_each_dead_task_its_reason_from_squeue_state_record_and_log(tmp_path):
    out = tmp_path / "r"
    names = ["pend", "reque", "run", "gone-py", "timeout", "oom", "node", "scancelled", "py-record", "silent"]
    cells = _grid(out, names)
    write_json(cells[1].files.state, {"state": "requeued", "restarts": 1})
    _log(out, "7_3", _start("7_3", 1) + LOGS["python"])
    write_json(cells[4].files.state, {"state": "running", "restarts": 2})
    _log(out, "7_4", _start("7_4", 1) + "timed-out\n" + _start("7_4", 2) + LOGS["time limit"])
    write_json(cells[8].files.state, {"state": "failed", "error": "PpoddError: version mismatch: ppodd 9 here"})
    queue = {**accounting.parse_squeue(SQUEUE), "7_8": accounting.SlurmJob("COMPLETED"),
             "7_9": accounting.SlurmJob("COMPLETED")}
    queue["7_3"] = accounting.SlurmJob("FAILED")
    rows = {r.cell: r for r in status.cell_statuses(out, queue, NOW)}
    assert {n: rows[n].state for n in names} == {
        "pend": "pending", "reque": "requeued", "run": "running", "gone-py": "failed", "timeout": "failed",
        "oom": "failed", "node": "failed", "scancelled": "cancelled", "py-record": "failed", "silent": "failed"}
    assert rows["pend"].detail == "pending, Resources"
    assert rows["gone-py"].detail == "PpoddError: checkpoint /r/a.ckpt cannot be read"
    assert rows["timeout"].detail.startswith("time limit, after 2 requeue(s)")
    assert rows["oom"].detail.startswith("out of memory; --set distill.checkpoint_window=true")
    assert rows["node"].detail.startswith("node failure")
    assert rows["scancelled"].detail.startswith("cancelled outside ppodd")
    assert rows["py-record"].detail == "PpoddError: version mismatch: ppodd 9 here"
    assert rows["silent"].detail.startswith("job left the queue without a result; see ")
    table = status.status_table(list(rows.values()), NOW)
    assert "1 pending, 1 running, 1 requeued, 6 failed, 1 cancelled" in table.splitlines()[-2]
    assert table.splitlines()[-1].startswith("device-hours: ")
    assert all("\n" not in r.detail for r in rows.values())


def test_status_asks_slurm_once_for_a_thousand_cells(tmp_path, monkeypatch):
    out = tmp_path / "r"
    names = [f"cell-{i:04d}" for i in range(1000)]
    _grid(out, names)
    calls = []

    def fake(args, timeout=10):
        calls.append(args)
        return type("Done", (), {"returncode": 0, "stdout": "7_0|RUNNING|None\n", "stderr": ""})()

    monkeypatch.setattr(slurm, "_slurm_cmd", fake)
    rows = json.loads(status.grid_status(out, "json"))
    assert len(rows) == 1000 and [c[0] for c in calls] == ["squeue"]
    assert rows[0]["state"] == "running" and rows[1]["detail"].startswith("job left the queue")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["submissions"][0]["accounting"] = True
    write_json(out / "manifest.json", manifest)
    calls.clear()
    status.grid_status(out)
    assert [c[0] for c in calls] == ["sacct"] and "--duplicates" in calls[0] and "7" in calls[0]


# --- what it cost ---------------------------------------------------------------------------------

def _at(hours: float) -> str:
    return (NOW - dt.timedelta(hours=hours)).isoformat(timespec="seconds")


def test_attempt_seconds_sum_over_requeues_with_a_hard_kill_ending_at_its_heartbeat():
    attempts = [{"started": _at(5), "stopped": _at(4), "gpus": 2},     # 1 h x 2 GPUs
                {"started": _at(3)},                                    # killed: ends at the next start
                {"started": _at(2.5), "gpus": 1}]                       # the last one
    alive = NOW - dt.timedelta(hours=2)
    gone = cost.attempts_seconds(attempts, now=NOW, running=False, last_alive=alive)
    assert gone == pytest.approx((2 + 0.5 + 0.5) * 3600)
    running = cost.attempts_seconds(attempts, now=NOW, running=True, last_alive=alive)
    assert running == pytest.approx((2 + 0.5 + 2.5) * 3600)
    closed = cost.close_attempts(attempts, alive)
    assert closed[-1]["stopped"] == alive.isoformat(timespec="seconds") and "stopped" not in attempts[-1]


def test_grid_cost_estimates_hours_to_go_per_method_and_the_finish_at_current_parallelism():
    row = status.CellStatus
    rows = [row("a", "done", method="ppodd", device_hours=3.0), row("b", "done", method="ppodd", device_hours=5.0),
            row("c", "done", method="podd", device_hours=1.0),
            row("d", "running", method="ppodd", device_hours=1.0, devices=2),
            row("e", "pending", method="podd"), row("f", "failed", method="ppodd", device_hours=0.5)]
    total = cost.grid_cost(rows, NOW)
    assert total.used == pytest.approx(10.5) and total.queued == 2
    assert total.to_go == pytest.approx((4.0 - 1.0) + 1.0) and total.running_devices == 2
    assert total.finish == NOW + dt.timedelta(hours=2)
    line = cost.cost_line(total)
    assert line == ("device-hours: 10.50 used; about 4.00 to go for 2 queued cell(s) (from 3 finished); "
                    "expected finish 2026-11-25 14:00 UTC at 2 device(s) running")
    assert "unknown until a cell finishes" in cost.cost_line(cost.grid_cost(rows[3:], NOW))


def test_status_device_hours_from_sacct_else_state_record_else_run_file(tmp_path):
    out = tmp_path / "r"
    cells = _grid(out, ["acct", "record"], array="8", gpus=2)
    write_json(cells[1].files.state, {"state": "running", "attempts": [
        {"started": _at(2), "stopped": _at(1), "gpus": 2}, {"started": _at(0.5), "gpus": 2}]})
    jobs = {"8_0": accounting.parse_sacct(SACCT)["8_1"], "8_1": accounting.SlurmJob("RUNNING")}
    rows = status.cell_statuses(out, jobs, NOW)
    assert rows[0].device_hours == pytest.approx((3540 * 2 + 3600) / 3600)
    assert rows[1].state == "running" and rows[1].device_hours == pytest.approx(2 * 1 + 2 * 0.5)
    assert json.loads(json.dumps(rows[1].as_json()))["device_hours"] == pytest.approx(3.0)


# --- logs -------------------------------------------------------------------------------------------

@pytest.fixture
def two_submissions(tmp_path):
    """Cells a-0, a-1, b-0 submitted as array 7, then a-1 again as array 9; logs with attempts."""
    out = tmp_path / "r"
    _grid(out, ["ppodd-a-0", "ppodd-a-1", "podd-b-0"])
    cells = [Cell(("seed=1",), CONFIG, CellFiles(out / "ppodd-a-1.h5"))]
    submission.record_submission(out, cells, "slurm", {"gpus_per_node": 1},
                                 [{"array_index": 0, "job_id": "9_0", "cell": "ppodd-a-1"}], [], ["ppodd", "submit"])
    _log(out, "7_1", "preamble\n" + _start("7_1", 1) + "first\n" + _start("7_1", 2) + "second\nsecond end\n")
    _log(out, "9_0", _start("9_0", 3) + "third\n")
    return out


@pytest.mark.parametrize("spec, name", [("ppodd-a-1", "ppodd-a-1"), ("ppodd-a-1.h5", "ppodd-a-1"),
                                        ("/x/y/podd-b-0.h5", "podd-b-0"), ("podd", "podd-b-0"),
                                        ("0", "ppodd-a-1"), ("7_0", "ppodd-a-0"), ("9_0", "ppodd-a-1")])
def test_cell_argument_by_name_file_prefix_index_or_job_id(two_submissions, spec, name):
    manifest = json.loads((two_submissions / "manifest.json").read_text())
    assert logs.resolve_cell(manifest, spec) == name


@pytest.mark.parametrize("spec, says", [("ppodd-a", "matches 2 cells (ppodd-a-0, ppodd-a-1); give more"),
                                        ("zzz", "no such cell"), ("", "no such cell")])
def test_cell_argument_ambiguous_or_unknown_is_bad_input(two_submissions, spec, says):
    manifest = json.loads((two_submissions / "manifest.json").read_text())
    with pytest.raises(ConfigError, match=re.escape(says)):
        logs.resolve_cell(manifest, spec)


def test_logs_newest_attempt_by_default_then_any_attempt_or_all(two_submissions):
    out = two_submissions
    newest = cli("logs", out, "ppodd-a-1")
    assert newest.exit_code == 0 and newest.stdout == _start("9_0", 3) + "third\n"
    assert "attempt 3 of 3, job 9_0" in newest.stderr
    first = cli("logs", out, "ppodd-a-1", "--attempt", "1")
    assert first.stdout == "preamble\n" + _start("7_1", 1) + "first\n" and "attempt 1 of 3, job 7_1" in first.stderr
    every = cli("logs", out, "ppodd-a-1", "--all", "--lines", "1")
    assert every.stdout == "first\nsecond end\nthird\n" and every.stderr.count("== ") == 3
    assert cli("logs", out, "ppodd-a-1", "--attempt", "4").exit_code == 2
    missing = cli("logs", out, "podd-b-0")
    assert missing.exit_code == 1 and "no log yet" in missing.stderr and "Traceback" not in missing.output


def test_logs_follow_prints_what_is_appended_until_the_cell_is_over(two_submissions):
    out = two_submissions
    log = out / "logs" / "9_0" / "9_0_0_log.err"
    state = out / "ppodd-a-1.state.json"
    printed = []

    def writer():
        with open(log, "a") as f:
            f.write("fourth\n")
        write_json(state, {"state": "failed", "error": "ValueError: x"})

    thread = threading.Thread(target=writer)
    thread.start()
    logs.show_log(out, "ppodd-a-1", lambda text, **kw: printed.append(text), follow=True, interval=0.01)
    thread.join()
    assert "".join(p for p in printed if not p.startswith("==")) == _start("9_0", 3) + "third\nfourth\n"


# --- cancel -----------------------------------------------------------------------------------------

@pytest.fixture
def fake_slurm(monkeypatch):
    """squeue lists the grid's tasks 7_0 (pending), 7_1 (running) and 7_2 (ended), and job 99 of
    the same user outside the grid; scancel is recorded."""
    calls = []

    def fake(args, timeout=10):
        calls.append(list(args))
        out = "7_0|PENDING|Resources\n7_1|RUNNING|None\n7_2|COMPLETED|None\n99|RUNNING|None\n"
        return type("Done", (), {"returncode": 0, "stdout": out if args[0] == "squeue" else "", "stderr": ""})()

    monkeypatch.setattr(slurm, "_slurm_cmd", fake)
    return calls


def test_cancel_shows_asks_and_cancels_only_the_grids_queued_tasks(tmp_path, fake_slurm):
    out = tmp_path / "r"
    _grid(out, ["a", "b", "c"])
    declined = cli("cancel", out)  # no answer on stdin: asked, nothing cancelled
    assert declined.exit_code != 0 and "2 task(s) of" in declined.stdout
    assert not [c for c in fake_slurm if c[0] == "scancel"]
    done = cli("cancel", out, "--yes")
    assert done.exit_code == 0, done.output
    (scancel,) = [c for c in fake_slurm if c[0] == "scancel"]
    assert scancel == ["scancel", "7_0", "7_1"]  # never 99, never the ended 7_2
    rows = {r.cell: r for r in status.cell_statuses(out, {"7_2": "COMPLETED"}, NOW)}
    assert rows["a"].state == rows["b"].state == "cancelled" and "by ppodd cancel at" in rows["a"].detail
    assert rows["c"].state == "failed"
    # A later submission of the cell gives it a new task: no longer cancelled.
    cells = [Cell(("seed=0",), CONFIG, CellFiles(out / "a.h5"))]
    submission.record_submission(out, cells, "slurm", {"gpus_per_node": 1},
                                 [{"array_index": 0, "job_id": "12_0", "cell": "a"}], [], ["ppodd", "submit"])
    rows = {r.cell: r for r in status.cell_statuses(out, {"12_0": "PENDING"}, NOW)}
    assert rows["a"].state == "pending" and rows["b"].state == "cancelled"


def test_cancel_some_cells_and_the_answer_yes(tmp_path, fake_slurm):
    out = tmp_path / "r"
    _grid(out, ["a", "b", "c"])
    from typer.testing import CliRunner

    from ppodd.cli import app

    result = CliRunner().invoke(app, ["cancel", str(out), "--cells", "b,c"], input="y\n")
    assert result.exit_code == 0, result.output
    assert [c for c in fake_slurm if c[0] == "scancel"] == [["scancel", "7_1"]]
    nothing = cli("cancel", out, "--cells", "c", "--yes")
    assert nothing.exit_code == 0 and "nothing to cancel" in nothing.stdout


@pytest.mark.parametrize("args, says", [(["--cells", ""], "--cells '': empty"), (["--cells", "zz"], "no such cell")])
def test_cancel_bad_cells_exit_2(tmp_path, fake_slurm, args, says):
    out = tmp_path / "r"
    _grid(out, ["a"])
    result = cli("cancel", out, *args, "--yes")
    assert result.exit_code == 2 and says in result.stderr and not [c for c in fake_slurm if c[0] == "scancel"]


def test_cancel_a_local_grid_is_refused(tmp_path, fake_slurm):
    out = tmp_path / "r"
    _grid(out, ["a"], cluster="local")
    result = cli("cancel", out, "--yes")
    assert result.exit_code == 2 and "Ctrl-C" in result.stderr


# --- the task's record of its attempts --------------------------------------------------------------

def test_cell_task_records_attempts_heartbeat_and_local_log(tmp_path, monkeypatch):
    from ppodd.config import load_config, to_dict

    path = tmp_path / "r" / "cell.h5"
    path.parent.mkdir()
    files = CellFiles(path)
    log_file = tmp_path / "r" / "logs" / "local" / "cell.log"
    monkeypatch.setattr(task, "HEARTBEAT_S", 0.01)
    beats = threading.Event()

    def failing(cfg, files, host, log, **kw):
        os.utime(files.state, (0, 0))
        for _ in range(3000):  # the heartbeat moves the time on; bounded against a hang
            if files.state.stat().st_mtime > 0:
                beats.set()
                break
            threading.Event().wait(0.01)
        log.info("outer_step", step=1)
        raise ValueError("bad input somewhere")

    monkeypatch.setattr("ppodd.cell.run.run_cell", failing)
    config = to_dict(load_config("configs/demo.yaml"))
    with pytest.raises(ValueError):
        task.CellTask(config, str(path), "", log_file=str(log_file))()
    assert beats.is_set()
    record = json.loads(files.state.read_text())
    assert record["state"] == "failed" and record["error"] == "ValueError: bad input somewhere"
    (first,) = record["attempts"]
    assert first["stopped"] and first["end"] == "failed" and first["gpus"] == 0
    with pytest.raises(ValueError):
        task.CellTask(config, str(path), "", log_file=str(log_file))()
    assert len(json.loads(files.state.read_text())["attempts"]) == 2
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["event"] for e in lines] == ["task_start", "outer_step", "task_failed"] * 2
    assert [e["attempt"] for e in lines if e["event"] == "task_start"] == [1, 2]
    assert len(logs.split_attempts(log_file.read_text())) == 2

    monkeypatch.setattr("ppodd.cell.run.run_cell", lambda cfg, files, *a, **k: files.result)
    assert task.CellTask(config, str(path), "", log_file=str(log_file))() == str(path)
    assert not files.state.exists()


def test_clear_for_rerun_keeps_the_attempts_and_forgets_the_failure(tmp_path):
    from ppodd.cluster.submit import _clear_for_rerun

    out = tmp_path / "r"
    (cell,) = _grid(out, ["a"], cluster="local")
    write_json(cell.files.state, {"state": "failed", "error": "x", "attempts": [{"started": _at(1)}]})
    _clear_for_rerun([cell], force=False)
    record = json.loads(cell.files.state.read_text())
    assert list(record) == ["attempts"] and record["attempts"][0]["stopped"]
    assert status.cell_statuses(out, None, NOW)[0].state == "pending"


def test_cancel_and_status_need_a_manifest(tmp_path):
    for command in ("cancel", "logs"):
        args = [command, tmp_path] + (["a"] if command == "logs" else [])
        result = cli(*args)
        assert result.exit_code == 2 and "no manifest.json" in result.stderr


def test_scancel_that_cannot_run_cancels_nothing(monkeypatch):
    monkeypatch.setattr(slurm, "_slurm_cmd", lambda args, timeout=10: None)
    with pytest.raises(PpoddError, match="nothing was cancelled"):
        slurm.scancel(["7_0"])


def test_summarize_json_carries_each_runs_seconds_per_phase_and_device_hours():
    archived = Path(__file__).parent / "data" / "run-format-v1.h5"
    result = cli("summarize", archived, "--format", "json")
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["seconds_per_phase"] == {"distill": 3.236, "evaluate": 6.777, "prepare": 0.206}
    assert run["device_hours"] == pytest.approx(10.219 / 3600, abs=1e-6)
