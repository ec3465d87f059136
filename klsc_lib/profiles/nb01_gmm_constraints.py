"""Profiles of notebook 01_gmm_constraints (Sec. 2.2.2, App D, App H).

The GMM constants, delta and eps were stripped from the paper: the values here are
our defaults (not the paper's), every one a parameter. ``paper`` uses 4e5 prior
samples per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GmmConstraintsProfile:
    # App H.1 prior and score (our defaults; the paper's were stripped): modes at radius*(+-1, +-1), isotropic std.
    gmm_radius: float = 2.0
    gmm_std: float = 0.6
    theta0: float = math.pi / 4
    score_scale: float = 3.0
    # App H.3 / H.4 protocol.
    targets: tuple[float, ...] = (5.0, 6.0, 7.0)
    delta: float = 0.25  # boundary-mass margin (eq. 202)
    eps: float = 0.1  # TV step in t (eq. 203)
    n_prior_samples: int = 100_000
    n_seeds: int = 5  # Monte Carlo repeats of Table 2 (mean ± std)
    lam_max: float = 50.0
    bisect_tol: float = 1e-10
    bisect_max_iter: int = 200
    # 2-D quadrature grid on [-grid_lim, grid_lim]^2 (cross-check, Fig. 1, D.14 on the GMM).
    grid_lim: float = 6.0
    grid_n: int = 600
    # Fig. 2 sweep of faithfulness levels on the GMM.
    sweep_t: tuple[float, float] = (4.8, 8.6)
    sweep_levels: int = 24
    # App D.4.4 Gaussian example: midpoint grid for Y ~ N(0, 1) (edges on multiples of the
    # cell width so the thresholds below are resolved exactly).
    gauss_lo: float = -12.0
    gauss_hi: float = 16.0
    gauss_n: int = 280_000
    gauss_taus: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0)
    gauss_delta: float = 0.1
    gauss_tau_sweep: tuple[float, float] = (0.0, 5.0)  # Prop. D.13 range (tau >= 0)
    gauss_eps: float = 0.1  # finite step shown next to the local speeds in Fig. 2
    # Polar quadrature law of the score (smooth in psi): Lemmas D.11-D.12 and eqs. 102-107.
    polar_n_theta: int = 20_000
    speed_step: float = 0.003  # central knob step of the finite-difference speeds
    # App D.4 eqs. 102-107: averaged instability over [t1, t2].
    average_t: tuple[float, float] = (5.0, 7.0)
    # Lemma D.8 / D.9: shrinking perturbations of tau and lambda.
    perturbations: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)


PROFILES = {
    "smoke": GmmConstraintsProfile(n_prior_samples=20_000, n_seeds=2, grid_n=240, sweep_levels=6, gauss_n=56_000,
                                   polar_n_theta=8_000),
    "default": GmmConstraintsProfile(),
    "paper": replace(GmmConstraintsProfile(), n_prior_samples=400_000, n_seeds=10, grid_n=1000, sweep_levels=40,
                     gauss_n=2_800_000),
}
