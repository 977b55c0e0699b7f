"""The stage loop of one cell: P-PoDD's stages of RaT-BPTT outer steps, PoDD as its one-stage case.

`distill_stages` runs the loop from wherever a `RunState` stands (a fresh start or a checkpoint)
to the last stage's end, `end_stage` freezes the live poster and updates π (§10.1), and
`final_scores` measures the final live poster and pool (D7, D12), `architecture_scores` the same on
the architectures of `eval.models`. Every evaluation goes through
`Evaluator`, which times it into the run's phase seconds. The maths is `ppodd.method`'s; this
module adds the order of the steps, the generators they draw from, progress and checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable

import torch

from ppodd.cell.evalnets import describe, eval_settings
from ppodd.cell.malloc import reuse_freed_memory
from ppodd.cell.prepare import Prepared
from ppodd.cell.progress import Progress
from ppodd.config import RunConfig
from ppodd.errors import PpoddError
from ppodd.method.distill import Pool, StepSettings, clip_by_ema, meta_gradient
from ppodd.method.evaluate import EvalSettings, evaluate_pool
from ppodd.method.labels import init_label_map
from ppodd.method.poster import PosterGeometry, init_poster
from ppodd.method.seeding import generator
from ppodd.method.stage_weights import stage_weights
from ppodd.storage.checkpoint import RunState
from ppodd.storage.record import ArchitectureResult, EvalResult, StageRecord


class Interrupted(PpoddError):
    """The run was asked to stop (a signal or a test); its checkpoint holds all finished work."""


def fresh_state(prep: Prepared) -> RunState:
    """The state before the first outer step: the initial poster (§3) and label map (§5.2)."""
    poster = init_poster(prep.geom, generator(prep.cfg.seed, "poster", 0))
    live_map = None
    if prep.label_shape is not None:
        live_map = init_label_map(*prep.label_shape, prep.order, prep.data.num_classes).to(prep.device)
    return RunState(stage=0, epoch=0, step=0, live=poster.to(prep.device), live_map=live_map,
                    optimizer={}, ema=None, bank=[], bank_labels=[], bank_maps=[], accs=[], pi=[1.0],
                    initial_poster=poster.clone(),
                    started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def settings_of(cfg: RunConfig, num_classes: int) -> tuple[StepSettings, EvalSettings]:
    """What an outer step and an evaluation need from the validated config."""
    d, m = cfg.distill, cfg.model
    step = StepSettings(d.batch_patches, d.window, d.inner_lr, d.real_subbatch, d.augment,
                        num_classes, m.width, m.depth, cfg.poster.label_eps,
                        checkpoint_window=d.checkpoint_window, real_bf16=d.real_bf16,
                        bf16=cfg.precision == "bf16")
    return step, eval_settings(cfg, num_classes)


def pool_of(prep: Prepared, state: RunState) -> Pool:
    """The pool the live poster trains against: the live poster and the frozen snapshots (§10.1)."""
    geom = prep.geom
    empty = state.live.new_zeros((0, 3, geom.height, geom.width))
    labels = state.bank_labels or [state.live.new_zeros((0, geom.num_patches, geom.num_classes))]
    frozen_labels = torch.stack(state.bank_labels) if state.bank_labels else labels[0]
    return Pool(state.live, state.live_map, prep.fixed_labels,
                torch.stack(state.bank) if state.bank else empty, frozen_labels)


class Evaluator:
    """Runs §9 evaluations for one prepared run on `arch` (default `eval.model`), timing them into
    the run's phase seconds."""

    def __init__(self, prep: Prepared, state: RunState, progress: Progress, arch: str | None = None) -> None:
        self.prep, self.state, self.progress = prep, state, progress
        self.eval_settings = eval_settings(prep.cfg, prep.data.num_classes, arch)

    def evaluate(self, posters: torch.Tensor, labels: torch.Tensor, pi: list[float], members: list[int],
                 *name: object, geom: PosterGeometry | None = None) -> EvalResult:
        """Train and test the evaluation nets on a pool (§9) and describe what they saw (D12).

        `geom` is the pool's geometry when it is not the run's poster (a strip of real images);
        a pool of fewer patches than `distill.batch_patches` trains on all of them each step.
        """
        start = time.monotonic()
        geom = geom or self.prep.geom
        settings = self.eval_settings
        if geom.num_patches < settings.batch_patches:
            settings = dataclasses.replace(settings, batch_patches=geom.num_patches)
        gen = generator(self.prep.cfg.seed, "eval", *name)
        with reuse_freed_memory():
            per_net = evaluate_pool(posters, labels, torch.tensor(pi), geom, self.prep.test_x,
                                    self.prep.test_y, settings, gen)
        seconds = time.monotonic() - start
        self.state.seconds["evaluate"] = self.state.seconds.get("evaluate", 0.0) + seconds
        used = sum(1 for w in pi if w > 0)
        result = EvalResult(list(self.eval_settings.checkpoints), per_net.double(), members, list(pi),
                            used * geom.pixels, used * geom.effective_ipc, seconds)
        self.progress.event("evaluation", what="/".join(map(str, name)), accuracy=round(result.final, 2),
                            best=round(result.best, 2), pixels=result.pixels, seconds=round(seconds, 1))
        return result


