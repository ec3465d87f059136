"""Notebook 04's Table 3 analogue measured against the exact answer (paper Sec 3.2, Table 3;
the exact laws of :mod:`klsc_lib.studies.feature_reference`): every method's samples of
every feature are compared with the KLSC tilt q* of the world's own generator at the
feature's level t, feature by feature, so methods can be compared pairwise on the same
features (paired bootstrap).

Columns (per feature, then mean and interval over features):

- ``psi_over_t``: mean psi / t (q* has 1 by construction);
- ``tv_mean``: TV between the factor histograms of the samples (read by the world's factor
  classifier) and q*'s weighted pool histograms, averaged over factors; ``tv_concept``: the
  same on the feature's concept factor alone; both are biased up by the sample count, the
  ``q*`` row (as many exact draws) shows that floor;
- ``psi_w1``: Wasserstein-1 between the samples' psi and q*'s psi law;
- ``concept_acc``: chance-corrected share of samples the classifier reads, with confidence
  >= ``min_confidence``, as the feature's concept, the concept taken from the feature's
  top pool images (fresh generator draws, disjoint from the real top-k images);
- ``off_palette``: share of pixels no world image has (colour noise), 0 on real images;
- ``diversity``: mean pairwise distance in the factor classifier's features;
- ``KID to q*`` (pooled over features, mean +- SD over subsets): in the classifier's features,
  against a second, independent set of q* draws.

Rows ``q*`` and ``truncation`` are resamples of the exact laws themselves; the row of
:func:`prior_reweighted` resamples the learned prior's own draws at t, the best any sampler of
that prior's tilt can do (its distance to q* is the prior's error, not a sampler's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from klsc_lib.analysis.explanation_metrics import Concepts, bootstrap_ci
from klsc_lib.analysis.image_metrics import kid
from klsc_lib.analysis.reference_metrics import (Interval, gated_concept_accuracy, paired_difference_ci,
                                                 pool_concepts, reference_row)
from klsc_lib.analysis.sample_metrics import diversity
from klsc_lib.constraints.exact_reference import UnreachableTarget, prior_sample_tilts, tilt_at
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds
from klsc_lib.diffusion.samplers import initial_noise, resolve_generators, reverse_process
from klsc_lib.interfaces import Prior
from klsc_lib.studies.feature_reference import FeatureReferences, Kind
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES
from klsc_lib.worlds.miniworld.quality import off_palette_fraction

Samples = tuple[torch.Tensor, torch.Tensor]  # (images_UNCHW, psi_UN)
ProbsOf = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]  # images_BCHW -> {factor: (B, K) probabilities}
METRICS = ("psi_over_t", "tv_mean", "tv_concept", "psi_w1", "concept_acc", "off_palette", "diversity")


def exact_samples(refs: FeatureReferences, n: int, kind: Kind = "tilt", seed: int = 0) -> Samples:
    """n draws per feature from q* (``"tilt"``) or the truncation, resampled from the pool,
    with their pool psi: the rows a perfect sampler of either law would give."""
    gen = torch.Generator().manual_seed(seed)
    xs, psis = [], []
    for j in range(len(refs.units_U)):
        idx_M, x = refs.resampled_images(j, n, kind, gen)
        xs.append(x)
        psis.append(refs.pool.psi_NU[idx_M, j])
    return torch.stack(xs), torch.stack(psis)


@dataclass(frozen=True)
class PriorReweighted:
    """n resampled prior draws per feature and how they were weighted."""

    samples: Samples
    ess_U: torch.Tensor  # effective sample size of each feature's weights on the prior draws
    at_lambda_U: torch.Tensor  # bool: t above every draw, q*'s lambda used instead


def prior_reweighted(prior: Prior, scores: Callable[[torch.Tensor], torch.Tensor], refs: FeatureReferences,
                     n_prior: int, n: int, sampler: GuidanceConfig, seed: int = 0, batch_size: int = 64,
                     device: torch.device | str | None = None, progress: bool = True) -> PriorReweighted:
    """``n_prior`` unguided draws of the learned prior with ``sampler``'s steps (its guidance
    off; the draws any guided row starts from, seeded apart from every unit), scored by
    ``scores`` (images -> (B, U) psi of ``refs``' features), and per feature n draws resampled
    from the prior draws' own exact tilt at t (:func:`prior_sample_tilts`); where t lies above
    every draw, at q*'s lambda instead (flagged)."""
    eta = None if sampler.sampler == "ddpm" else sampler.eta
    variance = sampler.variance if eta is None else "posterior"
    seeds = sample_seeds(seed, -1, n_prior)  # unit -1: no feature's stream
    xs, psis = [], []
    for s in tqdm(range(0, n_prior, batch_size), desc="prior draws", disable=not progress):
        gens = resolve_generators(list(seeds[s:s + batch_size]))
        x_T = initial_noise(prior.sample_shape, gens, device=device)
        x = reverse_process(prior.eps, x_T, prior.schedule, eta=eta, generator=gens,
                            timesteps=sampler.timesteps(prior.schedule), clip_x0=prior.clip_x0, variance=variance,
                            disable=True)
        with torch.no_grad():
            psis.append(scores(x).cpu())
        xs.append(x.cpu())
    x_M, psi_MU = torch.cat(xs), torch.cat(psis)
    gen = torch.Generator().manual_seed(seed)
    out_x, out_psi, ess, flagged = [], [], [], []
    for j, ref in enumerate(refs.refs):
        try:
            law, at_lambda = prior_sample_tilts(psi_MU[:, j], ref)[0], False
        except UnreachableTarget:
            law, at_lambda = tilt_at(psi_MU[:, j], ref.tilt.knob), True
        idx = law.resample_indices(n, gen)
        out_x.append(x_M[idx])
        out_psi.append(psi_MU[idx, j])
        ess.append(law.ess)
        flagged.append(at_lambda)
    return PriorReweighted((torch.stack(out_x), torch.stack(out_psi)), torch.tensor(ess), torch.tensor(flagged))


@dataclass(frozen=True)
class ReferenceTable:
    """Per method, per metric: one value per feature; per method the pooled KID to q*."""

    per_feature: dict[str, dict[str, np.ndarray]]
    kid: dict[str, tuple[float, float]]  # (mean, SD over subsets)
    concepts: Concepts

    def summary(self, seed: int = 0) -> dict[str, dict[str, Interval]]:
        """{method: {metric: (mean, low, high)}}: 95 % bootstrap over features; ``KID to q*``
        as (mean, mean - SD, mean + SD)."""
        out = {}
        for m, cols in self.per_feature.items():
            out[m] = {k: bootstrap_ci(v, seed=seed) for k, v in cols.items()}
            mean, sd = self.kid[m]
            out[m]["KID to q*"] = (mean, mean - sd, mean + sd)
        return out

    def paired(self, metric: str, baseline: str, seed: int = 0) -> dict[str, Interval]:
        """{method: paired 95 % interval of mean(method - baseline) over the same features}."""
        base = self.per_feature[baseline][metric]
        return {m: paired_difference_ci(cols[metric], base, seed=seed)
                for m, cols in self.per_feature.items() if m != baseline}

    def median(self, metric: str) -> dict[str, float]:
        return {m: float(np.nanmedian(cols[metric])) for m, cols in self.per_feature.items()}


def reference_table(samples: Mapping[str, Samples], refs: FeatureReferences, probs_of: ProbsOf,
                    features_of: Callable[[torch.Tensor], torch.Tensor], min_confidence: float = 0.9,
                    concept_top_n: int = 50, n_kid_reference: int = 16, seed: int = 0) -> ReferenceTable:
    """Score every method's samples (``samples[m] = (images_UNCHW, psi_UN)``, features in the
    order of ``refs``) against the features' exact tilts (see the module docstring)."""
    u = len(refs.units_U)
    concepts = pool_concepts(refs.pool.psi_NU, refs.pool.factors, FACTOR_SIZES, top_n=concept_top_n)
    kid_ref_x, _ = exact_samples(refs, n_kid_reference, "tilt", seed=seed + 1)  # independent of the q* row
    kid_ref = features_of(kid_ref_x.flatten(0, 1))
    per, kids = {}, {}
    for m, (x_UNCHW, psi_UN) in samples.items():
        if x_UNCHW.shape[0] != u or psi_UN.shape != x_UNCHW.shape[:2]:
            raise ValueError(f"{m}: need (U={u}, N, C, H, W) images and (U, N) psi, got {tuple(x_UNCHW.shape)} "
                             f"and {tuple(psi_UN.shape)}")
        if not torch.isfinite(psi_UN).all():
            raise ValueError(f"{m}: NaN or infinite psi values")
        n = x_UNCHW.shape[1]
        flat = x_UNCHW.flatten(0, 1).float()
        probs = probs_of(flat)
        read = {f: p.argmax(-1).reshape(u, n) for f, p in probs.items()}
        rows = [reference_row(psi_UN[j], {f: v[j] for f, v in read.items()}, refs.refs[j].psi_N,
                              refs.refs[j].tilt.w_N, refs.pool.factors, FACTOR_SIZES) for j in range(u)]
        acc = gated_concept_accuracy({f: p.reshape(u, n, -1) for f, p in probs.items()}, concepts, min_confidence)
        feats = features_of(flat)
        per[m] = {"psi_over_t": (psi_UN.float().mean(1) / refs.target_U.float()).numpy(),
                  "tv_mean": np.array([r["tv_mean"] for r in rows]),
                  "tv_concept": np.array([r[f"tv_{f}"] for r, f in zip(rows, concepts.factor_U)]),
                  "psi_w1": np.array([r["psi_w1"] for r in rows]),
                  "concept_acc": acc.chance_corrected_U,
                  "off_palette": off_palette_fraction(flat).reshape(u, n).mean(1).numpy(),
                  "diversity": (np.array([float(diversity(f_ND, lambda z: z)) for f_ND in feats.reshape(u, n, -1)])
                                if n >= 2 else np.full(u, np.nan))}
        kids[m] = kid(feats, kid_ref, seed=seed)
    return ReferenceTable(per, kids, concepts)


def concept_names(refs: FeatureReferences, value_names: Mapping[str, list[str]], top_n: int = 50,
                  min_purity: float = 0.5, max_factors: int = 2) -> list[str]:
    """Each feature's concept in words from its top-``top_n`` pool images: the modal value of
    every factor whose chance-corrected purity there is at least ``min_purity`` (at most
    ``max_factors``, purest first; the purest alone when none passes), e.g. "digit 9, top-left"."""
    from klsc_lib.analysis.monosemanticity import monosemanticity

    top_UT = refs.pool.psi_NU.topk(top_n, dim=0).indices.T.numpy()
    factors = {f: v.numpy() for f, v in refs.pool.factors.items()}
    mono = monosemanticity(top_UT, factors, dict(FACTOR_SIZES))
    names = []
    for u, row in enumerate(mono.purity_UF):
        order = [j for j in np.argsort(-row) if row[j] >= min_purity][:max_factors] or [int(np.argmax(row))]
        parts = []
        for j in order:
            f = mono.factor_names[j]
            v = int(np.bincount(factors[f][top_UT[u]], minlength=FACTOR_SIZES[f]).argmax())
            parts.append(f"{f} {value_names[f][v]}" if f != "digit" else f"digit {v}")
        names.append(", ".join(parts))
    return names
