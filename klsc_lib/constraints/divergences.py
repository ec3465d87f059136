"""KL and TV between the induced distributions (eqs. 1-2, Lemma B.4, App D; RM §1-§5).

Closed forms where the paper gives them:

- KL(p_tau || p) = -log S(tau)                          (Lemma D.1, eq. 46)
- KL(q_lambda || p) = lambda A'(lambda) - A(lambda)      (Remark D.5)
- KL(q_lambda || q_lambda') = (lambda - lambda') A'(lambda) - (A(lambda) - A(lambda'))  (Lemma D.9, eq. 72)
- TV(p_tau, p_tau') = 1 - S(tau') / S(tau), tau <= tau'  (Lemma D.10, eq. 80)
- TV(N(a, 1), N(b, 1)) = 2 Phi(|a - b| / 2) - 1          (RM §6, the Gaussian tilt path)

and estimators otherwise: two reweightings of one common base sample (Monte Carlo
prior draws, or the cells of a quadrature grid where a weight is density x cell
size) are compared exactly over that sample, KL = sum_i w_i log(w_i / w'_i) and
TV = 1/2 sum_i |w_i - w'_i|.
"""

from __future__ import annotations

import math

import torch

from klsc_lib.constraints.score_variable import Scalar


def _t(x: Scalar) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def kl_truncation(log_survival: Scalar) -> torch.Tensor:
    """KL(p_tau || p) = -log p(A_tau) (Lemma D.1)."""
    return -_t(log_survival)


def kl_tilt(lam: Scalar, log_partition: Scalar, tilted_mean: Scalar) -> torch.Tensor:
    """KL(q_lambda || p) = lambda A'(lambda) - A(lambda) (Remark D.5, eq. 58)."""
    return _t(lam) * _t(tilted_mean) - _t(log_partition)


def kl_between_tilts(lam: Scalar, lam2: Scalar, log_partition: Scalar, log_partition2: Scalar,
                     tilted_mean: Scalar) -> torch.Tensor:
    """KL(q_lambda || q_lambda2), Lemma D.9 eq. (72); ``tilted_mean`` is A'(lambda)."""
    return (_t(lam) - _t(lam2)) * _t(tilted_mean) - (_t(log_partition) - _t(log_partition2))


def tv_between_truncations(survival: Scalar, survival2: Scalar) -> torch.Tensor:
    """TV(p_tau, p_tau2) = 1 - S(tau2) / S(tau) for tau <= tau2 (Lemma D.10, eq. 80).
    Pass the survival at the lower threshold first."""
    s, s2 = _t(survival), _t(survival2)
    if (s2 > s).any():
        raise ValueError("tv_between_truncations expects S(tau) >= S(tau2): pass the lower threshold first")
    return 1 - s2 / s


def tv_unit_gaussians(mean: Scalar, mean2: Scalar) -> torch.Tensor:
    """TV(N(a, 1), N(b, 1)) = 2 Phi(|a - b| / 2) - 1: the finite step of the Gaussian
    KLSC path, whose tilts are unit Gaussians (eq. 119-120)."""
    return 2 * torch.special.ndtr((_t(mean) - _t(mean2)).abs() / 2) - 1


def pinsker_bound(kl: Scalar) -> torch.Tensor:
    """Upper bound sqrt(KL / 2) on TV (Pinsker, Lemma B.4)."""
    return torch.sqrt(_t(kl) / 2)


def _check_pair(log_w: torch.Tensor, log_w2: torch.Tensor) -> None:
    if log_w.shape != log_w2.shape:
        raise ValueError(f"weights over different samples: shapes {tuple(log_w.shape)} and {tuple(log_w2.shape)}; "
                         "both distributions must reweight the same base sample or grid")
    if torch.isnan(log_w).any() or torch.isnan(log_w2).any():
        raise ValueError("NaN in log-weights")


def kl_weights(log_w: torch.Tensor, log_w2: torch.Tensor) -> torch.Tensor:
    """KL(q || q2) for two normalised reweightings of one base sample (or grid); +inf
    when q charges a point that q2 does not (the support jump of Lemma D.8)."""
    _check_pair(log_w, log_w2)
    charged = log_w > -math.inf
    if (log_w2[charged] == -math.inf).any():
        return torch.tensor(math.inf, dtype=torch.float64, device=log_w.device)
    return (log_w[charged].exp() * (log_w[charged] - log_w2[charged])).sum()


def tv_weights(log_w: torch.Tensor, log_w2: torch.Tensor) -> torch.Tensor:
    """TV(q, q2) = 1/2 sum_i |w_i - w2_i| over one common base sample (or grid)."""
    _check_pair(log_w, log_w2)
    return 0.5 * (log_w.exp() - log_w2.exp()).abs().sum()
