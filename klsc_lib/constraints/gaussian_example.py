"""The canonical Gaussian example of App D.4.4 in closed form (eqs. 109-140,
Prop. D.13) and Theorem D.14's gap for it (App D.5).

Y = psi(X) ~ N(0, 1) under p. The hard threshold tau reaches t = r(tau) (inverse
Mills ratio); the KLSC tilt q_lambda is N(lambda, 1), so t = lambda. Matched
faithfulness therefore means lambda = r(tau).
"""

from __future__ import annotations

import math

import torch

from klsc_lib.constraints.calibration import calibrate_lambda
from klsc_lib.constraints.divergences import kl_truncation, kl_weights
from klsc_lib.constraints.hard_vs_tilt import kl_tilt, tilt, tilted_mean_abs_dev, tilted_var, truncate
from klsc_lib.constraints.score_variable import EmpiricalScore, Scalar, StandardNormalScore, inverse_mills_ratio, midpoint_grid_1d

NORMAL = StandardNormalScore()
V_SOFT = 1 / math.sqrt(2 * math.pi)  # eq. (123): constant KLSC TV speed
V_HARD_FLOOR = math.sqrt(math.pi / 2)  # eq. (136): v_hard >= this for tau >= 0


def _t(x: Scalar) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def v_hard(tau: Scalar) -> torch.Tensor:
    """Local TV speed of the hard path, 1 / m(tau) = 1 / (r(tau) - tau) (eq. 115, Lemma D.11)."""
    return 1 / NORMAL.mean_residual_life(tau)


def v_soft(t: Scalar) -> torch.Tensor:
    """Local TV speed of the KLSC path, E|Y - lambda| / (2 A'') = 1 / sqrt(2 pi) (eq. 123)."""
    return torch.full_like(_t(t), V_SOFT)


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


def mean_instability_hard(tau1: float, tau2: float) -> float:
    """Average hard TV speed over [t(tau1), t(tau2)]: (log Phi_bar(tau1) - log Phi_bar(tau2))
    / (r(tau2) - r(tau1)) (eq. 118)."""
    num = NORMAL.log_survival(tau1) - NORMAL.log_survival(tau2)
    return float(num / (inverse_mills_ratio(tau2) - inverse_mills_ratio(tau1)))


def anchor_row(tau: float, delta: float) -> dict[str, float]:
    """One row of RM §6's anchor table: KLSC at the matched level lambda = t = r(tau),
    B on the same shell [tau, tau + delta)."""
    t = inverse_mills_ratio(tau)
    return {
        "tau": tau,
        "t": float(t),
        "m": float(NORMAL.mean_residual_life(tau)),
        "v_hard": float(v_hard(tau)),
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
        "v_hard": 1 / float(law.mean_residual_life(tau)),
        "KL_hard": kl_h, "KL_soft": kl_s,
        "B_hard": float(law.boundary_mass(tau, delta)), "B_soft": float(soft.boundary_mass(tau, delta)),
        "lam": lam, "tilted_var": float(tilted_var(law, lam)),
        "v_soft": float(tilted_mean_abs_dev(law, lam) / (2 * tilted_var(law, lam))),
        "gap": kl_h - kl_s, "kl_hard_soft": float(kl_weights(hard.log_weights, soft.log_weights)),
    }


# RM §6 anchor table (delta = 0.1), to 6 decimals.
RM6_ANCHORS: dict[float, dict[str, float]] = {
    0.0: {"t": 0.797885, "m": 0.797885, "v_hard": 1.253314, "KL_hard": 0.693147, "KL_soft": 0.318310,
          "B_hard": 0.079656, "B_soft": 0.038292},
    0.5: {"t": 1.141078, "m": 0.641078, "v_hard": 1.559873, "KL_hard": 1.175912, "KL_soft": 0.651029,
          "B_hard": 0.111119, "B_soft": 0.045303},
    1.0: {"t": 1.525135, "m": 0.525135, "v_hard": 1.904271, "KL_hard": 1.841022, "KL_soft": 1.163019,
          "B_hard": 0.144900, "B_soft": 0.050874},
    2.0: {"t": 2.373216, "m": 0.373216, "v_hard": 2.679417, "KL_hard": 3.783184, "KL_soft": 2.816076,
          "B_hard": 0.214755, "B_soft": 0.058636},
    3.0: {"t": 3.283099, "m": 0.283099, "v_hard": 3.532338, "KL_hard": 6.607726, "KL_soft": 5.389368,
          "B_hard": 0.283203, "B_soft": 0.063472},
}
RM6_ANCHOR_DELTA = 0.1
RM6_MEAN_INSTABILITY_HARD_0_2 = 1.961516  # bar I_hard over tau in [0, 2]
