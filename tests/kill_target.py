"""`ppodd run` with phase markers on stderr, the process that tests/test_kill.py kills.

`python tests/kill_target.py run ARGS...` runs the real `ppodd` command line unchanged, except
that a few functions of `ppodd.cell.run`, `ppodd.cell.stages` and `ppodd.storage.writer` first
print one JSON line `{"event": "phase", "phase": NAME}` to stderr, so the test can aim a kill at a
phase:

    prepare     data loading, ZCA fit and cache, geometry (ppodd.cell.prepare.prepare); the ZCA fit
                starts after a pause of $KILL_TARGET_PREPARE_PAUSE seconds (default 0.4), since
                the tiny data set of the test prepares in a few milliseconds
    distill     one outer step (ppodd.method.distill.meta_gradient)
    checkpoint  a checkpoint write (ppodd.storage.checkpoint.save_checkpoint)
    stage_end   the stage-end evaluation and π update (ppodd.cell.stages.end_stage)
    evaluate    the final evaluations (ppodd.cell.run.final_scores)

Every evaluation (ppodd.cell.stages.evaluate_pool) starts after $KILL_TARGET_EVAL_PAUSE seconds
(default 0.1), which widens the stage-end and final-evaluation phases alike.
    write       the result file write; each stage group is written after a pause of
                $KILL_TARGET_WRITE_PAUSE seconds (default 0.5), so a kill lands in a half-written
                temporary file rather than only before or after the whole write

The test also reads ppodd's own structlog events (run_start, outer_step, evaluation, stage_done)
from the same stream.

Only this test helper patches anything; ppodd itself has no test hooks.
"""

import json
import os
import sys
import time

import ppodd.cell.prepare
import ppodd.cell.run
import ppodd.cell.stages
import ppodd.storage.writer
from ppodd.cli import app


def _mark(phase: str) -> None:
    sys.stderr.write(json.dumps({"event": "phase", "phase": phase}) + "\n")
    sys.stderr.flush()


def _marked(function, phase: str, pause: float = 0.0):
    def wrapper(*args, **kwargs):
        _mark(phase)
        if pause:
            time.sleep(pause)
        return function(*args, **kwargs)

    return wrapper


def _install() -> None:
    run, stages = ppodd.cell.run, ppodd.cell.stages
    run.prepare = _marked(run.prepare, "prepare")
    stages.meta_gradient = _marked(stages.meta_gradient, "distill")
    run.save_checkpoint = _marked(run.save_checkpoint, "checkpoint")
    stages.end_stage = _marked(stages.end_stage, "stage_end")
    run.final_scores = _marked(run.final_scores, "evaluate")
    run.write_run = _marked(run.write_run, "write")
    pause = float(os.environ.get("KILL_TARGET_EVAL_PAUSE", "0.1"))
    stages.evaluate_pool = _marked(stages.evaluate_pool, "evaluation_start", pause)
    pause = float(os.environ.get("KILL_TARGET_PREPARE_PAUSE", "0.4"))
    ppodd.cell.prepare.load_or_fit_zca = _marked(ppodd.cell.prepare.load_or_fit_zca, "prepare_zca", pause)
    pause = float(os.environ.get("KILL_TARGET_WRITE_PAUSE", "0.5"))
    ppodd.storage.writer._write_stage = _marked(ppodd.storage.writer._write_stage, "write_stage", pause)


if __name__ == "__main__":
    _install()
    sys.exit(app(prog_name="ppodd"))
