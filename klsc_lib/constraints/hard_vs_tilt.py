"""Hard constraint vs. KLSC on a score law (Sec. 2.2.2, App D.1, App H; RM §2-§5, §11).

- Hard truncation p_tau = p(. | psi >= tau) (Def. 2.1, Lemma D.1, eq. 6/43).
- KLSC tilt q_lambda = e^{lambda psi} p / Z(lambda) (Def. 2.2, Lemma D.4, eq. 9/47),
  with log-partition A(lambda) = log E_p e^{lambda psi}, A' = E_q psi and
  A'' = Var_q psi (Remark D.5, eqs. 61-62).
- Calibration to a faithfulness level t by bisection (App H.3, eqs. 198-201):
  tau(t) solves E[psi | psi >= tau] = t, lambda(t) solves A'(lambda) = t. A level at
  or below the prior mean makes the KLSC constraint inactive: lambda = 0, q = p
  (Lemma D.4, first case).
- :func:`matched_comparison`: the App H.4 metrics of both families at one level t.

Truncations and tilts of an :class:`~klsc_lib.constraints.score_variable.EmpiricalScore` are
reweightings of the same sample, so any two of them compare exactly over it
(:mod:`klsc_lib.constraints.divergences`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from klsc_lib.constraints.calibration import bisect_increasing
from klsc_lib.constraints.divergences import kl_tilt, kl_truncation, kl_weights, tv_weights
from klsc_lib.constraints.score_variable import EmpiricalScore, Scalar


class TruncatableLaw(Protocol):
    """What :func:`calibrate_tau` needs: both score laws of :mod:`klsc_lib.constraints.score_variable`."""

    lower: float
    upper: float

    def mean(self) -> torch.Tensor: ...

    def truncated_mean(self, tau: Scalar) -> torch.Tensor: ...


def _lam_LN(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    lam = torch.as_tensor(lam, dtype=torch.float64, device=law.values.device)
    return lam.unsqueeze(-1)


def log_partition(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """A(lambda) = log sum_i w_i e^{lambda y_i} (log-sum-exp, eq. 201), batched over lambda."""
    return torch.logsumexp(law.log_weights + _lam_LN(law, lam) * law.values, dim=-1)


def _tilted_weights(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    return torch.softmax(law.log_weights + _lam_LN(law, lam) * law.values, dim=-1)


def tilted_mean(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """A'(lambda) = E_{q_lambda} psi, the achieved faithfulness t(lambda) (eq. 61)."""
    return (_tilted_weights(law, lam) * law.values).sum(-1)


