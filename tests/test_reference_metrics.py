"""Metrics against the exact reference (klsc_lib.analysis.reference_metrics) on known
answers: TV 0 and 1, W1 of a shift, the TV of a single draw, a planted concept, a
hand-counted gated accuracy, and paired intervals that cover the true difference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from klsc_lib.analysis.explanation_metrics import Concepts
from klsc_lib.analysis.reference_metrics import (factor_histograms, factor_tv, gated_concept_accuracy,
                                                 joint_values, paired_difference_ci, paired_table, pool_concepts,
                                                 psi_w1, reference_row, tv_noise_floor)
from klsc_lib.constraints.exact_reference import solve_tilt

SIZES = {"digit": 10, "colour": 4}


def test_tv_is_zero_for_identical_and_one_for_disjoint_histograms():
    a = factor_histograms({"colour": torch.tensor([0, 1, 1, 3])}, SIZES)
    b = factor_histograms({"colour": torch.tensor([2, 2])}, SIZES)
    assert factor_tv(a, a) == {"colour": 0.0, "mean": 0.0}
    assert factor_tv(a, b)["colour"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no histogram for factors"):
        factor_tv(a, {"digit": torch.ones(10)})


def test_weighted_histograms_and_joint_codes():
    w = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    h = factor_histograms({"colour": torch.tensor([3, 0, 3, 1])}, SIZES, w)["colour"]
    assert torch.allclose(h, torch.tensor([0.25, 0.0, 0.0, 0.75], dtype=torch.float64))
    digit, colour = torch.tensor([9, 0, 4]), torch.tensor([1, 3, 0])
    code, size = joint_values({"digit": digit, "colour": colour}, SIZES, ("digit", "colour"))
    assert size == 40
    assert code.tolist() == np.ravel_multi_index((digit.numpy(), colour.numpy()), (10, 4)).tolist()
    with pytest.raises(ValueError, match=r"ids in \[0, 4\)"):
        factor_histograms({"colour": torch.tensor([4])}, SIZES)


def test_tv_noise_floor_of_exact_draws():
    # one draw from a fair coin is always at TV 1/2 from it
    assert tv_noise_floor(torch.tensor([1.0, 1.0]), n=1) == pytest.approx(0.5)
    # a point mass is always matched
    assert tv_noise_floor(torch.tensor([0.0, 1.0, 0.0]), n=5) == 0.0
    # n fair-coin draws: E|k/n - 1/2| from the binomial law, exactly
    n = 16
    k = np.arange(n + 1)
    exact = float((stats.binom.pmf(k, n, 0.5) * np.abs(k / n - 0.5)).sum())
    assert tv_noise_floor(torch.tensor([1.0, 1.0]), n=n, draws=20_000) == pytest.approx(exact, abs=0.005)


def test_w1_of_a_shift_is_the_shift_and_weights_count():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert psi_w1(x + 0.7, x) == pytest.approx(0.7)
    # weights that zero the outlier leave the two sets equal
    assert psi_w1(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0, 50.0]), torch.tensor([0.5, 0.5, 0.0])) == 0.0
    # a weighted law of Dirac masses: W1 between delta_0 and 0.25 delta_0 + 0.75 delta_2 is 1.5
    assert psi_w1(torch.tensor([0.0]), torch.tensor([0.0, 2.0]), torch.tensor([0.25, 0.75])) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="NaN"):
        psi_w1(torch.tensor([float("nan")]), x)


def toy_pool(n: int = 20_000, seed: int = 0):
    """A pool where psi is high for colour 2 and rises with the digit."""
    g = torch.Generator().manual_seed(seed)
    factors = {"digit": torch.randint(10, (n,), generator=g), "colour": torch.randint(4, (n,), generator=g)}
    psi = 2.0 * (factors["colour"] == 2) + 0.1 * factors["digit"] + 0.5 * torch.randn(n, generator=g)
    return psi.double(), factors


def test_reference_row_scores_exact_draws_near_the_floor_and_a_collapsed_set_far():
    psi, factors = toy_pool()
    q = solve_tilt(psi, 2.0)
    idx = q.resample_indices(400, torch.Generator().manual_seed(1))
    exact = reference_row(psi[idx], {k: v[idx] for k, v in factors.items()}, psi, q.w_N, factors, SIZES)
    ref_colour = factor_histograms({"colour": factors["colour"]}, SIZES, q.w_N)["colour"]
    assert exact["tv_colour"] < 3 * tv_noise_floor(ref_colour, 400)
    assert exact["psi_w1"] < 0.15
    collapsed = torch.full((400,), 3)
    far = reference_row(psi[idx] + 1.0, {"digit": factors["digit"][idx], "colour": collapsed}, psi, q.w_N,
                        factors, SIZES)
    assert far["tv_colour"] == pytest.approx(1 - float(ref_colour[3]))
    assert far["psi_w1"] == pytest.approx(exact["psi_w1"] + 1.0, abs=0.2)
    assert far["tv_mean"] == pytest.approx((far["tv_colour"] + far["tv_digit"]) / 2)
    feats = torch.randn(800, 8, generator=torch.Generator().manual_seed(2))
    row = reference_row(psi[idx], {k: v[idx] for k, v in factors.items()}, psi, q.w_N, factors, SIZES,
                        feats_MD=feats[:400], ref_feats_RD=feats[400:])
    assert abs(row["kid"]) < 0.05  # two draws of one law


def test_pool_concepts_find_the_planted_factor_and_skip_excluded_images():
    psi, factors = toy_pool()
    concepts = pool_concepts(psi[:, None], factors, SIZES, top_n=50)
    assert concepts.factor_U == ("colour",) and concepts.value_U.tolist() == [2]
    # plant 60 blue (colour 3) images at the very top, then exclude them: the concept is still colour 2
    planted = torch.arange(60)
    psi2, factors2 = psi.clone(), {k: v.clone() for k, v in factors.items()}
    psi2[planted], factors2["colour"][planted] = 100.0, 3
    assert pool_concepts(psi2[:, None], factors2, SIZES, top_n=50).value_U.tolist() == [3]
    exclude = torch.zeros(len(psi), dtype=torch.bool)
    exclude[planted] = True
    assert pool_concepts(psi2[:, None], factors2, SIZES, top_n=50, exclude_N=exclude).value_U.tolist() == [2]
    with pytest.raises(ValueError, match="fewer than top_n"):
        pool_concepts(psi[:10, None], {k: v[:10] for k, v in factors.items()}, SIZES, top_n=50)


def test_gated_concept_accuracy_counts_unreadable_samples_as_misses():
    concepts = Concepts(("colour",), np.array([1]), np.array([1.0]), np.array([4]), 4)
    probs = torch.tensor([[[0.02, 0.95, 0.02, 0.01],  # confident, right
                           [0.95, 0.02, 0.02, 0.01],  # confident, wrong
                           [0.30, 0.40, 0.20, 0.10],  # right but unsure: a miss
                           [0.01, 0.97, 0.01, 0.01]]])  # confident, right
    acc = gated_concept_accuracy({"colour": probs}, concepts, min_confidence=0.9)
    assert acc.accuracy_U.tolist() == [0.5] and acc.coverage_U.tolist() == [0.75]
    assert acc.chance_corrected_U[0] == pytest.approx((0.5 - 0.25) / 0.75)
    ungated = gated_concept_accuracy({"colour": probs}, concepts, min_confidence=0.0)
    assert ungated.accuracy_U.tolist() == [0.75] and ungated.coverage_U.tolist() == [1.0]
    based = gated_concept_accuracy({"colour": probs}, concepts, 0.9, base_rate_U=np.array([0.5]))
    assert based.chance_corrected_U.tolist() == [0.0]


def simulated_methods(rng, n_features: int = 40, delta: float = 0.05):
    """Per-feature scores of two methods sharing a large per-feature difficulty (sd 0.3)
    and differing by ``delta`` plus small noise (sd 0.05)."""
    difficulty = rng.normal(0.5, 0.3, n_features)
    a = difficulty + delta + rng.normal(0, 0.05, n_features)
    return a, difficulty + rng.normal(0, 0.05, n_features)


def test_paired_interval_covers_the_true_difference_at_its_level():
    rng = np.random.default_rng(0)
    hits = [lo <= 0.05 <= hi for lo, hi in
            (paired_difference_ci(*simulated_methods(rng), n_resamples=1000, seed=s)[1:] for s in range(200))]
    assert 0.88 <= np.mean(hits) <= 0.99  # nominal 0.95; percentile intervals run a little narrow at 40 features


def test_pairing_resolves_a_difference_the_unpaired_intervals_cannot():
    a, b = simulated_methods(np.random.default_rng(1))
    mean, lo, hi = paired_difference_ci(a, b)
    assert mean == pytest.approx(float((a - b).mean())) and 0 < lo < hi
    unpaired = stats.bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), method="percentile",
                               random_state=np.random.default_rng(0)).confidence_interval
    assert unpaired.low < 0 < unpaired.high  # independent resampling drowns the difference


def test_paired_intervals_drop_unreached_features_and_check_inputs():
    a, b = np.array([0.3, np.nan, 0.5, 0.4]), np.array([0.1, 0.2, np.nan, 0.3])
    assert paired_difference_ci(a, b) == pytest.approx((0.15, 0.1, 0.2))
    assert paired_difference_ci(np.ones(5), np.zeros(5)) == (1.0, 1.0, 1.0)
    table = paired_table({"ours": np.array([0.2, 0.3, 0.1]), "maco": np.array([0.4, 0.5, 0.2]),
                          "q*": np.zeros(3)}, baseline="q*")
    assert set(table) == {"ours", "maco"} and table["maco"][0] == pytest.approx(float(np.mean([0.4, 0.5, 0.2])))
    with pytest.raises(ValueError, match="baseline"):
        paired_table({"ours": a}, baseline="q*")
    with pytest.raises(ValueError, match="one value per feature"):
        paired_difference_ci(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2 features"):
        paired_difference_ci(np.array([1.0, np.nan]), np.array([np.nan, 1.0]))