def _members(state: RunState) -> list[int]:
    return list(range(1, len(state.bank) + 1)) + [0]


def distill_stages(prep: Prepared, state: RunState, progress: Progress,
             checkpoint: Callable[[], None], should_stop: Callable[[], bool]) -> None:
    """Run the stage loop from wherever `state` stands until every stage has ended (§8.4, §10)."""
    cfg, geom = prep.cfg, prep.geom
    d, s = cfg.distill, cfg.ppodd
    engine = Evaluator(prep, state, progress)
    step_settings, _ = settings_of(cfg, prep.data.num_classes)
    stages, per_stage = cfg.num_stages, cfg.distill.epochs // cfg.num_stages
    n = prep.train_x.shape[0]
    batch = min(d.real_batch, n)
    steps = math.ceil(n / batch)
    total = stages * per_stage * steps
    last_save = time.monotonic()

    while state.stage < stages:
        t = state.stage + 1
        state.live.requires_grad_(True)
        groups = [{"params": [state.live], "lr": d.outer_lr}]
        if state.live_map is not None:
            state.live_map.requires_grad_(True)
            groups.append({"params": [state.live_map], "lr": d.outer_lr / cfg.poster.label_lr_scale})
        optimizer = torch.optim.Adam(groups, lr=d.outer_lr, betas=(0.9, 0.999), eps=1e-8)
        if state.optimizer:
            optimizer.load_state_dict(state.optimizer)
        pool = pool_of(prep, state)
        pi = torch.tensor(state.pi)

        while state.epoch < per_stage:
            epoch_gen = generator(cfg.seed, "epoch", state.stage, state.epoch)
            # §8.3: c is drawn once per epoch, uniform on {ω₀ … Ω − ω}, and shared by its steps.
            warmup = d.warmup if d.warmup >= 0 else int(torch.randint(
                d.min_window, d.total_window - d.window + 1, (), generator=epoch_gen))
            order = torch.randperm(n, generator=epoch_gen).to(prep.device)
            while state.step < steps:
                start = time.monotonic()
                idx = order[state.step * batch:(state.step + 1) * batch]
                optimizer.zero_grad(set_to_none=True)
                loss = meta_gradient(pool, pi, geom, prep.train_x[idx], prep.train_y[idx], warmup,
                                     step_settings,
                                     generator(cfg.seed, "step", state.stage, state.epoch, state.step))
                state.live.grad, state.ema, norm = clip_by_ema(state.live.grad, state.ema, d.clip_ema,
                                                               d.clip_factor)
                optimizer.step()
                if state.live_map is not None:
                    with torch.no_grad():
                        state.live_map.clamp_(min=0)
                state.step += 1
                # One host sync per outer step for everything logged (it waits for the step on a GPU).
                loss, norm, threshold = torch.stack([loss, norm, d.clip_factor * state.ema]).tolist()
                for key, value in (("stage", t), ("epoch", state.stage * per_stage + state.epoch + 1),
                                   ("warmup", warmup), ("loss", loss), ("grad_norm", norm),
                                   ("clip_threshold", threshold)):
                    state.curves.setdefault(key, []).append(value)
                state.seconds["distill"] = state.seconds.get("distill", 0.0) + time.monotonic() - start
                done = (state.stage * per_stage + state.epoch) * steps + state.step
                progress.step(done, stage=t, epoch=state.stage * per_stage + state.epoch + 1,
                              loss=loss)
                state.optimizer = optimizer.state_dict()
                if should_stop():
                    checkpoint()
                    raise Interrupted(f"stopped after outer step {done} of {total}; rerun to resume")
                if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                    checkpoint()
                    last_save = time.monotonic()
            state.step = 0
            state.epoch += 1
            epoch = state.stage * per_stage + state.epoch
            # The stage's last epoch is measured by the stage-end evaluation below.
            if cfg.eval.every_epochs and epoch % cfg.eval.every_epochs == 0 and state.epoch < per_stage:
                posters, labels = pool.stacked(geom, cfg.poster.label_eps)
                result = engine.evaluate(posters, labels, state.pi, _members(state), "epoch", epoch)
                state.in_stage.append((epoch, result))
                checkpoint()
                last_save = time.monotonic()

        end_stage(engine, pool)
        state.stage += 1
        state.epoch = 0
        state.ema = None  # the clip EMA restarts with every stage [PPoDD-code]
        if s.reset_outer_adam:
            state.optimizer = {}
        if s.stage_init == "reinit_random" and state.stage < stages:
            state.live = init_poster(geom, generator(cfg.seed, "poster", state.stage)).to(prep.device)
            state.optimizer = {}
        checkpoint()
        last_save = time.monotonic()


