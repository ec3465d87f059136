"""The exact reference of mini-world transcoder features (paper Sec 3.2, Table 3): each
feature's level t as notebook 04 sets it (mean psi of its top-``k_target`` images in the
first half of the test set, Sec 3.2), a pool of fresh draws from the world's generator
scored by the same psi (:mod:`klsc_lib.worlds.miniworld.reference_pool`), and on it the
KLSC tilt q* and the hard truncation at t (:mod:`klsc_lib.constraints.exact_reference`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import torch

from klsc_lib.analysis.reference_metrics import factor_histograms
from klsc_lib.constraints.exact_reference import ExactReference, Reweighting, first_reachable, pool_references
from klsc_lib.explain import feature_units, topk_targets
from klsc_lib.interfaces import World
from klsc_lib.runtime import config_hash
from klsc_lib.sae.artifacts import TranscoderRecipe
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES
from klsc_lib.worlds.miniworld.reference_pool import ScoredPool, score_pool

Kind = Literal["tilt", "truncation"]


@dataclass(frozen=True)
class FeatureReferences:
    """U features: their levels t_U, the scored pool and each feature's exact laws on it."""

    units_U: torch.Tensor
    target_U: torch.Tensor
    pool: ScoredPool
    refs: list[ExactReference]

    def law(self, position: int, kind: Kind = "tilt") -> Reweighting:
        """q* (``"tilt"``) or p_tau (``"truncation"``) of the feature at ``position``."""
        return getattr(self.refs[position], kind)

    def histograms(self, position: int, kind: Kind = "tilt") -> dict[str, torch.Tensor]:
        """{factor: (K,) histogram} of the law, from the pool's true factors."""
        return factor_histograms(self.pool.factors, FACTOR_SIZES, self.law(position, kind).w_N)

    def resampled_images(self, position: int, n: int, kind: Kind = "tilt",
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool indices (n,), images (n, 3, 16, 16)) of n draws from the law."""
        idx_M = self.law(position, kind).resample_indices(n, generator)
        return idx_M, self.pool.images(idx_M)

    def subset(self, positions: Sequence[int]) -> FeatureReferences:
        """The features at ``positions`` (in that order) on the same pool."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        if len(pos) and not (0 <= int(pos.min()) and int(pos.max()) < len(self.refs)):
            raise IndexError(f"positions {pos.tolist()} outside the {len(self.refs)} features")
        return FeatureReferences(self.units_U[pos], self.target_U[pos],
                                 ScoredPool(self.pool.psi_NU[:, pos], self.pool.latents),
                                 [self.refs[i] for i in pos.tolist()])

    def summary(self) -> list[dict[str, float]]:
        """One row per feature: t, the pool's mean and max psi, and lambda / tau, ESS, KL and
        the achieved mean of both laws."""
        rows = []
        for u, t, ref in zip(self.units_U.tolist(), self.target_U.tolist(), self.refs):
            row = {"unit": u, "t": t, "pool_mean": float(ref.psi_N.mean()), "pool_max": float(ref.psi_N.max())}
            for kind, law, knob in (("tilt", ref.tilt, "lambda"), ("truncation", ref.truncation, "tau")):
                row |= {f"{kind}_{knob}": law.knob, f"{kind}_ess": law.ess, f"{kind}_kl": law.kl_to_prior,
                        f"{kind}_mean": law.mean_psi}
            rows.append(row)
        return rows


def feature_references(world: World, recipe: TranscoderRecipe,
                       units_U: Sequence[int] | torch.Tensor, n_pool: int = 100_000, batch_size: int = 2048,
                       k: int = 20, k_target: int = 4, seed: int = 0, device: torch.device | str = "cpu",
                       progress: bool = True, keep: int | None = None) -> FeatureReferences:
    """Exact references of ``recipe``'s transcoder features ``units_U`` on a mini-world:
    targets from the first half of ``world.test`` as
    :func:`klsc_lib.studies.nb04_energydps.draw_units` sets them, a pool of ``n_pool``
    training-writer draws, cached under a key of the world, transcoder, psi settings and units.
    ``keep``: only the first ``keep`` features whose level the pool reaches
    (:func:`~klsc_lib.constraints.exact_reference.first_reachable`); by default every
    feature, and an unreachable level raises."""
    units = feature_units(world, recipe, seed=seed, device=device)
    units_U = units.check(units_U)
    half = len(world.test) // 2
    _, target_U = topk_targets(units, units_U, torch.stack([world.test[i][0] for i in range(half)]), k=k,
                               k_target=k_target)
    key = {"world": world.key, "recipe": config_hash(asdict(recipe)),
           "transcoder_seed": seed, "units": units_U.tolist(),
           "psi": {"reduction": units.reduction, "center_frac": units.center_frac, "alpha": units.alpha}}
    pool = score_pool(units.scores(units_U), key, n_pool, batch_size, device=device, progress=progress)
    target_U = target_U.cpu()
    if keep is not None:
        pos = first_reachable(pool.psi_NU, target_U, keep)
        units_U, target_U = units_U[pos.to(units_U.device)], target_U[pos]
        pool = ScoredPool(pool.psi_NU[:, pos], pool.latents)
    return FeatureReferences(units_U, target_U, pool, pool_references(pool.psi_NU, target_U))
