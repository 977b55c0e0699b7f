"""Stage probabilities π (docs/method.md §10.2-§10.5), checked against the §10.3 vectors."""

import dataclasses
import math

import pytest
import torch

from ppodd.config import ConfigError, load_config
from ppodd.method.stage_weights import (
    CODE_OPTIONS,
    PAPER_OPTIONS,
    stage_weights,
)

# Algorithm 1 as written: the paper preset with the formula's decay, anchored on the oldest member (D3).
FORMULA_OPTIONS = dataclasses.replace(PAPER_OPTIONS, decay_anchor="oldest")

# Logged stage accuracies of run zwrdy27l (§10.3), in percent.
ACCURACIES = [38.40125, 43.17125, 48.075, 50.89125]

# §10.3 table, π over the code's slots [live, S_1, …, S_t] after stage t.
CODE_TABLE = {
    1: [0.5498081, 0.4501919],
    2: [0.46162919, 0.25199304, 0.28637776],
    3: [0.42043973, 0.22950864, 0.17388356, 0.17616807],
    4: [0.39875238, 0.21766999, 0.1649142, 0.11138725, 0.10727618],
}


def _chronological(code_slots):
    """[live, S_1, …, S_t] -> [S_1, …, S_t, live]."""
    return code_slots[1:] + code_slots[:1]


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_stage_weights_code_preset_matches_section_10_3_table(stages):
    got = stage_weights(ACCURACIES[:stages], CODE_OPTIONS)
    assert got == pytest.approx(_chronological(CODE_TABLE[stages]), abs=1e-7)


def test_stage_weights_code_preset_after_stage_5_keeps_stage_4_pi_and_zeroes_s5():
    # §10.3 termination: the final pool is [live, S_1 … S_4] with the stage-4 π; S_5 unused.
    got = stage_weights(ACCURACIES + [52.0], CODE_OPTIONS)
    assert got == pytest.approx(CODE_TABLE[4][1:] + [0.0] + CODE_TABLE[4][:1], abs=1e-7)


def test_stage_weights_code_preset_seven_stages_does_not_crash():
    got = stage_weights(ACCURACIES + [52.0, 53.0, 54.0], CODE_OPTIONS)
    assert len(got) == 8
    assert got[4:7] == [0.0, 0.0, 0.0]
    assert sum(got) == pytest.approx(1.0, abs=1e-12)


def test_stage_weights_formula_two_members_swaps_code_numbers():
    got = stage_weights(ACCURACIES[:1], FORMULA_OPTIONS)
    assert got == pytest.approx([0.5498081, 0.4501919], abs=1e-7)


def test_stage_weights_formula_five_members_matches_section_10_3():
    got = stage_weights(ACCURACIES, FORMULA_OPTIONS)
    assert got == pytest.approx([0.3731, 0.2544, 0.1718, 0.1103, 0.0903], abs=5e-5)


def test_stage_weights_default_decay_anchored_newest_matches_section_10_3():
    opts = PAPER_OPTIONS   # the default: decay anchored on the newest member
    got = stage_weights(ACCURACIES, opts)
    assert got == pytest.approx([0.0393, 0.0729, 0.1339, 0.2337, 0.5201], abs=5e-5)


@pytest.mark.parametrize("opts", [PAPER_OPTIONS, CODE_OPTIONS])
def test_stage_weights_first_stage_is_live_only(opts):
    assert stage_weights([], opts) == [1.0]


def test_stage_weights_presets_use_first_option_values_for_paper():
    assert PAPER_OPTIONS == load_config(None, ["ppodd.variant=paper"]).ppodd
    assert (PAPER_OPTIONS.boost, PAPER_OPTIONS.min_weight, PAPER_OPTIONS.decay) == (1.5, 0.1, 0.5)
    assert PAPER_OPTIONS.max_slots is None and CODE_OPTIONS.max_slots == 5


def test_stage_weights_tensor_input_matches_list_input():
    as_tensor = torch.tensor(ACCURACIES, dtype=torch.float64)
    assert stage_weights(as_tensor, PAPER_OPTIONS) == stage_weights(ACCURACIES, PAPER_OPTIONS)


def test_stage_weights_percent_and_fraction_agree_up_to_guard():
    fractions = [a / 100 for a in ACCURACIES]
    got = stage_weights(fractions, PAPER_OPTIONS)
    assert got == pytest.approx(stage_weights(ACCURACIES, PAPER_OPTIONS), abs=1e-5)


def test_stage_weights_uniform_gives_one_over_pool_size():
    opts = dataclasses.replace(FORMULA_OPTIONS, sampling="uniform")
    assert stage_weights(ACCURACIES, opts) == pytest.approx([0.2] * 5, abs=1e-15)


def test_stage_weights_uniform_with_cap_spreads_over_kept_members():
    opts = dataclasses.replace(CODE_OPTIONS, sampling="uniform")
    got = stage_weights(ACCURACIES + [52.0, 53.0], opts)
    assert got == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.0, 0.0, 0.2], abs=1e-15)


