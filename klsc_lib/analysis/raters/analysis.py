"""Statistics of a rater study (paper Sec 3.3 Tables 4 and 6, App L.1 Table 7).

All inputs are lists of :class:`~.ratings.Rating`. Confidence intervals resample
*features* (``scipy.stats.bootstrap``), the unit the paper samples (100 random
features); method comparisons pair the same features (Wilcoxon signed-rank);
agreement is Krippendorff's ordinal alpha over raters; the spread of the concept
descriptions is their score-weighted variance in a text-embedding space (App K).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import krippendorff
import numpy as np
from scipy import stats

from klsc_lib.analysis.raters.ratings import SCORES, Rating
from klsc_lib.paper_values import TABLE7_SUCCESS_THRESHOLD


@dataclass(frozen=True)
class Estimate:
    """A mean over features with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank of ``a`` vs ``b`` over features rated under both."""

    a: str
    b: str
    n: int
    mean_diff: float  # mean over features of (score a - score b)
    statistic: float
    pvalue: float
    rank_biserial: float  # matched-pairs effect size in [-1, 1]; > 0 when a scores higher


def _select(ratings: Sequence[Rating], **where) -> list[Rating]:
    return [r for r in ratings if all(getattr(r, k) == v for k, v in where.items() if v is not None)]


def feature_means(ratings: Sequence[Rating], method: str, raters: Sequence[str] | None = None,
                  rater_kind: str | None = None, unit_kind: str = "Feature") -> dict[str, float]:
    """feature -> mean score over the chosen raters (all by default) for one method."""
    by_feature: dict[str, list[int]] = defaultdict(list)
    for r in _select(ratings, method=method, rater_kind=rater_kind, unit_kind=unit_kind):
        if raters is None or r.rater in raters:
            by_feature[r.feature].append(r.score)
    return {f: float(np.mean(s)) for f, s in by_feature.items()}


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                   seed: int = 0) -> Estimate:
    """Mean of ``values`` (one per feature) with a BCa bootstrap interval over features."""
    x = np.asarray(values, float)
    if x.size == 0:
        raise ValueError("no values to average")
    if x.size < 3 or np.ptp(x) == 0:
        return Estimate(float(x.mean()), float(x.mean()), float(x.mean()), int(x.size))
    ci = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                         rng=np.random.default_rng(seed)).confidence_interval
    return Estimate(float(x.mean()), float(ci.low), float(ci.high), int(x.size))


def mean_scores(ratings: Sequence[Rating], by: str = "rater", unit_kind: str = "Feature",
                **bootstrap_kw) -> dict[str, dict[str, Estimate]]:
    """method -> group -> mean score (Table 6 with ``by="rater"``, Table 4 with ``by="rater_kind"``).

    A kind's score for a feature is the mean over that kind's raters, then averaged over features.
    """
    if by not in ("rater", "rater_kind"):
        raise ValueError(f"by must be 'rater' or 'rater_kind', got {by!r}")
    out: dict[str, dict[str, Estimate]] = {}
    for method in sorted({r.method for r in ratings if r.unit_kind == unit_kind}):
        groups = sorted({getattr(r, by) for r in _select(ratings, method=method, unit_kind=unit_kind)})
        out[method] = {}
        for g in groups:
            kw = {"raters": [g]} if by == "rater" else {"rater_kind": g}
            out[method][g] = bootstrap_mean(list(feature_means(ratings, method, unit_kind=unit_kind, **kw).values()),
                                            **bootstrap_kw)
    return out


def best_method_per_rater(per_rater: dict[str, dict[str, Estimate]], methods: Sequence[str]) -> dict[str, list[str]]:
    """rater -> the methods among ``methods`` with that rater's highest mean score in
    ``per_rater`` (``mean_scores(..., by="rater")``); ties keep every tied method, so
    "EnergyDPS is best for every rater" (Sec 3.3, Table 4) needs it alone at the top."""
    raters = sorted({r for m in methods for r in per_rater.get(m, {})})
    best = {}
    for r in raters:
        scores = {m: per_rater[m][r].mean for m in methods if r in per_rater.get(m, {})}
        top = max(scores.values())
        best[r] = [m for m in methods if m in scores and math.isclose(scores[m], top, rel_tol=0, abs_tol=1e-12)]
    return best


def success_rate(ratings: Sequence[Rating], method: str, unit_kind: str,
                 threshold: float = TABLE7_SUCCESS_THRESHOLD, **bootstrap_kw) -> Estimate:
    """Fraction of units whose mean score exceeds ``threshold`` (App L.1, Table 7: > 2.5)."""
    means = feature_means(ratings, method, unit_kind=unit_kind)
    return bootstrap_mean([float(m > threshold) for m in means.values()], **bootstrap_kw)


def paired_wilcoxon(ratings: Sequence[Rating], a: str, b: str, rater_kind: str | None = None,
                    unit_kind: str = "Feature") -> PairedTest:
    """Method ``a`` vs ``b`` over the features both were rated on (mean over raters per feature)."""
    ma = feature_means(ratings, a, rater_kind=rater_kind, unit_kind=unit_kind)
    mb = feature_means(ratings, b, rater_kind=rater_kind, unit_kind=unit_kind)
    common = sorted(set(ma) & set(mb))
    if len(common) < 2:
        raise ValueError(f"{a} and {b} share {len(common)} rated features; a paired test needs at least 2")
    d = np.array([ma[f] - mb[f] for f in common])
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return PairedTest(a, b, len(common), 0.0, 0.0, 1.0, 0.0)
    res = stats.wilcoxon(nonzero)
    ranks = stats.rankdata(np.abs(nonzero))
    w_plus, w_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return PairedTest(a, b, len(common), float(d.mean()), float(res.statistic), float(res.pvalue),
                      float((w_plus - w_minus) / (w_plus + w_minus)))


def krippendorff_alpha(ratings: Sequence[Rating], method: str | None = None, rater_kind: str | None = None,
                       unit_kind: str = "Feature") -> float:
    """Ordinal Krippendorff's alpha of the scores; units are (feature, method) grids."""
    rows = _select(ratings, method=method, rater_kind=rater_kind, unit_kind=unit_kind)
    raters = sorted({r.rater for r in rows})
    units = sorted({(r.feature, r.method) for r in rows})
    if len(raters) < 2:
        raise ValueError(f"agreement needs at least 2 raters, got {raters}")
    col = {u: j for j, u in enumerate(units)}
    data_RU = np.full((len(raters), len(units)), np.nan)
    for r in rows:
        data_RU[raters.index(r.rater), col[(r.feature, r.method)]] = r.score
    return float(krippendorff.alpha(reliability_data=data_RU, level_of_measurement="ordinal",
                                    value_domain=list(SCORES)))


