"""`ppodd run` killed, preempted, run twice at once or out of disk, as real processes.

Each test starts the real command line (through tests/kill_target.py, which only adds phase
markers on stderr) on a multi-stage P-PoDD shrink of configs/demo.yaml that still has stage ends,
evaluations and a final write, and compares what is left with one uninterrupted run of the same
seed (the module's `reference`).

The SIGKILL series makes `--kills N` kills (default 5, one per phase; `--kills 10` or
PPODD_KILLS=10 for the full series) at random moments inside data preparation, distillation,
checkpoint writes, stage ends, the final evaluations and the final write. PPODD_KILL_SEED fixes the
random moments; a failure prints the seed it used. `--kill-config full` runs every test here on the
unshrunk demo config (about 90 s a run on 2 cores).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY
from helpers import set_args

from ppodd.storage.checkpoint import load_checkpoint
from ppodd.cell.identity import config_digest
from ppodd.config import load_config
from ppodd.cell.identity import result_name
from ppodd.storage.reader import read_summary
from ppodd.storage.runfile import StoreError

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "tests" / "kill_target.py"
# A checkpoint after every outer step (so a kill in distillation resumes mid-stage) and two threads
# (so the multi-threaded kernels must be deterministic too). PPODD_KILL_CONFIG=full (or
# `--kill-config full`) runs the whole module on configs/demo.yaml as it is; by default it is shrunk
# to two stages of two epochs of two outer steps.
OVERRIDES = ["threads=2", "checkpoint_minutes=0.0001"]
if os.environ.get("PPODD_KILL_CONFIG", "shrunk") != "full":
    OVERRIDES += [*TINY, "distill.epochs=4"]  # conftest's tiny run with four epochs instead of two
# The phases a kill aims at, in pipeline order, with the longest delay after the phase's marker.
# The wrapper widens the short phases with pauses (tests/kill_target.py); each delay stays well
# inside its phase, so that a kill seen late by a busy machine still lands there.
DELAYS = {"prepare": 0.3, "distill": 0.06, "checkpoint": 0.004, "stage_end": 0.15, "evaluate": 0.2,
          "write": 0.7}
REQUIRED = {"prepare", "distill", "stage_end", "evaluate", "write"}


def command(out: Path, *extra: str) -> list[str]:
    """The `ppodd run` command line of the test cell, through the marker wrapper."""
    return [sys.executable, str(TARGET), "run", "--config", str(REPO / "configs" / "demo.yaml"),
            *set_args([*OVERRIDES, *extra]), "--out", str(out)]


def environment(cache: Path) -> dict[str, str]:
    # The cache comes from the environment, as it does for array tasks on a cluster.
    return {**os.environ, "PPODD_CACHE": str(cache), "PYTHONPATH": str(REPO)}


class Process:
    """A running command whose stderr lines are collected by a thread as they arrive."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=REPO)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, marker: str, nth: int = 1, timeout: float = 900) -> bool:
        """True once the `nth` line naming `marker` (a phase or an event) arrived; False if the process ended.

        The timeout guards against a hang, not a slow machine: a starved run may take minutes."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if sum(1 for line in self.lines if _name(line) == marker) >= nth:
                    return True
                if not self.reader.is_alive():
                    return False
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {marker!r} within {timeout} s:\n{''.join(self.lines[-5:])}")
                self.changed.wait(0.5)

    def finish(self, timeout: float = 1200) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once the process has ended."""
        self.proc.wait(timeout=timeout)  # stdout holds one line at most: it cannot fill its pipe
        out = self.proc.stdout.read()
        self.reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.lines)


def _name(line: str) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event.get("phase") if event.get("event") == "phase" else event.get("event")


def phase_of(stderr: str) -> str:
    """The phase a killed run was in: that of the last marker or event it printed."""
    phase = "prepare"
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("phase") if event.get("event") == "phase" else event.get("event")
        what = str(event.get("what", ""))
        if name in ("prepare", "prepare_zca"):
            phase = "prepare"
        elif name in ("run_start", "resume", "distill", "outer_step"):
            phase = "distill"
        elif name in ("stage_end", "stage_done") or (name == "evaluation" and what.startswith(("stage", "epoch"))):
            phase = "stage_end"
        elif name == "evaluate" or (name == "evaluation" and what.startswith("final")):
            phase = "evaluate"
        elif name in ("write", "write_stage"):
            phase = "write"
        # "checkpoint" belongs to the phase it ends: an outer step, a stage end or the final evaluation
    return phase


class ResultWatcher:
    """Polls a result path while runs go on and records every moment it held no complete run.

    Sampling can miss a short moment, so the last poll comes after `stop`: the final state is
    always read, however little the polling thread ran on a busy machine."""

    def __init__(self, path: Path) -> None:
        self.path, self.bad, self.reads = path, [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            last = self.stop.is_set()
            if self.path.exists():
                try:
                    read_summary(self.path)
                    self.reads += 1
                except StoreError as e:
                    if e.reason != "missing":  # removed between exists() and open: fine
                        self.bad.append(str(e))
            if last:
                return
            time.sleep(0.002)

    def __enter__(self) -> ResultWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)  # a guard against a hang, not a measure
        if exc[0] is None:
            assert not self.thread.is_alive(), "the result watcher did not stop"


