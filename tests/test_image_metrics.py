"""KID and histogram distances of klsc_lib.analysis.image_metrics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from klsc_lib.analysis.image_metrics import histogram_stats, kid, total_variation


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
    mean, std = kid(x, y, num_subsets=3)  # full-size subsets: every subset is a permutation of the data
    assert mean == pytest.approx(kid_by_loops(x.double(), y.double()), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same, same_std = kid(x, y, num_subsets=20, subset_size=100)
    shifted, _ = kid(x, y + 0.5, num_subsets=20, subset_size=100)
    far, _ = kid(x, y + 1.0, num_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 0.01
    assert far > shifted > 10 * abs(same)


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="feature sets"):
        kid(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="subset size"):
        kid(torch.zeros(5, 3), torch.zeros(5, 3), subset_size=6)


def test_histogram_stats_of_uniform_and_of_one_class():
    uniform = histogram_stats(torch.arange(40) % 10, 10)
    assert uniform["histogram"] == [4] * 10
    assert uniform["tv_to_uniform"] == pytest.approx(0.0)
    assert uniform["normalised_entropy"] == pytest.approx(1.0)
    single = histogram_stats(torch.full((12,), 3), 10)
    assert single["tv_to_uniform"] == pytest.approx(0.9)
    assert single["normalised_entropy"] == pytest.approx(0.0)
    half = histogram_stats(torch.tensor([0, 1] * 5), 4)
    assert half["normalised_entropy"] == pytest.approx(math.log(2) / math.log(4))
    assert half["tv_to_uniform"] == pytest.approx(0.5)


def test_kid_matches_torchmetrics_on_the_same_features():
    """torchmetrics' KernelInceptionDistance with an identity feature extractor takes the
    features as given; with full-size subsets both estimators are permutation-free."""
    from torchmetrics.image.kid import KernelInceptionDistance

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 16, generator=gen, dtype=torch.float64)
    y = 0.8 * torch.randn(60, 16, generator=gen, dtype=torch.float64) + 0.3
    metric = KernelInceptionDistance(feature=nn.Identity(), subsets=2, subset_size=60)
    metric.update(x, real=True)
    metric.update(y, real=False)
    theirs, _ = metric.compute()
    ours, _ = kid(y, x, num_subsets=2)
    assert ours == pytest.approx(theirs.item(), abs=1e-6)
    assert ours > 0.01  # a real difference, not two zeros


def test_total_variation_known_values():
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(1.0)
    assert total_variation(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same length"):
        total_variation(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        total_variation(torch.tensor([1.0, -1.0]), torch.ones(2))
