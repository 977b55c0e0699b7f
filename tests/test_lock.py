"""The cell lock: refused while another process holds it, free again once that process dies."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from ppodd.storage.lock import LockedError, cell_lock

HOLD = "import sys, time\nfrom ppodd.storage.lock import cell_lock\nwith cell_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(120)\n"


@pytest.fixture
def holder(tmp_path):
    """A function starting another process that holds the lock at a path until it is killed."""
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_cell_lock_held_by_another_process_refused_naming_host_pid_since(tmp_path, holder):
    path = tmp_path / "cell.lock"
    proc = holder(path)
    with pytest.raises(LockedError) as err:
        with cell_lock(path):
            pytest.fail("the lock was taken twice")
    message = str(err.value)
    assert f"held by host {socket.gethostname()} pid {proc.pid} since " in message
    assert "\n" not in message and message.startswith("cell: another run of this cell is writing it")


def test_cell_lock_of_killed_holder_is_taken_and_removed_after(tmp_path, holder):
    path = tmp_path / "cell.lock"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.exists()  # a crash leaves the file, but not the lock
    with cell_lock(path):
        assert path.read_text().startswith(f"host {socket.gethostname()} pid {os.getpid()} since ")
    assert not path.exists()


def test_cell_lock_other_cells_lock_independently(tmp_path, holder):
    holder(tmp_path / "a.lock")
    with cell_lock(tmp_path / "b.lock"):
        assert (tmp_path / "b.lock").exists()
    assert (tmp_path / "a.lock").exists() and not (tmp_path / "b.lock").exists()


def test_cell_task_of_a_cell_another_task_runs_refuses_and_keeps_its_record(tmp_path, holder):
    from ppodd.cluster import task
    from ppodd.cell.identity import CellFiles
    from ppodd.atomic import write_json
    from ppodd.config import load_config, to_dict

    path = tmp_path / "cell.h5"
    proc = holder(path.with_suffix(".lock"))
    record = {"state": "running", "pid": proc.pid, "host": socket.gethostname()}
    write_json(CellFiles(path).state, record)
    with pytest.raises(LockedError, match=f"pid {proc.pid}"):
        task.CellTask(to_dict(load_config("configs/demo.yaml")), str(path), "")()
    assert json.loads(CellFiles(path).state.read_text()) == record
