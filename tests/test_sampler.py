"""Pool patch sampler (docs/method.md §8.2, §9, §10.1)."""

import pytest
import torch
from helpers import gen

from ppodd.method.sampler import sample_pool


def test_sample_pool_same_seed_same_draws():
    pi = torch.tensor([0.4, 0.35, 0.25])
    first = sample_pool(pi, 96, 96, gen(3))
    second = sample_pool(pi, 96, 96, gen(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = sample_pool(pi, 96, 96, gen(4))
    assert not torch.equal(first[1], other[1])


def test_sample_pool_returns_cpu_int64_of_batch_size():
    member, patch = sample_pool([0.5, 0.5], 50, 400, gen())
    assert member.shape == patch.shape == (50,)
    assert member.dtype == patch.dtype == torch.int64
    assert member.device.type == patch.device.type == "cpu"
    assert int(patch.min()) >= 0 and int(patch.max()) < 400


def test_sample_pool_single_member_full_batch_is_permutation():
    # §8.2: M = 1 and b = N = 96 use every patch exactly once.
    member, patch = sample_pool(torch.tensor([1.0]), 96, 96, gen(1))
    assert torch.equal(member, torch.zeros(96, dtype=torch.int64))
    assert torch.equal(patch.sort().values, torch.arange(96))


@pytest.mark.parametrize("seed", range(5))
def test_sample_pool_patches_distinct_within_member(seed):
    pi = torch.tensor([0.55, 0.25, 0.2])
    member, patch = sample_pool(pi, 96, 96, gen(seed), nets=4)
    for row in range(4):
        for m in range(3):
            chosen = patch[row][member[row] == m]
            assert chosen.unique().numel() == chosen.numel()


def test_sample_pool_nets_gives_independent_rows():
    member, patch = sample_pool([0.3, 0.7], 96, 96, gen(2), nets=8)
    assert member.shape == patch.shape == (8, 96)
    assert not torch.equal(patch[0], patch[1])


def test_sample_pool_zero_weight_members_never_drawn():
    pi = torch.tensor([0.0, 0.6, 0.0, 0.4, 0.0])
    member, _ = sample_pool(pi, 96, 96, gen(5), nets=50)
    assert set(member.unique().tolist()) == {1, 3}


def test_sample_pool_member_frequencies_follow_pi():
    # 400 × 96 = 38,400 draws; chi-square with 4 d.o.f. has P(> 30) < 1e-5, and the seed is fixed.
    pi = torch.tensor([0.39875238, 0.21766999, 0.1649142, 0.11138725, 0.10727618])
    member, _ = sample_pool(pi, 96, 96, gen(7), nets=400)
    counts = torch.bincount(member.flatten(), minlength=5).double()
    expected = pi.double() * member.numel()
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 30.0


def test_sample_pool_patch_positions_uniform_per_member():
    # Every patch index should be about equally likely; 100 nets × 48 draws of 96 positions.
    _, patch = sample_pool([1.0], 48, 96, gen(8), nets=100)
    counts = torch.bincount(patch.flatten(), minlength=96).double()
    expected = patch.numel() / 96
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 160.0  # 95 d.o.f.; P(> 160) < 1e-4


def test_sample_pool_unnormalised_pi_matches_normalised():
    first = sample_pool(torch.tensor([2.0, 6.0]), 40, 96, gen(9))
    second = sample_pool(torch.tensor([0.25, 0.75]), 40, 96, gen(9))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_sample_pool_member_over_num_patches_raises_value_error():
    with pytest.raises(ValueError, match="num_patches"):
        sample_pool([1.0], 10, 8, gen())


def test_sample_pool_batch_over_num_patches_split_across_members_is_allowed():
    member, patch = sample_pool([0.5, 0.5], 8, 6, gen(11))
    assert torch.bincount(member, minlength=2).max() <= 6
    assert patch.shape == (8,)


@pytest.mark.parametrize("pi", [[], [-0.1, 1.1], [0.0, 0.0], [[0.5, 0.5]]])
def test_sample_pool_bad_pi_raises_value_error(pi):
    with pytest.raises(ValueError, match="pi"):
        sample_pool(torch.tensor(pi), 4, 8, gen())


def test_sample_pool_device_argument_moves_results():
    member, patch = sample_pool([1.0], 4, 8, gen(), device="cpu")
    assert member.device == patch.device == torch.device("cpu")