def weighted_variance(emb_ND: np.ndarray, w_N: np.ndarray) -> float:
    """sum_i w_i ||e_i - e_w||^2 / sum_i w_i on L2-normalised embeddings, e_w the weighted mean (App K)."""
    e = np.asarray(emb_ND, float)
    w = np.asarray(w_N, float)
    if e.ndim != 2 or w.shape != (e.shape[0],):
        raise ValueError(f"need (N, D) embeddings and N weights, got {e.shape} and {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    e_w = (w[:, None] * e).sum(0) / w.sum()
    return float((w * ((e - e_w) ** 2).sum(1)).sum() / w.sum())


def description_variance(ratings: Sequence[Rating], encode: Callable[[list[str]], np.ndarray],
                         unit_kind: str = "Feature", **bootstrap_kw) -> dict[str, Estimate]:
    """method -> mean over features of the score-weighted variance of the raters' concepts.

    Features with fewer than two non-empty descriptions are left out of the mean (their
    variance is undefined); the estimate's ``n`` says how many features remain.
    """
    rows = [r for r in ratings if r.unit_kind == unit_kind and r.concept]
    texts = sorted({r.concept for r in rows})
    if not texts:
        raise ValueError("no concept descriptions to embed")
    emb = dict(zip(texts, np.asarray(encode(texts), float)))
    groups: dict[tuple[str, str], list[Rating]] = defaultdict(list)
    for r in rows:
        groups[(r.method, r.feature)].append(r)
    per_method: dict[str, list[float]] = defaultdict(list)
    for (method, _), g in sorted(groups.items()):
        if len(g) >= 2:
            per_method[method].append(weighted_variance(np.stack([emb[r.concept] for r in g]),
                                                        np.array([r.score for r in g])))
    return {m: bootstrap_mean(v, **bootstrap_kw) for m, v in sorted(per_method.items())}
