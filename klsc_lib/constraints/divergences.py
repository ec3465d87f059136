"""KL and TV between the induced distributions (paper eqs. 1-2, Lemma B.4, App D).

Closed forms where the paper gives them:

- KL(p_tau || p) = -log S(tau)                          (Lemma D.1, eq. 46)
- TV(p_tau, p_tau') = 1 - S(tau') / S(tau), tau <= tau'  (Lemma D.10, eq. 80)
- TV(N(a, 1), N(b, 1)) = 2 Phi(|a - b| / 2) - 1          (App D.4.4, the Gaussian tilt path)

and estimators otherwise: two reweightings of one common base sample (Monte Carlo
prior draws, or the cells of a quadrature grid where a weight is density x cell
size) are compared exactly over that sample, KL = sum_i w_i log(w_i / w'_i) and
TV = 1/2 sum_i |w_i - w'_i|. The tilt KLs of Remark D.5 and Lemma D.9 need the
log-partition of a law and live beside it in :mod:`klsc_lib.constraints.hard_vs_tilt`.
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
