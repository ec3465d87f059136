"""Explanations measured against the exact reference q* (the KLSC tilt of the world's
own generator at the feature's level t, :mod:`klsc_lib.constraints.exact_reference`),
per feature, with paired bootstrap intervals over features (paper Sec 3.2, Table 3;
the paper's QualiCLIP / NRQM columns have no ground truth to compare with, these do).

- :func:`factor_histograms`, :func:`joint_values`: factor histograms of a sample set (read
  by a factor classifier) or of a weighted pool; a conjunction of factors as one factor.
- :func:`factor_tv`: TV between a method's factor histograms and q*'s weighted ones;
  :func:`tv_noise_floor`: the TV that n exact draws from q* would score.
- :func:`psi_w1`: Wasserstein-1 between a method's psi values and q*'s weighted psi law.
- :func:`reference_row`: TV per factor, psi-W1 and KID (:func:`~klsc_lib.analysis.image_metrics.kid`)
  against q* resamples for one feature.
- :func:`pool_concepts`, :func:`gated_concept_accuracy`: each feature's concept from a
  scored pool disjoint from its top-k images, and the chance-corrected share of a
  method's samples that show it, counting readings below a classifier confidence as misses.
- :func:`paired_difference_ci`, :func:`paired_table`: paired bootstrap over features
  (``scipy.stats.bootstrap(paired=True)``): every method is scored on the same features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from klsc_lib.analysis.explanation_metrics import Concepts, unit_concepts
from klsc_lib.analysis.image_metrics import kid, total_variation
from klsc_lib.constraints.exact_reference import weighted_histogram

Interval = tuple[float, float, float]  # (mean, low, high)


def factor_histograms(values: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                      w_N: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{factor: (K,) normalised histogram} of integer factor values, weighted by ``w_N``
    (e.g. q*'s weights over a pool) or uniform over the samples."""
    out = {}
    for name, v_N in values.items():
        v_N = torch.as_tensor(v_N)
        w = torch.ones(len(v_N), dtype=torch.float64) if w_N is None else w_N.to(torch.float64)
        if (w < 0).any():
            raise ValueError("weights must be non-negative")
        h = weighted_histogram(v_N, w, sizes[name])
        if not h.sum() > 0:
            raise ValueError(f"factor {name!r}: the histogram has no positive mass (no samples or zero weights)")
        out[name] = h / h.sum()
    return out


def joint_values(values: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                 names: tuple[str, ...]) -> tuple[torch.Tensor, int]:
    """(codes_N, size): the conjunction of factors ``names`` as one factor (mixed-radix
    code), e.g. ("digit", "position") for a concept like "digit 9, left"."""
    code_N = torch.zeros_like(torch.as_tensor(values[names[0]]).long())
    size = 1
    for name in names:
        code_N = code_N * sizes[name] + torch.as_tensor(values[name]).long()
        size *= sizes[name]
    return code_N, size


