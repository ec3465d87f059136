"""Distances between a sampler's output and a reference, from samples (paper App I.4).

- :func:`kde_kl_to_prior`: the KDE-KL estimator of eq. (212). A Gaussian KDE with
  one bandwidth h shared by all methods, q_h = (1/n) sum_i N(x_i, h^2 I), is compared
  with the equally smoothed prior p_h = p * N(0, h^2 I), exact in closed form for a
  GMM (:meth:`GaussianMixture.smoothed`), by a Riemann sum on a fixed grid over the
  displayed domain with a 1e-300 floor. Samples are finite-support, so a
  literal KL(q||p) is ill-defined; smoothing both sides equally makes it finite and
  comparable across methods.
- :func:`energy_distance`: a bandwidth-free two-sample statistic (Szekely-Rizzo).
- :func:`sliced_wasserstein`: a Wasserstein-2 distance averaged over 1-D projections,
  for samples of unequal size (used for "samples move smoothly with t", Sec 2.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from klsc_lib.diffusion.gmm_oracle import GaussianMixture

DENSITY_FLOOR = 1e-300


@dataclass(frozen=True)
class Grid2D:
    """An n x n grid of cell centres on [lo, hi]^2 (the displayed domain)."""

    lo: float = -5.0
    hi: float = 5.0
    n: int = 200

    @cached_property
    def axis_G(self) -> torch.Tensor:
        step = (self.hi - self.lo) / self.n
        return self.lo + step * (torch.arange(self.n, dtype=torch.float64) + 0.5)

    @cached_property
    def points_GD(self) -> torch.Tensor:
        gx, gy = torch.meshgrid(self.axis_G, self.axis_G, indexing="xy")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)

    @property
    def cell_area(self) -> float:
        return ((self.hi - self.lo) / self.n) ** 2


def _as_samples(samples_ND: torch.Tensor) -> torch.Tensor:
    if samples_ND.ndim != 2 or samples_ND.shape[0] == 0:
        raise ValueError(f"samples must have shape (N, D) with N > 0, got {tuple(samples_ND.shape)}")
    if not torch.isfinite(samples_ND).all():
        raise ValueError("samples contain NaN/inf; drop or fix them before estimating distances")
    return samples_ND.to(torch.float64)


def kde_log_density(samples_ND: torch.Tensor, points_GD: torch.Tensor, bandwidth: float,
                    chunk: int = 4096) -> torch.Tensor:
    """log q_h(points) for the Gaussian KDE of eq. (212), shape (G,)."""
    samples_ND = _as_samples(samples_ND)
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    n, d = samples_ND.shape
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    out = [torch.logsumexp(-0.5 * torch.cdist(block.to(samples_ND), samples_ND).square() / bandwidth**2, dim=1)
           for block in points_GD.split(chunk)]
    return torch.cat(out) + const


def grid_kl(log_q_G: torch.Tensor, log_p_G: torch.Tensor, cell_area: float) -> float:
    """Riemann sum of q log(q / p) with both densities floored at 1e-300."""
    floor = math.log(DENSITY_FLOOR)
    log_q_G, log_p_G = log_q_G.clamp(min=floor), log_p_G.clamp(min=floor)
    return float((log_q_G.exp() * (log_q_G - log_p_G)).sum() * cell_area)


def kde_kl_to_prior(samples_ND: torch.Tensor, prior: GaussianMixture, bandwidth: float,
                    grid: Grid2D = Grid2D()) -> float:
    """KL(q_h || p_h), eq. (212): the samples' KDE against the equally smoothed prior."""
    log_q_G = kde_log_density(samples_ND, grid.points_GD, bandwidth)
    log_p_G = prior.smoothed(bandwidth).to(dtype=torch.float64).log_prob(grid.points_GD)
    return grid_kl(log_q_G, log_p_G, grid.cell_area)


def kde_kl_between(samples_ND: torch.Tensor, reference_ND: torch.Tensor, bandwidth: float,
                   grid: Grid2D = Grid2D()) -> float:
    """KL(q_h || r_h) between the KDEs of two sample sets, same bandwidth and grid."""
    log_q_G = kde_log_density(samples_ND, grid.points_GD, bandwidth)
    log_r_G = kde_log_density(reference_ND, grid.points_GD, bandwidth)
    return grid_kl(log_q_G, log_r_G, grid.cell_area)


def energy_distance(a_ND: torch.Tensor, b_ND: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| with unbiased (U-statistic) within-sample
    terms: 0 in expectation iff the two laws are equal."""
    a_ND, b_ND = _as_samples(a_ND), _as_samples(b_ND)
    n, m = len(a_ND), len(b_ND)
    if n < 2 or m < 2:
        raise ValueError("energy distance needs at least 2 samples on each side")
    xy = torch.cdist(a_ND, b_ND).mean()
    xx = torch.cdist(a_ND, a_ND).sum() / (n * (n - 1))
    yy = torch.cdist(b_ND, b_ND).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)


def sliced_wasserstein(a_ND: torch.Tensor, b_ND: torch.Tensor, num_projections: int = 128,
                       num_quantiles: int = 512, generator: torch.Generator | None = None) -> float:
    """sqrt(mean over random unit directions u of W_2^2(u.a, u.b)); each 1-D W_2 uses the
    two empirical quantile functions on a common grid of levels (sizes may differ)."""
    a_ND, b_ND = _as_samples(a_ND), _as_samples(b_ND)
    directions = torch.randn(num_projections, a_ND.shape[1], generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    levels = (torch.arange(num_quantiles, dtype=torch.float64) + 0.5) / num_quantiles
    quantiles_a = torch.quantile(a_ND @ directions.T, levels, dim=0)  # (quantile level, projection)
    quantiles_b = torch.quantile(b_ND @ directions.T, levels, dim=0)
    return float((quantiles_a - quantiles_b).square().mean().sqrt())