def test_stage_weights_zero_boost_puts_live_on_floor():
    # §10.5: β = 0 sends the boosted member to ε/T' before the single normalisation.
    opts = dataclasses.replace(FORMULA_OPTIONS, boost=0.0)
    a1 = ACCURACIES[0]
    w = [(a1 + 1e-5) / (1.9 * a1 + 2e-5), (0.9 * a1 + 1e-5) / (1.9 * a1 + 2e-5)]
    raw = [w[0], 0.1 / 2]
    expected = [r / sum(raw) for r in raw]
    assert stage_weights([a1], opts) == pytest.approx(expected, abs=1e-12)


def test_stage_weights_zero_boost_on_latest_snapshot_code_preset():
    opts = dataclasses.replace(CODE_OPTIONS, boost=0.0)
    got = stage_weights(ACCURACIES, opts)  # chronological [S_1, S_2, S_3, S_4, live]
    # After the first normalisation the others sum to 1 and S_4 is raised to ε/T' = 0.02.
    assert min(got) == got[3]
    assert got[3] == pytest.approx(0.02 / 1.02, abs=1e-12)


def test_stage_weights_floor_modes_differ_when_floor_binds():
    # ε = 1 gives a floor of 0.5 at T' = 2, which binds on the live member (D5).
    a1 = 10.0
    total = 19.0 + 2e-5
    w = [(a1 + 1e-5) / total, (9.0 + 1e-5) / total]
    raw = [w[0], w[1] * math.exp(-0.5) * 1.5]
    before = [max(r, 0.5) for r in raw]
    normalised = [r / sum(raw) for r in raw]
    after = [max(r, 0.5) for r in normalised]
    opts = dataclasses.replace(FORMULA_OPTIONS, min_weight=1.0)
    got_before = stage_weights([a1], opts)
    got_after = stage_weights([a1], dataclasses.replace(opts, floor_mode="after_norm"))
    assert got_before == pytest.approx([b / sum(before) for b in before], abs=1e-12)
    assert got_after == pytest.approx([a / sum(after) for a in after], abs=1e-12)
    assert got_before[1] != pytest.approx(got_after[1], abs=1e-3)


def test_stage_weights_code_order_alone_moves_decay_to_live():
    # D1 only changes slot positions: equal accuracies, no boost, no floor leave π ∝ decay.
    opts = dataclasses.replace(
        FORMULA_OPTIONS, pool_order="code", boost=1.0, min_weight=0.0, bootstrap=1.0
    )
    raw = [math.exp(-0.5 * k) for k in (1, 2, 3, 0)]  # [S_1, S_2, S_3, live]
    assert stage_weights([40.0, 40.0, 40.0], opts) == pytest.approx(
        [r / sum(raw) for r in raw], abs=1e-12
    )


def test_stage_weights_code_mutated_list_in_chronological_order():
    # D4 alone: live carries A_1, S_1 carries 0.9·A_1, S_k carries A_k.
    opts = dataclasses.replace(FORMULA_OPTIONS, acc_list="code_mutated", boost=1.0, decay=0.0,
                               min_weight=0.0)
    a = [30.0, 50.0]
    acc = [0.9 * 30.0, 50.0, 30.0]
    expected = [(x + 1e-5) / sum(y + 1e-5 for y in acc) for x in acc]
    assert stage_weights(a, opts) == pytest.approx(expected, abs=1e-12)


def test_stage_weights_boost_latest_snapshot_alone_boosts_newest_frozen():
    opts = dataclasses.replace(FORMULA_OPTIONS, boost_target="latest_snapshot", decay=0.0,
                               min_weight=0.0, bootstrap=1.0)
    raw = [1.0, 2.0, 1.0]  # [S_1, S_2 (boosted ×2), live], equal accuracies
    got = stage_weights([40.0, 40.0], dataclasses.replace(opts, boost=2.0))
    assert got == pytest.approx([r / 4.0 for r in raw], abs=1e-12)


def test_stage_weights_cap_on_paper_preset_freezes_pool_at_cap():
    opts = dataclasses.replace(FORMULA_OPTIONS, max_slots=5)
    six = ACCURACIES + [52.0, 53.0]
    capped = stage_weights(ACCURACIES, opts)
    assert stage_weights(six, opts) == pytest.approx(capped[:4] + [0.0, 0.0] + capped[4:])


def test_stage_weights_cap_of_one_keeps_only_live():
    opts = dataclasses.replace(FORMULA_OPTIONS, max_slots=1)
    assert stage_weights(ACCURACIES, opts) == [0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("stages", range(1, 9))
@pytest.mark.parametrize("opts", [PAPER_OPTIONS, CODE_OPTIONS])
def test_stage_weights_any_stage_count_sums_to_one(opts, stages):
    accuracies = [40.0 + k for k in range(stages)]
    got = stage_weights(accuracies, opts)
    assert len(got) == stages + 1
    assert sum(got) == pytest.approx(1.0, abs=1e-12)
    assert all(p >= 0 for p in got)


@pytest.mark.parametrize(
    "field", ["sampling", "pool_order", "boost_target", "decay_anchor", "acc_list", "floor_mode"]
)
def test_stage_weight_options_unknown_choice_is_refused_by_the_config(field):
    with pytest.raises(ConfigError, match=f"ppodd.{field}: 'bogus' is not one of"):
        load_config(None, [f"ppodd.{field}=bogus"])


def test_stage_weights_negative_accuracy_raises_value_error():
    with pytest.raises(ValueError, match="stage_accuracies"):
        stage_weights([-1.0], PAPER_OPTIONS)
