"""Matched-faithfulness calibration (paper Remark D.5, App H.3 eqs. 198-201, App I):
find the knob of a method whose achieved mean score hits a target level t.

- :func:`bisect`: vectorised bisection over a tensor of knobs, one per target, all
  halving together, for a response that is monotone (increasing or decreasing) in
  its knob. Used where many targets share one batched response (the tilted mean
  A'(lambda) of Remark D.5, the truncated mean of eq. 199).
- :func:`solve_scalar`: one knob, one target, by Brent's method (``scipy.optimize.brentq``).
- :func:`calibrate_lambda`, :func:`calibrate_tau`: the KLSC strength and the hard
  threshold on a score law (eqs. 199-201), batched over levels t.
- :func:`calibrate_knob`: a stochastic method (each knob value draws a sample set),
  stopped at the first knob within tolerance; only the closest sample set is kept.
- :func:`matched_comparison`: App H.4's metrics of both families at one level t;
  :func:`summarize_seeds` their mean and spread over seeds.

Every solver raises :class:`UnreachableTarget`, naming the attainable range, when a
target lies outside what the knob bracket can reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from klsc_lib.constraints.divergences import kl_truncation, kl_weights, tv_weights
from klsc_lib.constraints.hard_vs_tilt import kl_tilt, tilt, tilted_mean, truncate, v_hard, v_soft
from klsc_lib.constraints.score_variable import EmpiricalScore, Scalar


class UnreachableTarget(ValueError):
    """The target level lies outside what a method can attain over its knob range."""


def _unreachable(what: str, targets: torch.Tensor, f_lo: torch.Tensor, f_hi: torch.Tensor,
                 lo: torch.Tensor, hi: torch.Tensor, bad: torch.Tensor) -> UnreachableTarget:
    idx = bad.nonzero()[0].tolist() if bad.ndim else []
    at = tuple(idx)
    lines = [f"target {float(targets[at]):.6g} is outside the attainable range "
             f"[{float(torch.minimum(f_lo[at], f_hi[at])):.6g}, {float(torch.maximum(f_lo[at], f_hi[at])):.6g}] "
             f"of {what} in [{float(lo[at]):.6g}, {float(hi[at]):.6g}]"]
    if int(bad.sum()) > 1:
        lines.append(f"({int(bad.sum())} of {bad.numel()} targets are outside)")
    return UnreachableTarget(" ".join(lines) + f"; choose a target inside it or widen the {what} bracket")


def bisect(fn: Callable[[torch.Tensor], torch.Tensor], target: Scalar, lo: Scalar, hi: Scalar, *,
           increasing: bool = True, tol: float = 1e-10, max_iter: int = 200, what: str = "knob") -> torch.Tensor:
    """Knobs x (shape of ``target``) with ``fn(x) = target``, elementwise, by bisection.

    ``fn`` maps a float64 tensor of knobs to the responses of the same shape, each
    monotone in its own knob (non-decreasing, or non-increasing with
    ``increasing=False``) on ``[lo, hi]`` (broadcast to the target's shape). All
    brackets halve together until every one is narrower than ``tol`` or after
    ``max_iter`` halvings; the midpoints are returned. Raises
    :class:`UnreachableTarget` naming the attainable range when a target lies outside
    ``[fn(lo), fn(hi)]``.
    """
    target = torch.as_tensor(target, dtype=torch.float64)
    lo_S = torch.as_tensor(lo, dtype=torch.float64, device=target.device).expand_as(target).clone()
    hi_S = torch.as_tensor(hi, dtype=torch.float64, device=target.device).expand_as(target).clone()
    if torch.isnan(target).any():
        raise ValueError("NaN in calibration targets")
    if not (hi_S >= lo_S).all():
        raise ValueError(f"empty {what} bracket: need hi >= lo")
    sign = 1.0 if increasing else -1.0
    f_lo, f_hi = fn(lo_S), fn(hi_S)
    bad = ~((sign * f_lo <= sign * target) & (sign * target <= sign * f_hi))
    if bad.any():
        raise _unreachable(what, target, f_lo, f_hi, lo_S, hi_S, bad)
    for _ in range(max_iter):
        if ((hi_S - lo_S) <= tol).all():
            break
        mid = 0.5 * (lo_S + hi_S)
        below = sign * fn(mid) < sign * target
        lo_S = torch.where(below, mid, lo_S)
        hi_S = torch.where(below, hi_S, mid)
    return 0.5 * (lo_S + hi_S)


def solve_scalar(fn: Callable[[float], float], target: float, lo: float, hi: float, *, xtol: float = 1e-12,
                 what: str = "knob") -> float:
    """The knob in ``[lo, hi]`` with ``fn(x) = target`` for a monotone scalar ``fn``, by
    Brent's method; raises :class:`UnreachableTarget` when ``target`` is not between
    ``fn(lo)`` and ``fn(hi)``."""
    from scipy.optimize import brentq

    f_lo, f_hi = fn(lo) - target, fn(hi) - target
    if f_lo == 0.0:
        return lo
    if f_hi == 0.0:
        return hi
    if f_lo * f_hi > 0:
        ends = sorted((f_lo + target, f_hi + target))
        raise UnreachableTarget(f"target {target:.6g} is outside the attainable range [{ends[0]:.6g}, {ends[1]:.6g}] "
                                f"of {what} in [{lo:.6g}, {hi:.6g}]; choose a target inside it or widen the "
                                f"{what} bracket")
    return float(brentq(lambda x: fn(x) - target, lo, hi, xtol=xtol, rtol=4 * 2.0**-52, maxiter=500))


def _like(out: torch.Tensor, t: Scalar) -> float | torch.Tensor:
    return float(out) if not isinstance(t, torch.Tensor) else out


class TruncatableLaw(Protocol):
    """What :func:`calibrate_tau` needs: both score laws of :mod:`klsc_lib.constraints.score_variable`."""

    lower: float
    upper: float

    def mean(self) -> torch.Tensor: ...

    def truncated_mean(self, tau: Scalar) -> torch.Tensor: ...


def calibrate_lambda(law: EmpiricalScore, t: Scalar, lam_max: float = 50.0, tol: float = 1e-10,
                     max_iter: int = 200) -> float | torch.Tensor:
    """lambda(t) >= 0 with A'(lambda) = t (Remark D.5, eqs. 200-201), batched over a
    tensor of levels (a float in, a float out). Levels at or below E_p psi give 0 (the
    inactive constraint, Lemma D.4); raises :class:`UnreachableTarget` naming
    [E_p psi, A'(lam_max)] for levels above it."""
    t_S = torch.as_tensor(t, dtype=torch.float64, device=law.values.device)
    active = t_S > law.mean()
    lam_S = torch.zeros_like(t_S)
    if active.any():
        lam_S[active] = bisect(lambda lam: tilted_mean(law, lam), t_S[active], 0.0, lam_max, tol=tol,
                               max_iter=max_iter, what="KLSC tilt strength lambda")
    return _like(lam_S, t)


def calibrate_tau(law: TruncatableLaw, t: Scalar, lo: float | None = None, hi: float | None = None,
                  tol: float = 1e-10, max_iter: int = 200) -> float | torch.Tensor:
    """tau(t) with E[psi | psi >= tau] = t (eq. 199), by bisection on a bracket that
    covers the observed score range (default [min psi, max psi] of a sample), batched
    over levels. Levels at or below E_p psi give ``law.lower`` (p_tau = p); raises
    :class:`UnreachableTarget` above the attainable range. For a law on the whole
    line pass a finite bracket."""
    t_S = torch.as_tensor(t, dtype=torch.float64)
    active = t_S > law.mean().to(t_S)
    tau_S = torch.full_like(t_S, law.lower)
    if active.any():
        lo = law.lower if lo is None else lo
        hi = law.upper if hi is None else hi
        tau_S[active] = bisect(lambda tau: law.truncated_mean(tau).to(t_S), t_S[active], lo, hi, tol=tol,
                               max_iter=max_iter, what="hard threshold tau")
    return _like(tau_S, t)


def matched_comparison(law: EmpiricalScore, t: float, delta: float, eps: float, lam_max: float = 50.0,
                       tol: float = 1e-10, max_iter: int = 200) -> dict[str, float]:
    """App H.3-H.4 at one faithfulness level t, both families calibrated on ``law``:

    - ``tau``, ``lam`` and the achieved means ``t_hard``, ``t_soft`` (eq. 198);
    - boundary mass B_delta on the shell [tau, tau + delta) of the hard threshold,
      for p_tau and for q_lambda conditioned on A_tau (Def. 2.3, eq. 202);
    - finite-step instability TV(q_t, q_{t+eps}) after re-calibrating at t + eps (eq. 203);
    - KL(q || p): -log S(tau) and lambda t - A(lambda) (Lemma D.1, Remark D.5);
    - ``kl_hard_soft`` = KL(p_tau || q_lambda) and ``tv_hard_soft`` between the two;
    - the local TV speeds ``v_hard`` = 1 / m(tau) and ``v_soft`` = E_q|psi - t| / (2 Var_q psi)
      (Lemmas D.11-D.12), the eps -> 0 limits of TV / eps.
    """
    levels = torch.tensor([t, t + eps], dtype=torch.float64)
    tau, tau2 = calibrate_tau(law, levels, tol=tol, max_iter=max_iter).tolist()
    lam, lam2 = calibrate_lambda(law, levels, lam_max, tol=tol, max_iter=max_iter).tolist()
    hard, hard2, soft, soft2 = truncate(law, tau), truncate(law, tau2), tilt(law, lam), tilt(law, lam2)
    return {
        "t": t, "tau": tau, "lam": lam,
        "t_hard": float(hard.mean()), "t_soft": float(soft.mean()),
        "B_hard": float(hard.boundary_mass(tau, delta)), "B_soft": float(soft.boundary_mass(tau, delta)),
        "TV_hard": float(tv_weights(hard.log_weights, hard2.log_weights)),
        "TV_soft": float(tv_weights(soft.log_weights, soft2.log_weights)),
        "KL_hard": float(kl_truncation(law.log_survival(tau))),
        "KL_soft": float(kl_tilt(law, lam)),
        "kl_hard_soft": float(kl_weights(hard.log_weights, soft.log_weights)),
        "tv_hard_soft": float(tv_weights(hard.log_weights, soft.log_weights)),
        "v_hard": float(v_hard(law, tau)), "v_soft": float(v_soft(law, lam)),
    }


def summarize_seeds(rows_by_seed: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Mean and standard deviation over seeds of :func:`matched_comparison` rows (one
    list of rows per seed, same levels in the same order): key ``k`` holds the mean,
    ``k_std`` the standard deviation (ddof 1), ``n_seeds`` the count."""
    out = []
    for rows in zip(*rows_by_seed):
        v = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}
        out.append({**{k: float(x.mean()) for k, x in v.items()},
                    **{f"{k}_std": float(x.std()) if len(rows) > 1 else 0.0 for k, x in v.items()},
                    "n_seeds": len(rows)})
    return out


@dataclass(frozen=True)
class Calibrated:
    """Outcome of calibrating ``method`` at ``target``; ``samples`` is None when unreachable."""

    method: str
    target: float
    knob: float | None
    samples: torch.Tensor | None
    mean_psi: float | None
    reached: bool
    message: str = ""
    attainable: tuple[float, float] | None = None  # (min, max) mean psi seen over the knob range


def calibrate_knob(draw: Callable[[float], torch.Tensor], psi: Callable[[torch.Tensor], torch.Tensor],
                   target: float, lo: float, hi: float, tol: float, max_iter: int = 30,
                   increasing: bool = True, method: str = "method", knob_name: str = "knob") -> Calibrated:
    """Bisect ``knob`` in [lo, hi] until mean psi(draw(knob)) is within ``tol`` of ``target``
    (App I, matched faithfulness with one sample budget for every method).

    ``draw(knob)`` returns the method's samples for that knob (use common random
    numbers, i.e. a freshly seeded generator per call, so the mean is a deterministic,
    monotone function of the knob). ``increasing=False`` for knobs that lower the
    mean (the OR weight beta). Only the sample set closest to the target is kept; it
    is ``reached`` only if within ``tol``. An unattainable target is not an error for
    the comparison: it returns ``reached=False`` with the attainable range.
    """
    sign = 1.0 if increasing else -1.0
    best: tuple[float, float, torch.Tensor] | None = None  # (knob, mean, samples)
    seen: list[float] = []

    def evaluate(knob: float) -> float:
        nonlocal best
        samples = draw(knob)
        mean = float(psi(samples).mean())
        seen.append(mean)
        if best is None or abs(mean - target) < abs(best[1] - target):
            best = (knob, mean, samples)
        return mean

    m_lo, m_hi = evaluate(lo), evaluate(hi)
    if not sign * m_lo - tol <= sign * target <= sign * m_hi + tol:
        ends = sorted((m_lo, m_hi))
        return Calibrated(method, target, None, None, None, False,
                          f"{method}: target {target:.4g} is outside the attainable mean psi range "
                          f"[{ends[0]:.4g}, {ends[1]:.4g}] over {knob_name} in [{lo:.4g}, {hi:.4g}]",
                          (ends[0], ends[1]))
    for _ in range(max_iter):
        if abs(best[1] - target) <= tol:
            break
        mid = 0.5 * (lo + hi)
        if sign * evaluate(mid) < sign * target:
            lo = mid
        else:
            hi = mid
    knob, mean, samples = best
    attainable = (min(seen), max(seen))
    if abs(mean - target) <= tol:
        return Calibrated(method, target, knob, samples, mean, True, attainable=attainable)
    return Calibrated(method, target, knob, samples, mean, False,
                      f"{method}: closest mean psi {mean:.4g} (|gap| {abs(mean - target):.3g} > tol {tol}) "
                      f"after {len(seen)} evaluations of {knob_name}", attainable)
