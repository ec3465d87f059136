"""The canonical Gaussian example of App D.4.4 in closed form (eqs. 109-140,
Prop. D.13) and Theorem D.14's gap for it (App D.5).

Y = psi(X) ~ N(0, 1) under p. The hard threshold tau reaches t = r(tau) (inverse
Mills ratio); the KLSC tilt q_lambda is N(lambda, 1), so t = lambda. Matched
faithfulness therefore means lambda = r(tau).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from klsc_lib.constraints.calibration import calibrate_lambda
from klsc_lib.constraints.divergences import kl_truncation, kl_weights
from klsc_lib.constraints.hard_vs_tilt import kl_tilt, tilt, tilted_var, truncate, v_hard, v_soft
from klsc_lib.constraints.score_variable import EmpiricalScore, Scalar, StandardNormalScore, inverse_mills_ratio, midpoint_grid_1d

NORMAL = StandardNormalScore()
V_SOFT = 1 / math.sqrt(2 * math.pi)  # eq. (123): constant KLSC TV speed
V_HARD_FLOOR = math.sqrt(math.pi / 2)  # eq. (136): v_hard >= this for tau >= 0
TAU_STAR = -2.48847  # below it v_hard < v_soft: Prop. D.13 needs tau >= 0 (or tau > TAU_STAR)
ANCHOR_KEYS = ("t", "m", "v_hard", "KL_hard", "KL_soft", "B_hard", "B_soft")  # the compared fields of an anchor row


def _t(x: Scalar) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def kl_hard(tau: Scalar) -> torch.Tensor:
    """KL(p_tau || p) = -log Phi_bar(tau)."""
    return -NORMAL.log_survival(tau)


def kl_soft(t: Scalar) -> torch.Tensor:
    """KL(q_lambda || p) with lambda = t: lambda t - lambda^2 / 2 = t^2 / 2."""
    return _t(t) ** 2 / 2


def interpretability_gap(tau: Scalar) -> torch.Tensor:
    """KL(p_tau || p) - KL(q* || p) at matched mean = -log Phi_bar(tau) - r(tau)^2 / 2,
    which Theorem D.14 makes equal to KL(p_tau || q*) >= 0 (App D.5)."""
    return kl_hard(tau) - kl_soft(inverse_mills_ratio(tau))


def boundary_mass_soft(tau: Scalar, lam: Scalar, delta: float) -> torch.Tensor:
    """B_delta(q_lambda | A_tau) = 1 - Phi_bar(tau + delta - lambda) / Phi_bar(tau - lambda) (Lemma D.7)."""
    shifted = _t(tau) - _t(lam)
    return -torch.expm1(NORMAL.log_survival(shifted + delta) - NORMAL.log_survival(shifted))


def tilted_hazard(tau: Scalar, lam: Scalar) -> torch.Tensor:
    """h_lambda(tau) = r(tau - lambda), the effective boundary hazard of the tilt (Lemma D.7)."""
    return inverse_mills_ratio(_t(tau) - _t(lam))


def anchor_row(tau: float, delta: float) -> dict[str, float]:
    """Closed forms at one threshold: KLSC at the matched level lambda = t = r(tau),
    B on the same shell [tau, tau + delta) (eqs. 112-124, Lemma D.7)."""
    t = inverse_mills_ratio(tau)
    return {
        "tau": tau,
        "t": float(t),
        "m": float(NORMAL.mean_residual_life(tau)),
        "v_hard": float(v_hard(NORMAL, tau)),
        "KL_hard": float(kl_hard(tau)),
        "KL_soft": float(kl_soft(t)),
        "B_hard": float(NORMAL.boundary_mass(tau, delta)),
        "B_soft": float(boundary_mass_soft(tau, t, delta)),
    }


def normal_quadrature_law(lo: float, hi: float, n: int, device: torch.device | str = "cpu") -> EmpiricalScore:
    """N(0, 1) as a midpoint-rule quadrature law on [lo, hi] (n cells): the numerical
    twin of :data:`NORMAL`, handled only through the generic score-law code."""
    y_G, log_width = midpoint_grid_1d(lo, hi, n, device)
    return EmpiricalScore(y_G, -0.5 * y_G**2 - 0.5 * math.log(2 * math.pi) + log_width)


def numeric_anchor_row(law: EmpiricalScore, tau: float, delta: float, lam_max: float = 50.0,
                       tol: float = 1e-13) -> dict[str, float]:
    """:func:`anchor_row` computed numerically on any score law with no Gaussian
    formula: t and m from the truncated law, lambda by bisection on A'(lambda) = t,
    v_hard = 1 / m (Lemma D.11), v_soft = E_q|psi - t| / (2 Var_q psi) (Lemma D.12),
    and the Theorem D.14 pieces KL(p_tau || q*) and the gap."""
    t = float(law.truncated_mean(tau))
    lam = calibrate_lambda(law, t, lam_max, tol=tol)
    hard, soft = truncate(law, tau), tilt(law, lam)
    kl_h = float(kl_truncation(law.log_survival(tau)))
    kl_s = float(kl_tilt(law, lam))
    return {
        "tau": tau, "t": t, "m": float(law.mean_residual_life(tau)),
        "v_hard": float(v_hard(law, tau)),
        "KL_hard": kl_h, "KL_soft": kl_s,
        "B_hard": float(law.boundary_mass(tau, delta)), "B_soft": float(soft.boundary_mass(tau, delta)),
        "lam": lam, "tilted_var": float(tilted_var(law, lam)),
        "v_soft": float(v_soft(law, lam)),
        "gap": kl_h - kl_s, "kl_hard_soft": float(kl_weights(hard.log_weights, soft.log_weights)),
    }


def scipy_anchor_row(tau: float, delta: float) -> dict[str, float]:
    """:func:`anchor_row` with none of its formulas: truncated moments from
    ``scipy.stats.truncnorm``, survival from ``scipy.stats.norm``, the tilt's mean, KL
    and shell mass by adaptive quadrature (``scipy.integrate.quad``) of
    e^{lambda y} phi(y), lambda found by Brent's method on the quadrature mean."""
    from scipy import integrate, stats
    from scipy.optimize import brentq

    def tilt_integral(lam: float, f=lambda y: 1.0, lo: float = -math.inf, hi: float = math.inf) -> float:
        """int_lo^hi f(y) e^{lambda y} phi(y) dy, the exponent kept in one piece (no overflow)."""
        return integrate.quad(lambda y: f(y) * math.exp(lam * y - y * y / 2) / math.sqrt(2 * math.pi), lo, hi,
                              epsabs=0, epsrel=1e-13, limit=400)[0]

    trunc = stats.truncnorm(tau, math.inf)
    t = float(trunc.mean())
    lam = brentq(lambda l: tilt_integral(l, lambda y: y) / tilt_integral(l) - t, 0.0, 20.0, xtol=1e-14)
    log_z = math.log(tilt_integral(lam))
    upper, shell = tilt_integral(lam, lo=tau), tilt_integral(lam, lo=tau, hi=tau + delta)
    return {
        "tau": tau, "t": t, "m": t - tau, "v_hard": 1 / (t - tau),
        "KL_hard": -float(stats.norm.logsf(tau)),
        "KL_soft": lam * t - log_z,  # E_q log(q / p) = lambda E_q y - log Z, with E_q y = t by construction
        "B_hard": float(trunc.cdf(tau + delta)), "B_soft": shell / upper,
    }


def anchor_tables(taus: Sequence[float], delta: float, law: EmpiricalScore,
                  lam_max: float = 50.0) -> tuple[list[dict[str, float]], list[dict[str, float]], list[dict[str, float]]]:
    """The App D.4.4 anchors three ways per threshold: :func:`anchor_row` (closed forms),
    :func:`scipy_anchor_row` (SciPy) and :func:`numeric_anchor_row` on ``law`` (generic code)."""
    closed = [anchor_row(tau, delta) for tau in taus]
    scipy_rows = [scipy_anchor_row(tau, delta) for tau in taus]
    numeric = [numeric_anchor_row(law, tau, delta, lam_max) for tau in taus]
    return closed, scipy_rows, numeric


def max_rel_deviation(reference: list[dict[str, float]], rows: list[dict[str, float]],
                      keys: tuple[str, ...] = ANCHOR_KEYS) -> float:
    """max over paired rows and ``keys`` of |row[k] - reference[k]| / |reference[k]| (App D.4.4 checks)."""
    if len(reference) != len(rows):
        raise ValueError(f"need one row per reference row, got {len(rows)} for {len(reference)}")
    return max(abs(r[k] - c[k]) / abs(c[k]) for c, r in zip(reference, rows) for k in keys)
