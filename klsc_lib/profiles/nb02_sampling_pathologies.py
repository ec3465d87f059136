"""Profiles of notebook 02_sampling_pathologies (paper Fig 3, Sec 2.2.3-2.3, App E, F,
I). The toy's constants are not given in the paper; the defaults here are ours (App I
sizes where it states them). ``paper`` uses the full 1000-step DDPM sampler (App J.4)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SamplingPathologiesProfile:
    targets: tuple[float, ...] = (5.0, 6.0, 7.0)  # matched faithfulness levels t (Table 2 rows, App I)
    tol: float = 0.05  # |mean psi - t| tolerance (App I)
    n_samples: int = 2000  # sample budget per method (App I)
    pool_size: int = 20_000  # retrieval pool (App I)
    reference_pool: int = 400_000  # prior pool for the exact importance-weighted tilt (App H)
    num_steps: int = 250  # EnergyDPS / DDPM reverse steps (respaced from 1000)
    lam_bracket: tuple[float, float] = (0.0, 3.0)  # EnergyDPS lambda search range, tilted-score step
    lam_bracket_constant: tuple[float, float] = (0.0, 0.1)  # ... constant step zeta*lambda (Algorithm 1, App J.4)
    seeds: int = 5  # replicates of the matched comparison (KDE-KL mean +- SD)
    path_levels: int = 11  # lambda grid along t for the smoothness check (even index = coarse grid)
    path_n: int = 1000  # samples per level on that grid
    path_replicates: int = 3
    calib_max_iter: int = 14
    or_box: tuple[float, float] = (-4.0, 4.0)  # I.2 box
    or_steps: int = 500
    or_lr: float = 0.05
    or_beta_bracket: tuple[float, float] = (0.0, 1000.0)  # proximal step on beta*y^2: stable for any beta
    kde_bandwidth: float = 0.2  # eq. (212) shared bandwidth h (App I)
    grid_n: int = 200  # KDE grid cells per axis on [-5, 5]^2 (App I)
    boundary_delta: float = 0.25  # B_delta margin (App H)
    convergence_target: float = 6.0  # lambda of the exact tilt at this t is used for the step sweep
    convergence_steps: tuple[int, ...] = (10, 25, 50, 100, 250)
    exact_guidance_order: int = 12  # Gauss-Hermite nodes per axis for grad log h_t (Theorem G.3)
    drift_target: float = 6.0
    drift_task_gains: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 12.0)  # s - E_{q*_t} g for Lemma E.1 / Fig 2 analogue
    task_reference: tuple[float, float] = (2.0, -2.0)  # x_ref of g = -||x - x_ref||^2 (eq. 216)
    retrieval_lambdas: tuple[float, ...] = (0.0, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6)  # Lemma F.1 sweep
    prompt_grid_n: int = 400  # quadrature cells per axis on [-7, 7]^2 for the prompt family / exact tilt KLs


DEFAULT = SamplingPathologiesProfile()

PROFILES = {
    "smoke": replace(DEFAULT, n_samples=400, pool_size=4000, reference_pool=100_000, num_steps=50,
                     calib_max_iter=10, or_steps=300, grid_n=100, convergence_steps=(10, 25, 50), seeds=2,
                     path_levels=7, path_n=300, path_replicates=2, drift_task_gains=(0.0, 4.0, 12.0),
                     prompt_grid_n=200),
    "default": DEFAULT,
    "paper": replace(DEFAULT, num_steps=1000, calib_max_iter=20,
                     convergence_steps=(10, 25, 50, 100, 250, 500, 1000), exact_guidance_order=16),
}
