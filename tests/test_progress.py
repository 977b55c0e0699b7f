import io
import json

import pytest
import structlog

from ppodd.cell import progress
from ppodd.cell.progress import Progress, configure_logging


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock Progress reads, set by the test: an ETA that does not depend on the machine's speed."""
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_progress_bar_shows_stage_epoch_loss_and_eta(clock):
    out = io.StringIO()
    p = Progress(total_steps=10, done_steps=0, log=structlog.get_logger(), stream=out, bar=True)
    clock[0] += 10.0  # 5 steps in 10 s: 2 s a step, 5 steps left
    p.step(5, stage=2, epoch=3, loss=1.23456)
    text = out.getvalue()
    assert "[############............] 5/10" in text
    assert "stage 2 epoch 3 loss 1.235" in text and "eta 0:00:10" in text


def test_progress_without_terminal_logs_json_events(clock):
    out = io.StringIO()
    configure_logging(out, json_lines=True)
    p = Progress(total_steps=4, done_steps=1, log=structlog.get_logger().bind(cell="c1"), stream=out, bar=False)
    clock[0] += 3.0  # 1 step of this process in 3 s, 2 steps left
    p.step(2, stage=1, epoch=1, loss=0.5)
    p.event("stage_done", stage=1)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["event"] == "outer_step" and events[0]["cell"] == "c1" and events[0]["loss"] == 0.5
    assert events[0]["step"] == 2 and events[0]["total"] == 4 and events[0]["eta_s"] == 6.0
    assert events[1]["event"] == "stage_done"
