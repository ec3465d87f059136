"""Reference KLSC tilts computed by self-normalised importance weighting of a
large prior pool (paper Def 2.2, Lemma D.4, App H.2-H.3; RM §2, §8, §11).

With x_1..x_N ~ p, the tilt q ∝ p e^{E(x)} has weights w_i ∝ e^{E(x_i)}; the
pool's tilted mean, its log-partition A = log mean e^{E} and KL(q||p) = sum_i w_i
log(N w_i) follow directly. These give exact (up to Monte Carlo) reference
samples (importance resampling), lambda(t) by bisection of the tilted mean (eqs.
198-201), KL(q_lambda||p) = lambda t - A(lambda) (eq. 62) and KL between two tilts
of the same prior (used for object drift, App E).
"""

from __future__ import annotations

import math

import torch

from klsc_lib.constraints import hard_vs_tilt as constraints
from klsc_lib.constraints.calibration import bisect_increasing
from klsc_lib.constraints.divergences import kl_weights
from klsc_lib.constraints.score_variable import EmpiricalScore


def tilt_log_weights(energy_N: torch.Tensor) -> torch.Tensor:
    """Normalised log-weights log w_i of q ∝ p e^{energy} on a pool drawn from p."""
    if not torch.isfinite(energy_N).all():
        raise ValueError("tilt energies must be finite on every pool point")
    return energy_N - torch.logsumexp(energy_N, dim=0)


def tilted_mean(values_N: torch.Tensor, energy_N: torch.Tensor) -> float:
    """E_q[values] for q ∝ p e^{energy} (self-normalised importance sampling)."""
    return float((tilt_log_weights(energy_N).exp() * values_N).sum())


def log_partition(energy_N: torch.Tensor) -> float:
    """A = log E_p e^{energy}, estimated by log-mean-exp over the pool."""
    return float(torch.logsumexp(energy_N, dim=0) - math.log(len(energy_N)))


def kl_to_prior(energy_N: torch.Tensor) -> float:
    """KL(q||p) = E_q[energy] - A for q ∝ p e^{energy} (eq. 62 when energy = lambda psi)."""
    return tilted_mean(energy_N, energy_N) - log_partition(energy_N)


def kl_between_tilts(energy_a_N: torch.Tensor, energy_b_N: torch.Tensor) -> float:
    """KL(q_a||q_b) for two tilts of the same prior, sum_i w_a,i log(w_a,i / w_b,i)."""
    return float(kl_weights(tilt_log_weights(energy_a_N), tilt_log_weights(energy_b_N)))


def effective_sample_size(energy_N: torch.Tensor) -> float:
    """1 / sum_i w_i^2 of the normalised weights (Lemma F.1's winner-takes-most -> 1)."""
    return float(1.0 / (2 * tilt_log_weights(energy_N)).exp().sum())


def task_distortion_lower_bound(task_N: torch.Tensor, base_energy_N: torch.Tensor, s: float,
                                eta_max: float = 10.0) -> float:
    """Theorem E.3 (eq. 16): D_task(s) >= sup_{eta >= 0} eta s - Lambda(eta), with
    Lambda(eta) = log E_{q*} e^{eta g} and q* ∝ p e^{base} the intrinsic-only tilt.
    The objective is concave in eta; maximised on [0, eta_max]."""
    from scipy.optimize import minimize_scalar

    log_z = log_partition(base_energy_N)
    best = minimize_scalar(lambda eta: -(eta * s - log_partition(base_energy_N + eta * task_N) + log_z),
                           bounds=(0.0, eta_max), method="bounded", options={"xatol": 1e-9})
    return max(-float(best.fun), 0.0)  # eta = 0 gives 0


def calibrate_tilt(psi_N: torch.Tensor, target: float, base_energy_N: torch.Tensor | None = None,
                   lo: float = 0.0, hi: float = 50.0, tol: float = 1e-8, max_iter: int = 200) -> float:
    """lambda >= 0 with E_{q} psi = target for q ∝ p e^{base + lambda psi}; the tilted
    mean is increasing in lambda (its derivative is Var_q psi, eq. 61). Raises
    :class:`~klsc_lib.constraints.calibration.UnreachableTarget` outside the attainable range."""
    law = EmpiricalScore(psi_N, base_energy_N)  # the base tilt p e^{base}, as a weighted score sample
    return bisect_increasing(lambda lam: float(constraints.tilted_mean(law, lam)), target, lo, hi, tol=tol,
                             max_iter=max_iter, what="tilt strength lambda")


def resample_tilt(pool_ND: torch.Tensor, energy_N: torch.Tensor, n: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples from the tilt by multinomial importance resampling of the pool."""
    w_N = tilt_log_weights(energy_N).exp().cpu()
    idx = torch.multinomial(w_N, n, replacement=True, generator=generator)
    return pool_ND[idx.to(pool_ND.device)]