def tilted_var(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """A''(lambda) = Var_{q_lambda} psi >= 0 (eq. 62): t(lambda) is non-decreasing."""
    w_LN = _tilted_weights(law, lam)
    mean_L = (w_LN * law.values).sum(-1, keepdim=True)
    return (w_LN * (law.values - mean_L) ** 2).sum(-1)


def tilted_mean_abs_dev(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """E_{q_lambda} |psi - A'(lambda)|, the numerator of v_soft (Lemma D.12, eq. 95)."""
    w_LN = _tilted_weights(law, lam)
    mean_L = (w_LN * law.values).sum(-1, keepdim=True)
    return (w_LN * (law.values - mean_L).abs()).sum(-1)


def truncate(law: EmpiricalScore, tau: float) -> EmpiricalScore:
    """p_tau: the prior conditioned on psi >= tau (Lemma D.1); rejection sampling
    from p in App H.2 keeps exactly these samples."""
    keep_N = law.values >= tau
    if not keep_N.any():
        raise ValueError(f"threshold tau={tau:.6g} is above every score value (max {law.upper:.6g}): "
                         "p(A_tau) = 0, choose a smaller tau")
    return EmpiricalScore(law.values, law.log_weights.masked_fill(~keep_N, -torch.inf))


def tilt(law: EmpiricalScore, lam: float) -> EmpiricalScore:
    """q_lambda: the prior reweighted by e^{lambda psi} (self-normalised importance
    sampling with proposal p, App H.2)."""
    return EmpiricalScore(law.values, law.log_weights + lam * law.values)


def calibrate_lambda(law: EmpiricalScore, t: float, lam_max: float = 50.0, tol: float = 1e-10,
                     max_iter: int = 200) -> float:
    """lambda(t) >= 0 with A'(lambda) = t (Remark D.5, eq. 200-201). Returns 0 when
    t <= E_p psi (inactive constraint); raises
    :class:`~klsc_lib.constraints.calibration.UnreachableTarget` naming the attainable range
    [E_p psi, A'(lam_max)] otherwise."""
    if t <= float(law.mean()):
        return 0.0
    return bisect_increasing(lambda lam: float(tilted_mean(law, lam)), t, 0.0, lam_max, tol=tol,
                             max_iter=max_iter, what="KLSC tilt strength lambda")


def calibrate_tau(law: TruncatableLaw, t: float, lo: float | None = None, hi: float | None = None,
                  tol: float = 1e-10, max_iter: int = 200) -> float:
    """tau(t) with E[psi | psi >= tau] = t (eq. 199), by bisection on a bracket that
    covers the observed score range (default [min psi, max psi] of a sample). Returns
    ``law.lower`` (no truncation, p_tau = p) when t <= E_p psi; raises
    :class:`~klsc_lib.constraints.calibration.UnreachableTarget` when t is above the attainable
    range. For a law on the whole line pass a finite bracket."""
    if t <= float(law.mean()):
        return law.lower
    lo = law.lower if lo is None else lo
    hi = law.upper if hi is None else hi
    return bisect_increasing(lambda tau: float(law.truncated_mean(tau)), t, lo, hi, tol=tol,
                             max_iter=max_iter, what="hard threshold tau")


def matched_comparison(law: EmpiricalScore, t: float, delta: float, eps: float, lam_max: float = 50.0,
                       tol: float = 1e-10, max_iter: int = 200) -> dict[str, float]:
    """App H.3-H.4 at one faithfulness level t, both families calibrated on ``law``:

    - ``tau``, ``lam`` and the achieved means ``t_hard``, ``t_soft`` (eq. 198);
    - boundary mass B_delta on the shell [tau, tau + delta) of the hard threshold,
      for p_tau and for q_lambda conditioned on A_tau (Def. 2.3, eq. 202);
    - finite-step instability TV(q_t, q_{t+eps}) after re-calibrating at t + eps (eq. 203);
    - KL(q || p): -log S(tau) and lambda t - A(lambda) (Lemma D.1, Remark D.5);
    - ``kl_hard_soft`` = KL(p_tau || q_lambda) and ``tv_hard_soft`` between the two.
    """
    tau, tau2 = (calibrate_tau(law, s, tol=tol, max_iter=max_iter) for s in (t, t + eps))
    lam, lam2 = (calibrate_lambda(law, s, lam_max, tol=tol, max_iter=max_iter) for s in (t, t + eps))
    hard, hard2, soft, soft2 = truncate(law, tau), truncate(law, tau2), tilt(law, lam), tilt(law, lam2)
    return {
        "t": t, "tau": tau, "lam": lam,
        "t_hard": float(hard.mean()), "t_soft": float(soft.mean()),
        "B_hard": float(hard.boundary_mass(tau, delta)), "B_soft": float(soft.boundary_mass(tau, delta)),
        "TV_hard": float(tv_weights(hard.log_weights, hard2.log_weights)),
        "TV_soft": float(tv_weights(soft.log_weights, soft2.log_weights)),
        "KL_hard": float(kl_truncation(law.log_survival(tau))),
        "KL_soft": float(kl_tilt(lam, log_partition(law, lam), tilted_mean(law, lam))),
        "kl_hard_soft": float(kl_weights(hard.log_weights, soft.log_weights)),
        "tv_hard_soft": float(tv_weights(hard.log_weights, soft.log_weights)),
    }
