"""Stage probabilities π over the P-PoDD poster pool (docs/method.md §10.2-§10.5).

The pool is always handled in chronological order, ``[S_1, ..., S_t, live]``: frozen snapshots
oldest first and the live poster last. The code reading's slot order ``[live, S_1, ..., S_t]``
only changes which decay factor each member gets (D1); outputs stay chronological.

The engine passes stage accuracies in percent, as the §10.3 test vectors do. The update is
scale-free in A except for the 1e-5 guard added to every accuracy, so percentages and fractions
give the same π up to that guard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ppodd.config import StagesConfig, resolve_variant

_ACCURACY_GUARD = 1e-5  # §10.2 step 3: keeps w defined when every accuracy is 0

# The options are the validated `ppodd` section of the run config (StagesConfig, defined once in
# ppodd.config with its allowed values); the two presets of §10.4, resolved:
PAPER_OPTIONS = resolve_variant(StagesConfig(variant="paper"))
CODE_OPTIONS = resolve_variant(StagesConfig(variant="code"))


def stage_weights(stage_accuracies: Sequence[float], opts: StagesConfig) -> list[float]:
    """Stage probabilities π over the pool at the start of stage t+1, chronological order.

    ``stage_accuracies`` holds A_1 … A_t (t finished stages, percent; a list or a float64
    tensor). The pool has T' = t + 1 members ``[S_1, …, S_t, live]`` and the result, of length
    T', sums to 1. t = 0 gives ``[1.0]``. Implements §10.2 (paper) and §10.3 (code) through
    the options of §10.4 and §10.5; each option acts on its own, as follows.

    * ``max_slots = m`` (D9): once T' > m the pool stops growing. The members kept are
      ``S_1 … S_{m−1}`` and live, weighted exactly as at T' = m (from A_1 … A_{m−1}); the
      snapshots ``S_m … S_t`` get 0. With m = 5 this is the code's final pool: the stage-4 π on
      ``[live, S_1 … S_4]``. All steps below use the kept pool, so T' means min(t + 1, m).
    * ``sampling = uniform`` (§10.5): π = 1/T' on every kept member; the rest is skipped.
    * ``acc_list`` (D4) gives each member its accuracy. ``per_stage``: S_i carries A_i and live
      carries ``bootstrap``·A_t, recomputed each update. ``code_mutated``: the list the code
      mutates, ``[A_1, 0.9·A_1, A_2, …, A_t]``, read in the code's slot order, so live carries
      A_1, S_1 carries ``bootstrap``·A_1 and S_k carries A_k for k ≥ 2.
      Then w = (A + 1e-5) / Σ(A + 1e-5).
    * ``pool_order`` (D1) fixes each member's slot index i = 1 … T' used by the decay only:
      ``chronological`` is ``[S_1, …, S_t, live]``, ``code`` is ``[live, S_1, …, S_t]``.
    * ``decay_anchor`` (D3): ``oldest`` gives d_i = exp(−λ(i − 1)) (Algorithm 1 as written,
      slot 1 gets 1); ``newest`` gives d_i = exp(−λ(T' − i)) (the last slot gets 1).
    * ``boost_target`` (D2): π ← w ⊙ d, then the live member (``live``) or the newest kept
      snapshot (``latest_snapshot``, S_{T'−1}) is multiplied by β.
    * ``floor_mode`` (D5): ``before_norm`` floors at ε/T' and normalises once (Algorithm 1);
      ``after_norm`` normalises, floors at ε/T', normalises again (the code).

    ``PAPER_OPTIONS`` with ``decay_anchor`` ``oldest`` (Algorithm 1 as written) at T' = 2 with
    A_1 = 38.40125 gives [0.5498081, 0.4501919];
    ``CODE_OPTIONS`` gives the same numbers with the members swapped (§10.3 table).
    """
    accuracies = [float(a) for a in stage_accuracies]
    if not all(math.isfinite(a) and a >= 0 for a in accuracies):
        raise ValueError(f"stage_accuracies: got {accuracies!r}, allowed finite values >= 0")
    stages = len(accuracies)
    kept = stages if opts.max_slots is None else min(stages, opts.max_slots - 1)
    weights = _kept_pool_weights(accuracies[:kept], opts)
    # Snapshots beyond the cap sit between the kept snapshots and live (D9).
    return weights[:-1] + [0.0] * (stages - kept) + weights[-1:]


def _kept_pool_weights(accuracies: list[float], opts: StagesConfig) -> list[float]:
    """π over ``[S_1, …, S_t, live]`` with no slot cap (see ``stage_weights``)."""
    stages = len(accuracies)
    pool_size = stages + 1  # T'
    if pool_size == 1:
        return [1.0]
    if opts.sampling == "uniform":
        return [1.0 / pool_size] * pool_size

    if opts.acc_list == "per_stage":
        member_acc = accuracies + [opts.bootstrap * accuracies[-1]]
    else:
        # D4: the code appends bootstrap·A_1 once, after stage 1, and keeps it for good.
        mutated = [accuracies[0], opts.bootstrap * accuracies[0]] + accuracies[1:]
        member_acc = mutated[1:] + mutated[:1]  # code slots [live, S_1..] -> chronological
    total = sum(a + _ACCURACY_GUARD for a in member_acc)
    w = [(a + _ACCURACY_GUARD) / total for a in member_acc]

    if opts.pool_order == "chronological":
        slot = list(range(pool_size))
    else:
        slot = list(range(1, pool_size)) + [0]  # live occupies code slot 0
    if opts.decay_anchor == "oldest":
        steps = slot
    else:
        steps = [pool_size - 1 - s for s in slot]
    pi = [w_i * math.exp(-opts.decay * k) for w_i, k in zip(w, steps)]

    boosted = pool_size - 1 if opts.boost_target == "live" else pool_size - 2
    pi[boosted] *= opts.boost

    floor = opts.min_weight / pool_size
    if opts.floor_mode == "after_norm":
        pi = _normalise(pi)
    return _normalise([max(p, floor) for p in pi])


def _normalise(values: list[float]) -> list[float]:
    """``values`` divided by their sum."""
    total = sum(values)
    if total <= 0:
        raise ValueError(f"stage weights: all zero before normalising (got {values!r})")
    return [v / total for v in values]