def end_stage(engine: Evaluator, pool: Pool) -> None:
    """Snapshot the live poster, measure A_t, update π for the next stage (§10.1, §10.3)."""
    prep, state = engine.prep, engine.state
    cfg, geom, t = prep.cfg, prep.geom, state.stage + 1
    eps = cfg.poster.label_eps
    snapshot = state.live.detach().clone()
    snap_labels = pool.live_labels(geom, eps).detach().clone()
    snap_map = None if state.live_map is None else state.live_map.detach().clone()
    if cfg.ppodd.stage_acc_source == "mixture":
        # The new snapshot would sit at probability 0, so this is the pool as it trained (D8).
        posters, labels = pool.stacked(geom, eps)
        result = engine.evaluate(posters, labels, state.pi, _members(state), "stage", t)
    else:
        result = engine.evaluate(snapshot[None], snap_labels[None], [1.0], [t], "stage", t)
    acc = result.best if cfg.ppodd.stage_acc_reduce == "max" else result.final
    pi_before = list(state.pi)
    state.bank.append(snapshot)
    state.bank_labels.append(snap_labels)
    state.bank_maps.append(snap_map)
    state.accs.append(acc)
    state.pi = stage_weights(state.accs, cfg.ppodd)
    state.stages.append(StageRecord(
        index=t, epochs=cfg.distill.epochs // cfg.num_stages, poster=snapshot.cpu(),
        patch_labels=snap_labels.cpu(), label_map=None if snap_map is None else snap_map.cpu(),
        pi_before=pi_before, pi_after=list(state.pi), accuracy=result, stage_accuracy=acc,
        pool_pixels=sum(1 for w in pi_before if w > 0) * geom.pixels, in_stage=state.in_stage))
    state.in_stage = []
    engine.progress.event("stage_done", stage=t, stage_accuracy=round(acc, 2),
                          pi=[round(w, 4) for w in state.pi])


def final_pool(state: RunState, final_pool_rule: str) -> tuple[torch.Tensor, torch.Tensor, list[float], list[int]] | None:
    """The final pool (D7) as posters, labels, π and members; None where it is the live poster alone."""
    stages = len(state.stages)
    if final_pool_rule == "code_first5":
        # The pool of the last stage with the π it trained with, as the authors' last evaluation.
        pi = list(state.stages[-1].pi_before)
    elif stages == 1:
        return None
    else:
        # all_stages: P_1 … P_T, where P_T is the live poster; the last snapshot duplicates it, so
        # the two weights of π_after are merged onto one member.
        pi = state.pi[:stages - 1] + [state.pi[stages - 1] + state.pi[stages]]
    posters = torch.stack(state.bank[:stages - 1] + [state.bank[-1]])
    labels = torch.stack(state.bank_labels[:stages - 1] + [state.bank_labels[-1]])
    return posters, labels, pi, list(range(1, stages)) + [0]


def final_scores(engine: Evaluator) -> tuple[EvalResult, EvalResult]:
    """The final live poster alone and the final pool (D7, D12), reusing equal measurements."""
    prep, state = engine.prep, engine.state
    cfg = prep.cfg
    last = state.stages[-1]
    mixture = cfg.ppodd.stage_acc_source == "mixture"
    if mixture and len(state.stages) == 1:
        live_result = last.accuracy  # PoDD: the stage-end measurement is the live poster alone
    else:
        live_result = engine.evaluate(state.bank[-1][None], state.bank_labels[-1][None], [1.0], [0], "final", "live")
    if cfg.ppodd.final_pool == "code_first5" and mixture:
        return live_result, last.accuracy  # the last stage-end measurement was of this very pool
    pool = final_pool(state, cfg.ppodd.final_pool)
    if pool is None:
        return live_result, live_result
    return live_result, engine.evaluate(*pool, "final", "pool")


def architecture_scores(prep: Prepared, state: RunState, progress: Progress,
                        checkpoint: Callable[[], None]) -> None:
    """Score the final live poster and pool on each architecture of `eval.models` not yet scored
    (the cross-architecture result, §9), checkpointing after each; `eval.model`'s are reused."""
    cfg = prep.cfg
    for arch in cfg.eval.models:
        if arch in state.architectures:
            continue
        engine = Evaluator(prep, state, progress, arch)
        if arch == cfg.eval.model:
            live, pool = state.final
        else:
            live = engine.evaluate(state.bank[-1][None], state.bank_labels[-1][None], [1.0], [0], "final", "live", arch)
            members = final_pool(state, cfg.ppodd.final_pool)
            pool = live if members is None else engine.evaluate(*members, "final", "pool", arch)
        state.architectures[arch] = ArchitectureResult(describe(engine.eval_settings), live, pool)
        checkpoint()
