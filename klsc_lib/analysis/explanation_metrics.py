"""Metrics of a set of explanations (paper Sec 3.2 Table 3, App L.2-L.4), per unit and
per method, in a world whose images carry ground-truth factors:

- achieved activation (mean psi of a unit's samples, against its target t);
- ground-truth concept accuracy: each unit's concept is the (factor, value) its top
  real images share, chosen by chance-corrected purity (:func:`unit_concepts`); a
  factor reader that is NOT the explained backbone reads each sample's factors;
- high-frequency energy fraction and diversity (:mod:`.sample_metrics`);
- bootstrap confidence intervals over units (``scipy.stats.bootstrap``).

KID lives in the world's quality module; it is computed on pooled samples per method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from klsc_lib.analysis.monosemanticity import monosemanticity
from klsc_lib.analysis.sample_metrics import diversity, high_frequency_fraction

ReadFactors = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]  # images_BCHW -> {factor: value_B}


@dataclass(frozen=True)
class Concepts:
    """Per unit: the factor and value its top real images share, and how purely."""

    factor_U: tuple[str, ...]
    value_U: np.ndarray
    purity_U: np.ndarray  # chance-corrected: 0 = chance, 1 = every top image shares the value
    count_U: np.ndarray  # how many of the unit's top images carry the value
    top_k: int  # top images read per unit

    def subset(self, idx: Sequence[int]) -> "Concepts":
        """The concepts of the units at positions ``idx``."""
        idx = list(idx)
        return Concepts(tuple(self.factor_U[i] for i in idx), self.value_U[idx], self.purity_U[idx],
                        self.count_U[idx], self.top_k)

    def label(self, i: int, value_names: Mapping[str, Sequence[object]] | None = None) -> str:
        """``"factor=value"`` of the unit at position ``i``, the value named where
        ``value_names[factor]`` names it."""
        factor, value = self.factor_U[i], int(self.value_U[i])
        names = (value_names or {}).get(factor)
        return f"{factor}={names[value] if names is not None and value < len(names) else value}"


def unit_concepts(top_ids_UK: np.ndarray, factors: Mapping[str, np.ndarray],
                  factor_sizes: Mapping[str, int]) -> Concepts:
    """The best factor by chance-corrected purity over each unit's top images (raw
    purity would favour factors with few values) and its most frequent value there."""
    top_ids_UK = np.asarray(top_ids_UK)
    mono = monosemanticity(top_ids_UK, dict(factors), dict(factor_sizes))
    names = mono.factor_names
    factor_U = tuple(names[j] for j in mono.best_factor_U)
    counts = [np.bincount(factors[f][row], minlength=factor_sizes[f]) for f, row in zip(factor_U, top_ids_UK)]
    value_U = np.array([c.argmax() for c in counts], dtype=int)
    return Concepts(factor_U, value_U, mono.score_U, np.array([c.max() for c in counts], dtype=int),
                    top_ids_UK.shape[1])


@torch.no_grad()
def concept_accuracy(read: ReadFactors, images_UNCHW: torch.Tensor, concepts: Concepts) -> np.ndarray:
    """(U,) fraction of each unit's samples whose read value of the unit's concept
    factor equals the concept value."""
    u, n = images_UNCHW.shape[:2]
    if len(concepts.factor_U) != u:
        raise ValueError(f"{len(concepts.factor_U)} concepts for {u} units")
    values = read(images_UNCHW.reshape(u * n, *images_UNCHW.shape[2:]).float())
    out = np.empty(u)
    for i, (f, v) in enumerate(zip(concepts.factor_U, concepts.value_U)):
        out[i] = float((values[f].reshape(u, n)[i].cpu().numpy() == v).mean())
    return out


class PixelKNNReader:
    """Reads factors as the majority vote of the ``k`` nearest real images in pixel
    space: a factor reader independent of the explained backbone (use a trained
    all-factor classifier where the world has one)."""

    def __init__(self, images_NCHW: torch.Tensor, factors: Mapping[str, np.ndarray], k: int = 5):
        if len(images_NCHW) < k:
            raise ValueError(f"need at least k={k} reference images, got {len(images_NCHW)}")
        self.ref_ND = images_NCHW.flatten(1).float()
        self.factors = {f: torch.as_tensor(np.asarray(v)[:len(images_NCHW)]) for f, v in factors.items()}
        self.k = k

    @torch.no_grad()
    def __call__(self, images_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        idx_BK = torch.cdist(images_BCHW.flatten(1).float().cpu(), self.ref_ND).topk(self.k, largest=False).indices
        return {f: torch.mode(v[idx_BK], dim=1).values for f, v in self.factors.items()}


def per_unit_metrics(images_UNCHW: torch.Tensor, psi_UN: torch.Tensor, target_U: torch.Tensor,
                     read: ReadFactors | None = None, concepts: Concepts | None = None,
                     features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """(U,) arrays: ``psi`` (mean), ``psi_over_t``, ``hf`` (high-frequency fraction),
    ``diversity`` (in ``features`` space, pixels if None; needs >= 2 samples) and,
    with a reader and concepts, ``concept_acc``."""
    u, n = images_UNCHW.shape[:2]
    x = images_UNCHW.float()
    psi_U = psi_UN.float().mean(dim=1)
    out = {"psi": psi_U.numpy(), "psi_over_t": (psi_U / target_U.float()).numpy(),
           "hf": high_frequency_fraction(x.reshape(u * n, *x.shape[2:])).reshape(u, n).mean(dim=1).numpy()}
    if n >= 2:
        out["diversity"] = np.array([float(diversity(x[i], features)) for i in range(u)])
    if read is not None and concepts is not None:
        out["concept_acc"] = concept_accuracy(read, x, concepts)
    return out


def bootstrap_ci(values_U: np.ndarray, confidence: float = 0.95, seed: int = 0,
                 n_resamples: int = 2000) -> tuple[float, float, float]:
    """(mean, low, high): the mean over units and its percentile bootstrap interval."""
    from scipy.stats import bootstrap

    v = np.asarray(values_U, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.ptp(v) == 0:
        m = float(v.mean()) if len(v) else float("nan")
        return m, m, m
    res = bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed))
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


Interval = tuple[float, float, float]  # (mean, low, high)


def method_table(samples: Mapping[str, tuple[torch.Tensor, torch.Tensor]], target_U: torch.Tensor,
                 read: ReadFactors | None, concepts: Concepts | None,
                 spaces: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], real_NCHW: torch.Tensor,
                 seed: int = 0) -> dict[str, dict[str, Interval]]:
    """Table 3 rows: per method (``samples[m] = (images_UNCHW, psi_UN)``) the bootstrap
    interval over units of each :func:`per_unit_metrics` value (diversity in the first
    feature space), and ``"KID <space>"``: KID of the method's pooled samples against
    ``real_NCHW`` in each feature space, as (mean, mean - SD, mean + SD) over subsets."""
    from klsc_lib.analysis.image_metrics import kid

    first = next(iter(spaces.values()))
    real = {name: f(real_NCHW) for name, f in spaces.items()}
    table = {}
    for method, (x, psi) in samples.items():
        per = per_unit_metrics(x, psi, target_U, read, concepts, features=first)
        row = {k: bootstrap_ci(v, seed=seed) for k, v in per.items()}
        pooled = x.flatten(0, 1).float()
        for name, f in spaces.items():
            mean, sd = kid(f(pooled), real[name], seed=seed)
            row[f"KID {name}"] = (mean, mean - sd, mean + sd)
        table[method] = row
    return table