def factor_tv(method_hists: Mapping[str, torch.Tensor], reference_hists: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """{factor: TV(method, q*)} over the factors of ``reference_hists``, plus ``"mean"``."""
    missing = sorted(set(reference_hists) - set(method_hists))
    if missing:
        raise ValueError(f"the method has no histogram for factors {missing}")
    out = {name: total_variation(method_hists[name], h) for name, h in reference_hists.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def tv_noise_floor(hist_K: torch.Tensor, n: int, draws: int = 200, seed: int = 0) -> float:
    """E TV(empirical histogram of n exact draws from ``hist_K``, ``hist_K``) by Monte Carlo:
    what a perfect sampler of q* scores with n samples (TV of a few samples is biased up)."""
    if n < 1:
        raise ValueError(f"need n >= 1 draws, got {n}")
    p_K = hist_K.to(torch.float64) / hist_K.sum()
    gen = torch.Generator().manual_seed(seed)
    idx_DN = torch.multinomial(p_K.float().expand(draws, -1), n, replacement=True, generator=gen)
    counts_DK = torch.zeros(draws, len(p_K), dtype=torch.float64).scatter_add_(
        1, idx_DN, torch.ones(draws, n, dtype=torch.float64))
    return float(0.5 * (counts_DK / n - p_K).abs().sum(1).mean())


def psi_w1(psi_M: torch.Tensor, psi_N: torch.Tensor, w_N: torch.Tensor | None = None) -> float:
    """Wasserstein-1 between the method's psi values (uniform) and a weighted psi law
    (q*: the pool's psi with its weights), by ``scipy.stats.wasserstein_distance``."""
    from scipy.stats import wasserstein_distance

    a, b = torch.as_tensor(psi_M).double().cpu().numpy(), torch.as_tensor(psi_N).double().cpu().numpy()
    if a.ndim != 1 or b.ndim != 1 or not a.size or not b.size:
        raise ValueError("need two non-empty 1-D score sets")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("NaN or infinite psi values; drop them first")
    return float(wasserstein_distance(a, b, v_weights=None if w_N is None else w_N.double().cpu().numpy()))


def reference_row(psi_M: torch.Tensor, read_M: Mapping[str, torch.Tensor], psi_N: torch.Tensor, w_N: torch.Tensor,
                  pool_factors: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                  feats_MD: torch.Tensor | None = None, ref_feats_RD: torch.Tensor | None = None,
                  seed: int = 0) -> dict[str, float]:
    """One feature's distances to q*: ``tv_<factor>`` and ``tv_mean`` between the factors read
    from the method's M samples and q*'s weighted pool factors, ``psi_w1``, and with
    feature-space embeddings of the samples and of R q* resamples, ``kid`` (its mean over
    subsets of min(M, R) rows)."""
    names = [n for n in sizes if n in read_M]
    ref = factor_histograms({n: pool_factors[n] for n in names}, sizes, w_N)
    tv = factor_tv(factor_histograms({n: read_M[n] for n in names}, sizes), ref)
    row = {f"tv_{k}": v for k, v in tv.items()}
    row["psi_w1"] = psi_w1(psi_M, psi_N, w_N)
    if feats_MD is not None and ref_feats_RD is not None:
        row["kid"] = kid(feats_MD, ref_feats_RD, seed=seed)[0]
    return row


def pool_concepts(psi_NU: torch.Tensor, factors: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                  top_n: int = 50, exclude_N: torch.Tensor | None = None) -> Concepts:
    """Each unit's concept (the factor value its top-``top_n`` pool images share, by
    chance-corrected purity, :func:`~klsc_lib.analysis.explanation_metrics.unit_concepts`)
    on a scored pool, leaving out the points flagged in ``exclude_N`` (e.g. the top-k
    images shown as the dataset-search explanation, so the concept is not read off them)."""
    psi_NU = torch.as_tensor(psi_NU).float().cpu()
    keep_N = torch.ones(len(psi_NU), dtype=torch.bool) if exclude_N is None else ~exclude_N.bool().cpu()
    if int(keep_N.sum()) < top_n:
        raise ValueError(f"only {int(keep_N.sum())} pool points are left, fewer than top_n={top_n}")
    kept_ids_K = keep_N.nonzero().flatten()
    top_UT = kept_ids_K[psi_NU[kept_ids_K].topk(top_n, dim=0).indices.T]
    return unit_concepts(top_UT.numpy(), {n: np.asarray(torch.as_tensor(v)) for n, v in factors.items()},
                         dict(sizes))


@dataclass(frozen=True)
class ConceptAccuracy:
    """Per unit: raw accuracy, chance-corrected accuracy and the share of confident readings."""

    accuracy_U: np.ndarray  # share of samples read, confidently, as the concept value
    chance_corrected_U: np.ndarray  # (accuracy - base) / (1 - base): 0 = chance, 1 = every sample
    coverage_U: np.ndarray  # share of samples whose reading passes the confidence gate


def gated_concept_accuracy(probs_UMK: Mapping[str, torch.Tensor], concepts: Concepts, min_confidence: float = 0.9,
                           base_rate_U: np.ndarray | None = None) -> ConceptAccuracy:
    """Concept accuracy of M samples per unit from a factor classifier's probabilities
    ``probs_UMK[factor]`` (U, M, K). A sample counts when its most probable value of the
    unit's concept factor is the concept value AND that probability is at least
    ``min_confidence``: an image the classifier cannot read (off the data manifold) is a
    miss, not a guess. Chance correction against ``base_rate_U`` (default 1 / K, the
    value's frequency under the mini-world's uniform factors)."""
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    u = len(concepts.factor_U)
    acc_U, cov_U, base_U = np.empty(u), np.empty(u), np.empty(u)
    for i, (f, v) in enumerate(zip(concepts.factor_U, concepts.value_U)):
        p_MK = probs_UMK[f][i].double()
        if p_MK.ndim != 2:
            raise ValueError(f"probabilities of factor {f!r} must be (U, M, K), got {tuple(probs_UMK[f].shape)}")
        conf_M, read_M = p_MK.max(dim=1)
        confident_M = conf_M >= min_confidence
        acc_U[i] = float((confident_M & (read_M == int(v))).double().mean())
        cov_U[i] = float(confident_M.double().mean())
        base_U[i] = 1 / p_MK.shape[1]
    if base_rate_U is not None:
        base_U = np.asarray(base_rate_U, dtype=float)
    return ConceptAccuracy(acc_U, (acc_U - base_U) / (1 - base_U), cov_U)


def paired_difference_ci(a_U: np.ndarray, b_U: np.ndarray, confidence: float = 0.95, n_resamples: int = 4000,
                         seed: int = 0) -> Interval:
    """(mean, low, high) of mean(a - b) over features, resampling features jointly for both
    methods (``scipy.stats.bootstrap(paired=True)``, percentile). Features where either
    value is NaN (e.g. a method that did not reach t) are dropped."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a_U, dtype=float), np.asarray(b_U, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need one value per feature for both methods, got shapes {a.shape}, {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2:
        raise ValueError(f"need at least 2 features with finite values for both methods, got {len(a)}")
    mean = float((a - b).mean())
    if np.ptp(a - b) == 0:
        return mean, mean, mean
    res = bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                    confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_table(values: Mapping[str, np.ndarray], baseline: str, confidence: float = 0.95,
                 n_resamples: int = 4000, seed: int = 0) -> dict[str, Interval]:
    """{method: paired CI of (method - baseline)} for one metric, one value per feature
    per method (the same features, in the same order, for every method)."""
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among the methods {sorted(values)}")
    return {m: paired_difference_ci(v, values[baseline], confidence, n_resamples, seed)
            for m, v in values.items() if m != baseline}
