"""Study statistics: weighted variance against hand computations, agreement and tests
against known cases, and recovery of planted means and orderings from simulated raters."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from klsc_lib.analysis.raters import (Rating, SimulatedRater, best_method_per_rater, description_variance,
                                      expected_score, krippendorff_alpha, mean_scores, paired_wilcoxon,
                                      simulate_ratings, success_rate, text_encoder, weighted_variance)
from klsc_lib.analysis.raters.simulate import (concept_fraction, describe_from_factors, planted_sample_sets,
                                               planted_study)


@pytest.fixture(scope="session")
def encoder():
    return text_encoder("minilm")[1]


def test_weighted_variance_hand_computation():
    e = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # normalised: (1,0), (0,1), (0.6,0.8)
    w = np.array([1.0, 2.0, 3.0])
    mean = (1 * np.array([1, 0]) + 2 * np.array([0, 1]) + 3 * np.array([0.6, 0.8])) / 6  # (0.4666.., 0.7333..)
    d2 = [(1 - mean[0]) ** 2 + mean[1] ** 2, mean[0] ** 2 + (1 - mean[1]) ** 2, (0.6 - mean[0]) ** 2 + (0.8 - mean[1]) ** 2]
    assert weighted_variance(e, w) == pytest.approx((1 * d2[0] + 2 * d2[1] + 3 * d2[2]) / 6, rel=1e-12)
    # for unit vectors the formula equals 1 - ||e_w||^2
    assert weighted_variance(e, w) == pytest.approx(1 - mean @ mean, rel=1e-12)
    assert weighted_variance(np.tile([[0.3, -0.2, 0.9]], (4, 1)), np.array([1, 2, 3, 4.0])) == pytest.approx(0, abs=1e-15)
    with pytest.raises(ValueError):
        weighted_variance(e, np.zeros(3))


def test_description_variance_zero_for_identical_texts(encoder):
    same = [Rating("f1", "MACO", f"R{i}", "human", s, "a red digit") for i, s in enumerate((1, 3, 4))]
    mixed = [Rating("f1", "TopK", f"R{i}", "human", 4, c)
             for i, c in enumerate(("a red digit", "brick wall texture", "green grass"))]
    out = description_variance(same + mixed, encoder)
    assert out["MACO"].mean == pytest.approx(0, abs=1e-6)
    assert out["TopK"].mean > 0.3
    texts = ["a red digit", "brick wall texture", "green grass"]
    assert out["TopK"].mean == pytest.approx(weighted_variance(encoder(texts), np.ones(3)), rel=1e-5)


def test_clip_without_files_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        text_encoder("clip", str(tmp_path))
    assert text_encoder("auto", str(tmp_path))[0] == "minilm"


def test_krippendorff_alpha_known_cases():
    perfect = [Rating(f"f{i}", "MACO", r, "human", i % 4 + 1, "") for i in range(12) for r in ("A", "B", "C")]
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    random_ = [Rating(f"f{i}", "MACO", r, "human", int(rng.integers(1, 5)), "") for i in range(400) for r in "AB"]
    assert abs(krippendorff_alpha(random_)) < 0.1


def test_paired_wilcoxon_matches_scipy_and_effect_size():
    rng = np.random.default_rng(1)
    rows = []
    for f in range(30):
        a, b = int(rng.integers(2, 5)), int(rng.integers(1, 4))
        rows += [Rating(str(f), "EnergyDPS", "A", "ai", a, ""), Rating(str(f), "MACO", "A", "ai", b, "")]
    res = paired_wilcoxon(rows, "EnergyDPS", "MACO")
    d = np.array([r1.score - r2.score for r1, r2 in zip(rows[::2], rows[1::2])], float)
    assert res.pvalue == pytest.approx(stats.wilcoxon(d[d != 0]).pvalue)
    assert res.mean_diff == pytest.approx(d.mean())
    # rank-biserial = (n_pos - n_neg) / n when all |d| tie: here the identity holds only in sign
    assert np.sign(res.rank_biserial) == np.sign(d.sum())
    swapped = paired_wilcoxon(rows, "MACO", "EnergyDPS")
    assert swapped.rank_biserial == pytest.approx(-res.rank_biserial)


def test_expected_score_matches_monte_carlo():
    rng = np.random.default_rng(2)
    for truth, bias, noise in [(0.2, 0.0, 0.5), (0.7, -0.3, 0.8), (1.0, 0.4, 0.3)]:
        z = rng.standard_normal(200_000)
        mc = np.clip(np.round(1 + 3 * truth + bias + noise * z), 1, 4).mean()
        assert expected_score(truth, bias, noise) == pytest.approx(mc, abs=0.01)


def test_analysis_recovers_planted_means_and_ordering():
    truth = {"MACO": 0.3, "DiffExplainer": 0.35, "EnergyDPS": 0.65}
    raters = [SimulatedRater("S1", 0.0, 0.6), SimulatedRater("S2", -0.4, 0.6), SimulatedRater("S3", 0.3, 0.9)]
    items = [(f"f{i}", m, "Feature") for i in range(150) for m in truth]
    ratings = simulate_ratings(items, lambda it: truth[it[1]], raters, lambda it, t, rng: "x", seed=0)
    table = mean_scores(ratings, by="rater")
    for m, t in truth.items():
        for r in raters:
            est = table[m][r.name]
            assert est.low <= expected_score(t, r.bias, r.noise) <= est.high, (m, r)
    kinds = mean_scores(ratings, by="rater_kind")
    order = sorted(truth, key=lambda m: kinds[m]["simulated"].mean)
    assert order[-1] == "EnergyDPS"
    test = paired_wilcoxon(ratings, "EnergyDPS", "MACO")
    assert test.pvalue < 1e-6 and test.rank_biserial > 0.8
    planted = np.mean([expected_score(0.65, r.bias, r.noise) - expected_score(0.3, r.bias, r.noise) for r in raters])
    assert test.mean_diff == pytest.approx(planted, abs=0.15)
    alpha = krippendorff_alpha(ratings)
    assert 0.2 < alpha < 0.9


def test_best_method_per_rater_on_hand_scores_keeps_ties():
    scores = {("A", "MACO"): [4, 2], ("A", "EnergyDPS"): [3, 4], ("B", "MACO"): [3, 3], ("B", "EnergyDPS"): [2, 4],
              ("C", "MACO"): [1, 1], ("C", "EnergyDPS"): [1, 2]}
    rows = [Rating(f"f{i}", m, r, "human", v, "") for (r, m), vs in scores.items() for i, v in enumerate(vs)]
    per_rater = mean_scores(rows, by="rater", n_resamples=50, seed=0)
    # A: MACO 3.0 < EnergyDPS 3.5; B: 3.0 = 3.0 (a tie); C: 1.0 < 1.5; TopK is not asked about
    assert best_method_per_rater(per_rater, ["MACO", "EnergyDPS", "TopK"]) == {
        "A": ["EnergyDPS"], "B": ["MACO", "EnergyDPS"], "C": ["EnergyDPS"]}


def test_success_rate_against_planted_fraction():
    truths = {f"n{i}": (0.9 if i < 30 else 0.1) for i in range(100)}
    ratings = simulate_ratings([(u, "EnergyDPS", "Neuron") for u in truths], lambda it: truths[it[0]],
                               [SimulatedRater("G", 0.0, 0.2)], lambda it, t, rng: "", seed=1)
    est = success_rate(ratings, "EnergyDPS", "Neuron")
    assert est.mean == pytest.approx(0.30) and est.low < 0.30 < est.high


def test_planted_sample_sets_have_the_drawn_purity():
    import torch

    gen = random.Random(0)
    data = [(torch.full((3, 2, 2), float(i % 3) / 3), {"colour": i % 3, "size": gen.randrange(2)}) for i in range(60)]
    concepts = {"u0": ("colour", 1), "u1": ("size", 0)}
    sets, factors = planted_sample_sets(data, concepts, {"MACO": 0.0, "EnergyDPS": 1.0}, seed=0)
    assert len(sets) == 4
    for s in sets:
        t = concept_fraction(concepts[s.unit], factors[(s.unit, s.method, "Feature")])
        assert t == (1.0 if s.method == "EnergyDPS" else 0.0)
        if s.unit == "u0":  # images are the dataset's: colour 1 <=> pixel value 1/3
            assert torch.all((s.images_BCHW[:, 0, 0, 0] == 1 / 3) == (s.method == "EnergyDPS"))
    describe = describe_from_factors(concepts, factors, {"colour": ["r", "g", "b"], "size": ["small", "large"]})
    assert describe(("u0", "EnergyDPS", "Feature"), 1.0, random.Random(0)) == "colour: g"


def test_planted_study_means_follow_purity_and_are_recovered_by_the_ratings():
    """Purity 1 plants truth 1 exactly (every image shows the concept), so its planted
    mean is the raters' expected score at truth 1; the simulated ratings' mean of every
    method lands near its planted mean (Monte Carlo, 40 units x 2 raters)."""
    import torch

    gen = random.Random(1)
    data = [(torch.zeros(3, 2, 2), {"colour": gen.randrange(3), "size": gen.randrange(2)}) for _ in range(300)]
    raters = [SimulatedRater("A", 0.0, 0.3), SimulatedRater("B", -0.3, 0.5)]
    run = planted_study(data, {"colour": 3, "size": 2}, 40, {"MACO": 0.25, "EnergyDPS": 1.0}, raters,
                        {"colour": ["r", "g", "b"], "size": ["s", "l"]}, seed=0)
    assert run.planted_mean["EnergyDPS"] == pytest.approx(np.mean([expected_score(1.0, r.bias, r.noise)
                                                                   for r in raters]))
    assert run.planted_mean["MACO"] < run.planted_mean["EnergyDPS"]
    assert len(run.ratings) == 40 * 2 * len(raters)
    for m, planted in run.planted_mean.items():
        scores = [r.score for r in run.ratings if r.method == m]
        assert np.mean(scores) == pytest.approx(planted, abs=4 * np.std(scores) / len(scores) ** 0.5 + 0.02)