def assert_bitwise_equal(expected: Path, actual: Path) -> None:
    """Every dataset (posters, labels, π, accuracies, curves, config) byte for byte, and every
    attribute but timings and provenance."""
    def raw(value):
        value = np.asarray(value)
        if value.dtype.kind == "O":  # variable-length strings: compare the text, not the pointers
            return repr(value.tolist()).encode()
        return f"{value.dtype}{value.shape}".encode() + value.tobytes()

    def contents(path):
        items = {}
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if name.startswith("provenance"):
                    return
                if isinstance(obj, h5py.Dataset):
                    items[name] = raw(obj[()])
                for key, value in obj.attrs.items():
                    if key != "seconds":
                        items[f"{name}@{key}"] = raw(value)
            visit("", f)
            f.visititems(visit)
        return items

    a, b = contents(expected), contents(actual)
    assert a.keys() == b.keys()
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"differs from the uninterrupted run: {differ[:10]}"
    assert any(name.endswith("poster") for name in a) and "final/pool/per_net" in a


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The result of one uninterrupted run of the test cell, through the real `ppodd` entry point."""
    base = tmp_path_factory.mktemp("reference")
    cmd = [sys.executable, "-m", "ppodd.cli", *command(base / "out")[2:]]
    done = subprocess.run(cmd, capture_output=True, text=True, env=environment(base / "cache"), cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.name == result_name(load_config(REPO / "configs" / "demo.yaml", OVERRIDES))
    return path


@pytest.fixture
def kills(request) -> int:
    return int(os.environ.get("PPODD_KILLS") or request.config.getoption("--kills"))


def kill_plan(count: int, rng: random.Random) -> list[tuple[str, int, float]]:
    """(phase, which occurrence of its marker, delay after it) for each kill, in pipeline order.

    Five kills hit the five phases once each; more kills add a checkpoint write, second kills in
    distillation and stage ends, then prepare kills, with count // 5 evaluation and write kills.
    Each distillation or checkpoint kill lets at most one outer step finish, so the plan never
    waits for steps that are already done.
    """
    if count < 5:
        raise pytest.UsageError(f"--kills {count}: at least 5, one per phase")
    late = count // 5
    early = ["prepare", "distill", "stage_end", "checkpoint", "distill", "stage_end"][:count - 2 * late]
    early += ["prepare"] * (count - 2 * late - len(early))
    return [(p, rng.randint(1, 2) if p in ("distill", "checkpoint") else 1, rng.uniform(0, DELAYS[p]))
            for p in early + ["evaluate"] * late + ["write"] * late]


def test_kill_plan_hits_every_phase_and_ends_with_evaluations_then_writes():
    for count in (5, 10, 17):
        plan = [p for p, _, _ in kill_plan(count, random.Random(count))]
        late = count // 5
        assert len(plan) == count and REQUIRED <= set(plan)
        assert plan[-2 * late:] == ["evaluate"] * late + ["write"] * late


@pytest.mark.slow
def test_sigkill_at_random_moments_rerun_finishes_bitwise_equal(reference, tmp_path, kills):
    seed = int(os.environ.get("PPODD_KILL_SEED") or random.SystemRandom().randrange(10**6))
    plan = kill_plan(kills, random.Random(seed))
    out, env = tmp_path / "out", environment(tmp_path / "cache")
    result = out / reference.name
    cfg = load_config(REPO / "configs" / "demo.yaml", OVERRIDES)
    hit = []
    with ResultWatcher(result) as watcher:
        for phase, nth, delay in plan:
            run = Process(command(out), env)
            arrived = run.wait_for(phase, nth)
            time.sleep(delay)
            run.proc.kill()
            code, _, stderr = run.finish()
            assert arrived and code == -signal.SIGKILL, (
                f"seed {seed}: the run ended (exit {code}) before the {phase} kill:\n{stderr[-1500:]}")
            hit.append(phase_of(stderr))
            # What a kill leaves is never damaged: a readable checkpoint or none, a complete result or none.
            load_checkpoint(result.with_suffix(".ckpt"), config_digest(cfg), torch.device("cpu"))
        code, stdout, stderr = Process(command(out), env).finish()
    assert code == 0, f"seed {seed}: the rerun after {kills} kills failed:\n{stderr[-2000:]}"
    assert stdout.strip() == str(result)
    assert not watcher.bad, f"seed {seed}: the result path held an unfinished file: {watcher.bad[:3]}"
    assert watcher.reads > 0  # the watcher's reads work: it read the finished file, at the latest in its last poll
    assert REQUIRED <= set(hit), f"seed {seed}: kills landed in {hit}, aimed at {[p for p, _, _ in plan]}"
    assert_bitwise_equal(reference, result)
    # Temporary files of killed writers, the checkpoint and the lock are all gone.
    assert sorted(p.name for p in out.iterdir()) == [result.name]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_slurm_signal_checkpoints_exits_1_and_resumed_run_is_bitwise_equal(reference, tmp_path, sig):
    out, env = tmp_path / "out", environment(tmp_path / "cache")
    result = out / reference.name
    run = Process(command(out), env)
    assert run.wait_for("distill", random.randint(1, 6))
    run.proc.send_signal(sig)
    code, stdout, stderr = run.finish()
    assert code == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rerun to resume" in errors[0] and "Traceback" not in stderr
    assert result.with_suffix(".ckpt").exists() and not result.exists()
    code, stdout, stderr = Process(command(out), env).finish()
    assert code == 0 and '"resume"' in stderr, stderr[-2000:]
    assert_bitwise_equal(reference, result)


@pytest.mark.slow
def test_second_run_of_same_cell_refuses_naming_lock_holder_then_resumes_after_holder_dies(reference, tmp_path):
    out, env = tmp_path / "out", environment(tmp_path / "cache")
    # The first run sits in its final write (long pauses) until it is killed, holding the lock.
    first = Process(command(out), {**env, "KILL_TARGET_WRITE_PAUSE": "300"})
    assert first.wait_for("write_stage")
    second = subprocess.run(command(out), capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert second.returncode == 1 and first.proc.poll() is None, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr
    assert "another run of this cell is writing it" in errors[0]
    assert f"pid {first.proc.pid} since " in errors[0]
    assert '"run_start"' not in second.stderr  # refused before any work
    first.proc.kill()
    first.finish()
    code, _, stderr = Process(command(out), env).finish()  # the dead holder's lock is free again
    assert code == 0, stderr[-2000:]
    assert_bitwise_equal(reference, out / reference.name)
    assert sorted(p.name for p in out.iterdir()) == [reference.name]


@pytest.mark.slow
def test_different_cells_into_one_folder_at_once_do_not_interfere(reference, tmp_path):
    out, env = tmp_path / "out", environment(tmp_path / "cache")
    runs = [Process(command(out, f"seed={seed}"), env) for seed in (0, 1)]
    results = []
    for run in runs:
        code, stdout, stderr = run.finish()
        assert code == 0, stderr[-2000:]
        results.append(Path(stdout.strip()))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in results)
    assert_bitwise_equal(reference, results[0])
    assert read_summary(results[1])["seed"] == 1
    with pytest.raises(AssertionError, match="differs from the uninterrupted run"):
        assert_bitwise_equal(reference, results[1])  # the comparison does tell runs apart


# --- storage faults on a real, small file system ------------------------------------------------


def _mount_tmpfs(folder: Path, size: str, *options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fault-injected tests in test_run.py cover the logic")
    folder.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); test_run.py's fault injection covers it")


@pytest.fixture
def small_disk(tmp_path):
    """A function that mounts a tmpfs of a given size at a new folder; unmounted after the test."""
    mounted = []

    def mount(size: str, *options: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        _mount_tmpfs(folder, size, *options)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte; the filler file."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_disk_full_mid_run_one_line_checkpoint_intact_then_resumes_equal(reference, tmp_path, small_disk):
    disk = small_disk("8m")
    out, env = disk / "out", environment(tmp_path / "cache")
    cfg = load_config(REPO / "configs" / "demo.yaml", OVERRIDES)
    ckpt = (out / reference.name).with_suffix(".ckpt")
    run = Process(command(out), env)
    assert run.wait_for("distill", 3)  # two outer steps are checkpointed by now
    filler = _fill(disk)
    code, _, stderr = run.finish()
    assert code == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "cannot write" in errors[0] and "bytes free" in errors[0]
    state = load_checkpoint(ckpt, config_digest(cfg), torch.device("cpu"))
    assert state is not None and (state.stage, state.epoch, state.step) >= (0, 0, 2)
    assert sorted(p.name for p in out.iterdir()) == [ckpt.name]  # no temporary debris, no lock
    filler.unlink()
    code, _, stderr = Process(command(out), env).finish()
    assert code == 0, stderr[-2000:]
    assert_bitwise_equal(reference, out / reference.name)


@pytest.mark.slow
@pytest.mark.parametrize("command_name", ["run", "submit"])
def test_full_or_read_only_disk_refused_before_any_work(tmp_path, small_disk, command_name):
    full, read_only = small_disk("256k"), small_disk("1m", "ro")
    for out, says in ((full / "out", "not enough space in output folder"),
                      (read_only, "cannot write in output folder")):
        cmd = [sys.executable, "-m", "ppodd.cli", *command(out)[2:]]
        if command_name == "submit":
            cmd[3] = "submit"
            cmd += ["--cluster", "local"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=environment(tmp_path / "cache"), cwd=REPO,
                              timeout=300)
        assert done.returncode == 1, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and says in errors[0] and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert '"outer_step"' not in done.stderr
        assert not out.exists() or not list(out.iterdir())
