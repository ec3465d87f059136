"""Hard constraint vs. KLSC on a score law (paper Sec 2.2.2, App D.1, App H).

The one home of the tilt helpers (each takes the base law first):

- Hard truncation p_tau = p(. | psi >= tau) (Def. 2.1, Lemma D.1, eq. 6/43).
- KLSC tilt q_lambda = e^{lambda psi} p / Z(lambda) (Def. 2.2, Lemma D.4, eq. 9/47),
  with log-partition A(lambda) = log E_p e^{lambda psi}, A' = E_q psi and
  A'' = Var_q psi (Remark D.5, eqs. 61-62); KL(q_lambda || p) and Lemma D.9's
  KL(q_lambda || q_lambda') in closed form from A.
- A base law may itself be a tilt: ``EmpiricalScore(psi_N, energy_N)`` is
  q ∝ p e^{energy} on a pool drawn from p (self-normalised importance sampling),
  so task-injected tilts (App E) and Lemma F.1's tilted pool use the same helpers.

Calibration to a level t lives in :mod:`klsc_lib.constraints.calibration`.

Truncations and tilts of an :class:`~klsc_lib.constraints.score_variable.EmpiricalScore` are
reweightings of the same sample, so any two of them compare exactly over it
(:mod:`klsc_lib.constraints.divergences`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from klsc_lib.constraints.score_variable import EmpiricalScore, Scalar


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


def kl_tilt(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """KL(q_lambda || p) = lambda A'(lambda) - A(lambda) (Remark D.5, eq. 58), batched over lambda."""
    lam_L = torch.as_tensor(lam, dtype=torch.float64, device=law.values.device)
    return lam_L * tilted_mean(law, lam_L) - log_partition(law, lam_L)


def kl_between_tilts(law: EmpiricalScore, lam: Scalar, lam2: Scalar) -> torch.Tensor:
    """KL(q_lambda || q_lambda2) = (lambda - lambda2) A'(lambda) - (A(lambda) - A(lambda2))
    (Lemma D.9, eq. 72)."""
    lam_L = torch.as_tensor(lam, dtype=torch.float64, device=law.values.device)
    lam2_L = torch.as_tensor(lam2, dtype=torch.float64, device=law.values.device)
    return (lam_L - lam2_L) * tilted_mean(law, lam_L) - (log_partition(law, lam_L) - log_partition(law, lam2_L))


def effective_sample_size(law: EmpiricalScore) -> float:
    """1 / sum_i w_i^2 of the law's normalised weights; Lemma F.1's tilted pool
    collapses to its argmax, so this tends to 1 as lambda grows."""
    return float(1.0 / (2 * law.log_weights).exp().sum())


