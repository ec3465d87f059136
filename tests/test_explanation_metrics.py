"""Explanation metrics against hand-computed cases and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klsc_lib.analysis.explanation_metrics import (Concepts, PixelKNNReader, bootstrap_ci, concept_accuracy,
                                                   per_unit_metrics, unit_concepts)


def test_concept_is_the_chance_corrected_purest_factor_and_its_mode():
    # 6 images; "shape" (2 values) is raw-purer for unit 0 (5/6) than "digit" (10 values, 4/6), but
    # chance-corrected: shape (5/6 - 1/2) / (1/2) = 0.667, digit (4/6 - 1/10) / (9/10) = 0.630 -> shape.
    factors = {"shape": np.array([0, 0, 0, 0, 0, 1]), "digit": np.array([3, 3, 3, 3, 1, 2])}
    sizes = {"shape": 2, "digit": 10}
    c = unit_concepts(np.array([[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 5, 5]]), factors, sizes)
    assert c.factor_U == ("shape", "digit") and c.value_U.tolist() == [0, 3]
    np.testing.assert_allclose(c.purity_U, [(5 / 6 - 0.5) / 0.5, (4 / 6 - 0.1) / 0.9])  # unit 1: shape 0.33


def test_concept_accuracy_counts_matching_reads():
    images = torch.zeros(2, 3, 1, 2, 2)
    images[1] = 1.0
    read = lambda x: {"digit": torch.tensor([7, 7, 2, 5, 5, 5]), "colour": (x.flatten(1)[:, 0] > 0).long()}
    acc = concept_accuracy(read, images, Concepts(("digit", "colour"), np.array([7, 1]), np.ones(2), np.array([4, 4]), 4))
    np.testing.assert_allclose(acc, [2 / 3, 1.0])


def test_pixel_knn_reader_returns_the_factors_of_the_reference_images():
    torch.manual_seed(0)
    ref = torch.rand(30, 3, 4, 4)
    factors = {"a": np.arange(30) % 3, "b": np.arange(30) % 5}
    read = PixelKNNReader(ref, factors, k=1)(ref[[4, 17]] + 1e-4)
    assert read["a"].tolist() == [1, 2] and read["b"].tolist() == [4, 2]
    with pytest.raises(ValueError, match="at least k"):
        PixelKNNReader(ref[:2], factors, k=5)


def test_per_unit_metrics_psi_ratio_and_zero_diversity_of_identical_samples():
    x = torch.zeros(2, 3, 3, 8, 8)
    x[1] = torch.randn(3, 3, 8, 8)
    out = per_unit_metrics(x, torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]), torch.tensor([2.0, 8.0]))
    np.testing.assert_allclose(out["psi_over_t"], [1.0, 0.5])
    assert out["diversity"][0] == 0 and out["diversity"][1] > 0


def test_bootstrap_interval_matches_scipy_and_covers_the_mean():
    from scipy.stats import bootstrap

    v = np.random.default_rng(1).normal(2.0, 1.0, 60)
    mean, lo, hi = bootstrap_ci(v, seed=3)
    ref = bootstrap((v,), np.mean, n_resamples=2000, method="percentile", random_state=np.random.default_rng(3))
    assert mean == pytest.approx(v.mean()) and lo < mean < hi
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert bootstrap_ci(np.full(5, 0.3)) == (0.3, 0.3, 0.3)


def test_method_table_ranks_real_like_samples_closer_to_the_real_images_in_kid():
    from klsc_lib.analysis.explanation_metrics import method_table

    g = torch.Generator().manual_seed(0)
    real = torch.rand(200, 3, 4, 4, generator=g) * 0.5
    like = torch.rand(4, 10, 3, 4, 4, generator=g) * 0.5
    far = torch.rand(4, 10, 3, 4, 4, generator=g) * 0.5 + 0.5
    psi = torch.ones(4, 10)
    table = method_table({"like": (like, psi), "far": (far, 2 * psi)}, torch.full((4,), 2.0), None, None,
                         {"pixels": lambda x: x.flatten(1)}, real)
    assert table["like"]["KID pixels"][0] < table["far"]["KID pixels"][1]
    assert table["like"]["psi_over_t"] == (0.5, 0.5, 0.5) and table["far"]["psi_over_t"] == (1.0, 1.0, 1.0)
    assert set(table["far"]) == {"psi", "psi_over_t", "hf", "diversity", "KID pixels"}
