"""KID and the recognition statistics of klsc_lib.worlds.miniworld.quality."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.worlds.miniworld import quality as q


def kid_by_loops(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, written out term by term."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_the_estimator_written_out():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen) + 0.5
    mean, std = q.kid(x, y, num_subsets=3)  # full-size subsets: every subset is a permutation of the data
    assert mean == pytest.approx(kid_by_loops(x.double(), y.double()), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same, same_std = q.kid(x, y, num_subsets=20, subset_size=100)
    shifted, _ = q.kid(x, y + 0.5, num_subsets=20, subset_size=100)
    far, _ = q.kid(x, y + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 0.01
    assert far > shifted > 10 * abs(same)


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="feature sets"):
        q.kid(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="subset size"):
        q.kid(torch.zeros(5, 3), torch.zeros(5, 3), subset_size=6)


def test_histogram_stats_of_uniform_and_of_one_class():
    uniform = q.histogram_stats(torch.arange(40) % 10, 10)
    assert uniform["histogram"] == [4] * 10
    assert uniform["tv_to_uniform"] == pytest.approx(0.0)
    assert uniform["normalised_entropy"] == pytest.approx(1.0)
    single = q.histogram_stats(torch.full((12,), 3), 10)
    assert single["tv_to_uniform"] == pytest.approx(0.9)
    assert single["normalised_entropy"] == pytest.approx(0.0)
    half = q.histogram_stats(torch.tensor([0, 1] * 5), 4)
    assert half["normalised_entropy"] == pytest.approx(math.log(2) / math.log(4))
    assert half["tv_to_uniform"] == pytest.approx(0.5)


def test_recognition_mean_max_prob():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    rec = q.recognition(probs)
    assert rec["mean_max_prob"] == pytest.approx(0.75)
    assert rec["histogram"] == [1, 0, 1]