def resample(law: EmpiricalScore, pool_ND: torch.Tensor, n: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from the law (e.g. a tilt of a prior pool) by multinomial resampling of
    ``pool_ND``, the points whose scores are ``law.values`` (App H.2)."""
    if len(pool_ND) != law.values.numel():
        raise ValueError(f"pool has {len(pool_ND)} points but the law has {law.values.numel()} weights")
    idx = torch.multinomial(law.weights.cpu(), n, replacement=True, generator=generator)
    return pool_ND[idx.to(pool_ND.device)]


def task_distortion_lower_bound(task_law: EmpiricalScore, s: float, eta_max: float = 10.0) -> float:
    """Theorem E.3 (eq. 16): D_task(s) >= sup_{eta >= 0} eta s - Lambda(eta), with
    Lambda(eta) = log E_{q*} e^{eta g} = ``log_partition(task_law, eta)`` when
    ``task_law`` holds the task scores g under the intrinsic-only tilt q*. The objective
    is concave in eta; maximised on [0, eta_max] (eta = 0 gives 0)."""
    from scipy.optimize import minimize_scalar

    best = minimize_scalar(lambda eta: -(eta * s - float(log_partition(task_law, eta))),
                           bounds=(0.0, eta_max), method="bounded", options={"xatol": 1e-9})
    return max(-float(best.fun), 0.0)


class _TailLaw(Protocol):
    def log_survival(self, tau: Scalar) -> torch.Tensor: ...

    def truncated_mean(self, tau: Scalar) -> torch.Tensor: ...

    def mean_residual_life(self, tau: Scalar) -> torch.Tensor: ...


def v_hard(law: _TailLaw, tau: Scalar) -> torch.Tensor:
    """Local TV speed of the hard path in the faithfulness level, 1 / m(tau) (Lemma D.11,
    eq. 91); any score law with a mean residual life (the Gaussian: 1 / (r - tau), eq. 115)."""
    return 1 / law.mean_residual_life(tau)


def v_soft(law: EmpiricalScore, lam: Scalar) -> torch.Tensor:
    """Local TV speed of the KLSC path, E_q|psi - t| / (2 Var_q psi) (Lemma D.12, eq. 101)."""
    return tilted_mean_abs_dev(law, lam) / (2 * tilted_var(law, lam))


def mean_instability_hard(law: _TailLaw, tau1: float, tau2: float) -> float:
    """bar I_hard over [t(tau1), t(tau2)]: the accumulated hazard
    (log S(tau1) - log S(tau2)) / (t2 - t1) (App D.4, eqs. 102-106; the Gaussian eq. 118)."""
    dt = law.truncated_mean(tau2) - law.truncated_mean(tau1)
    return float((law.log_survival(tau1) - law.log_survival(tau2)) / dt)


def mean_instability_soft(law: EmpiricalScore, lam1: float, lam2: float, n: int = 401) -> float:
    """bar I_soft over [A'(lam1), A'(lam2)]: the accumulated mean absolute deviation
    1 / (2 (t2 - t1)) int_{lam1}^{lam2} E_q|psi - A'(lambda)| dlambda (App D.4, eq. 107),
    by Simpson's rule on ``n`` (odd) nodes."""
    from scipy.integrate import simpson

    lam_L = torch.linspace(lam1, lam2, n | 1, dtype=torch.float64, device=law.values.device)
    mad = torch.cat([tilted_mean_abs_dev(law, chunk) for chunk in lam_L.split(16)]).cpu().numpy()  # (16, N) at a time
    dt = float(tilted_mean(law, lam2) - tilted_mean(law, lam1))
    return float(simpson(mad, x=lam_L.cpu().numpy())) / (2 * dt)


def finite_step_speeds(law: EmpiricalScore, tau: float, lam: float, step: float) -> tuple[float, float]:
    """Finite versions of the local speeds: TV / |delta t| for central knob steps
    tau +- step (TV = 1 - S(tau+) / S(tau-), Lemma D.10) and lambda +- step (TV over the
    common sample); they tend to :func:`v_hard` and :func:`v_soft` as step -> 0
    (Lemmas D.11-D.12), with an O(step) error."""
    from klsc_lib.constraints.divergences import tv_between_truncations, tv_weights

    lo, hi = tau - step, tau + step
    hard = tv_between_truncations(law.survival(lo), law.survival(hi)) / (law.truncated_mean(hi) - law.truncated_mean(lo))
    soft = tv_weights(tilt(law, lam - step).log_weights, tilt(law, lam + step).log_weights) / (
        tilted_mean(law, lam + step) - tilted_mean(law, lam - step))
    return float(hard), float(soft)


def knob_perturbations(law: EmpiricalScore, tau: float, lam: float, eps: list[float]) -> list[dict[str, float]]:
    """Lemmas D.8-D.9 per knob perturbation eps: the shell mass S(tau) - S(tau + eps),
    KL(p_tau || p_(tau+eps)) (infinite whenever the shell holds mass) and
    KL(q_lam || q_(lam+eps)) / (eps^2 Var_q psi / 2), which tends to 1 as eps -> 0."""
    from klsc_lib.constraints.divergences import kl_weights

    var = float(tilted_var(law, lam))
    return [{"eps": e, "shell_mass": float(law.survival(tau) - law.survival(tau + e)),
             "KL_hard": float(kl_weights(truncate(law, tau).log_weights, truncate(law, tau + e).log_weights)),
             "KL_soft_ratio": float(kl_between_tilts(law, lam, lam + e)) / (0.5 * e**2 * var)} for e in eps]
