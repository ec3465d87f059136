"""Monosemanticity of units against ground-truth factors: the mini-world analogue of
the paper's superposition study (App L.1, Table 7: 100 random neurons vs 100 random
SAE features, rater success 28 % vs 74 %).

The paper asks a rater whether a unit's top images share one concept. The mini-world
knows every image's generative factors, so the rater is replaced by a measurement on
each unit's top-n images: for every factor, the chance-corrected purity

    purity_f = (max_v freq_v - 1/V_f) / (1 - 1/V_f)          in [0, 1] (can dip below 0)

(1: all top images share one value of factor f; 0: as mixed as a uniform draw), and
the normalised information 1 - H(f | top images) / log V_f. A unit's score is its best
factor's purity; it counts as a success (a single clear concept) when the score
exceeds ``threshold`` (default 0.5, the midpoint, like the paper's 2.5 on its 1-4
scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def dataset_factors(dataset, names: tuple[str, ...], n: int | None = None) -> dict[str, np.ndarray]:
    """(N,) integer array per factor of the first ``n`` items (all if None) of a dataset
    whose items are ``(image, factors)`` (the mini-world keeps them as
    ``dataset.factors``; others are read item by item)."""
    n = len(dataset) if n is None else min(n, len(dataset))
    if hasattr(dataset, "factors"):
        return {name: np.asarray(torch.as_tensor(dataset.factors[name]))[:n] for name in names}
    rows = [dataset[i][1] for i in range(n)]
    return {n: np.array([r[n] for r in rows], dtype=np.int64) for n in names}


@dataclass(frozen=True)
class Monosemanticity:
    score_U: np.ndarray  # best chance-corrected purity per unit
    best_factor_U: np.ndarray  # index into factor_names of that factor
    purity_UF: np.ndarray  # chance-corrected purity per unit and factor
    info_UF: np.ndarray  # normalised information per unit and factor
    factor_names: tuple[str, ...]
    threshold: float

    @property
    def success_rate(self) -> float:
        return float((self.score_U > self.threshold).mean())

    @property
    def success_se(self) -> float:
        """Binomial standard error of :attr:`success_rate` over the sampled units."""
        p = self.success_rate
        return float(np.sqrt(p * (1 - p) / len(self.score_U)))

    @property
    def mean_score(self) -> float:
        return float(self.score_U.mean())

    @property
    def mean_best_info(self) -> float:
        return float(self.info_UF.max(axis=1).mean())


def monosemanticity(top_ids_UK: np.ndarray, factors: dict[str, np.ndarray], factor_sizes: dict[str, int],
                    threshold: float = 0.5) -> Monosemanticity:
    """Score units from the ids of their top-activating images (one row per unit)."""
    top_ids_UK = np.asarray(top_ids_UK)
    if top_ids_UK.ndim != 2 or top_ids_UK.shape[1] < 2:
        raise ValueError(f"top_ids_UK must be (units, k >= 2), got shape {top_ids_UK.shape}")
    names = tuple(factors)
    missing = [n for n in names if n not in factor_sizes or factor_sizes[n] < 2]
    if missing:
        raise ValueError(f"factor_sizes needs a size >= 2 for factors {missing}")
    n_units, k = top_ids_UK.shape
    purity_UF = np.zeros((n_units, len(names)))
    info_UF = np.zeros((n_units, len(names)))
    for j, name in enumerate(names):
        v = factor_sizes[name]
        counts_UV = np.stack([np.bincount(factors[name][row], minlength=v) for row in top_ids_UK])
        freq_UV = counts_UV / k
        purity_UF[:, j] = (freq_UV.max(axis=1) - 1 / v) / (1 - 1 / v)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent_U = -np.where(freq_UV > 0, freq_UV * np.log(freq_UV), 0.0).sum(axis=1)
        info_UF[:, j] = 1 - ent_U / np.log(v)
    return Monosemanticity(purity_UF.max(axis=1), purity_UF.argmax(axis=1), purity_UF, info_UF, names, threshold)


def sample_units(pool: np.ndarray, n: int, generator: torch.Generator) -> np.ndarray:
    """``n`` units drawn without replacement from ``pool`` (all if fewer), ascending."""
    pool = np.asarray(pool)
    return np.sort(pool[torch.randperm(len(pool), generator=generator)[:n].numpy()])


def study_units(index, units: np.ndarray, factors: dict[str, np.ndarray], factor_sizes: dict[str, int],
                top_n: int, threshold: float = 0.5) -> Monosemanticity:
    """:func:`monosemanticity` of ``units`` from their ``top_n`` images in a
    :class:`klsc_lib.sae.topk_index.TopKIndex` (every unit must have ``top_n`` hits)."""
    rows = [index.top_ids(int(u))[:top_n] for u in units]
    short = [int(u) for u, row in zip(units, rows) if len(row) < top_n]
    if short:
        raise ValueError(f"units {short[:5]} have fewer than {top_n} indexed images; index more images or "
                         "lower top_n")
    return monosemanticity(np.array(rows), factors, factor_sizes, threshold)
