"""The exact answer on a pool: the KLSC tilt q* and the hard truncation at a level t,
as reweightings of N draws from the prior (paper Sec 2.2.2, App D.1, H.2-H.3).

Given scores psi_N of N draws x_i ~ p and a target t:

- :func:`solve_tilt`: q* ∝ p e^{lambda psi} with E_{q*} psi = t (Def. 2.2, Lemma D.4),
  self-normalised weights w_i ∝ e^{lambda psi_i}; lambda by Brent's method on the
  log-sum-exp-stable tilted mean A'(lambda) (Remark D.5, eqs. 61, 200-201), its
  bracket grown until it holds the root. KL(q* || p) = lambda t - A(lambda) (eq. 58).
- :func:`solve_truncation`: p_tau = p(. | psi >= tau) with E[psi | psi >= tau] = t
  (Def. 2.1, Lemma D.1, eq. 199); KL(p_tau || p) = -log S(tau) (eq. 46).
- :func:`tilt_at`: the tilt with a given lambda; :func:`exact_reference` both laws at one
  level, :func:`pool_references` for each of U units of one pool (:func:`first_reachable`
  picks the units whose level the pool reaches);
  :func:`prior_sample_tilts`: samples of a learned prior reweighted like the reference.

Run on draws from the world's own generator these are the exact target laws up to
Monte Carlo error (the ESS says how much); run on samples of a learned prior they
are that prior's exact tilt, which separates the prior's error from a sampler's.
The constraint is an inequality: levels at or below E_p psi give q* = p (lambda = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from klsc_lib.constraints.calibration import UnreachableTarget, solve_scalar
from klsc_lib.constraints.divergences import kl_truncation
from klsc_lib.constraints.hard_vs_tilt import effective_sample_size, kl_tilt, tilt, tilted_mean, truncate
from klsc_lib.constraints.score_variable import EmpiricalScore

MAX_DOUBLINGS = 200  # bracket growth for lambda: 2^200 times the first guess


@dataclass(frozen=True)
class Reweighting:
    """A law on a pool of prior draws: normalised log-weights over the pool's N points."""

    kind: Literal["tilt", "truncation"]
    knob: float  # lambda for the tilt, tau for the truncation
    log_w_N: torch.Tensor
    mean_psi: float  # E_w psi, the achieved level
    ess: float  # 1 / sum w_i^2
    kl_to_prior: float  # KL(q || p): lambda t - A(lambda) or -log S(tau)

    @property
    def w_N(self) -> torch.Tensor:
        return self.log_w_N.exp()

    def histogram(self, values_N: torch.Tensor, size: int) -> torch.Tensor:
        """(size,) weighted histogram of integer values (a factor) of the pool's points."""
        return weighted_histogram(values_N, self.w_N, size)

    def resample_indices(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) pool indices drawn from the law (multinomial resampling, App H.2)."""
        return torch.multinomial(self.w_N.cpu(), n, replacement=True, generator=generator)


@dataclass(frozen=True)
class ExactReference:
    """q* and p_tau at level ``t`` on one pool with scores ``psi_N``."""

    psi_N: torch.Tensor
    t: float
    tilt: Reweighting
    truncation: Reweighting


def checked_scores(psi_N: torch.Tensor) -> torch.Tensor:
    """``psi_N`` as a float64 1-D tensor; raises on NaN or infinite scores."""
    psi_N = torch.as_tensor(psi_N)
    if psi_N.ndim != 1 or psi_N.numel() == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor psi_N, got shape {tuple(psi_N.shape)}")
    psi_N = psi_N.detach().to(torch.float64)
    bad = ~torch.isfinite(psi_N)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {psi_N.numel()} scores are NaN or infinite (first at index "
                         f"{int(bad.nonzero()[0])}); fix the score function or drop those draws first")
    return psi_N


def _unreachable(t: float, psi_N: torch.Tensor) -> UnreachableTarget:
    return UnreachableTarget(
        f"target t={t:.6g} is at or above the pool's largest score {float(psi_N.max()):.6g}: no reweighting "
        f"of these {psi_N.numel()} draws reaches it (the tilt only as lambda -> inf); draw a larger pool or "
        "lower t")


def tilt_at(psi_N: torch.Tensor, lam: float) -> Reweighting:
    """The tilt q_lambda ∝ p e^{lambda psi} of the pool at a given lambda >= 0 (Def. 2.2),
    its achieved mean A'(lambda), ESS and KL(q_lambda || p) = lambda A' - A (eq. 58)."""
    if not lam >= 0:
        raise ValueError(f"the KLSC multiplier lambda must be >= 0 (Lemma D.4), got {lam}")
    law = EmpiricalScore(checked_scores(psi_N))
    q = tilt(law, lam)
    return Reweighting("tilt", float(lam), q.log_weights, float(q.mean()), effective_sample_size(q),
                       float(kl_tilt(law, lam)))


def solve_tilt(psi_N: torch.Tensor, t: float) -> Reweighting:
    """q* at level t: lambda >= 0 with E_w psi = t for w_i ∝ e^{lambda psi_i} (Remark D.5).

    Brent's method on A'(lambda) (softmax-weighted, so stable for any lambda) in a
    bracket [0, h] doubled from h = 1 / sd(psi) until A'(h) >= t. Levels at or below the
    pool mean give lambda = 0 (the inactive inequality, Lemma D.4); a level at or above
    the largest score raises :class:`UnreachableTarget`."""
    psi_N = checked_scores(psi_N)
    t = float(t)
    if t <= float(psi_N.mean()):
        return tilt_at(psi_N, 0.0)
    if t >= float(psi_N.max()):
        raise _unreachable(t, psi_N)
    law = EmpiricalScore(psi_N)
    mean_at = lambda lam: float(tilted_mean(law, lam))  # noqa: E731
    hi = 1.0 / float(psi_N.std())
    for _ in range(MAX_DOUBLINGS):
        if mean_at(hi) >= t:
            break
        hi *= 2
    lam = solve_scalar(mean_at, t, 0.0, hi, what="KLSC tilt strength lambda")
    return tilt_at(psi_N, lam)


def solve_truncation(psi_N: torch.Tensor, t: float) -> Reweighting:
    """p_tau at level t: the largest upper set {psi >= tau} of the pool whose mean reaches t
    (eq. 199). A pool's truncated mean is a step function of tau, so tau is the smallest
    pool score with E[psi | psi >= tau] >= t and the achieved mean lies in [t, the next
    step). Levels at or below the pool mean keep the whole pool."""
    psi_N = checked_scores(psi_N)
    t = float(t)
    if t > float(psi_N.max()):
        raise _unreachable(t, psi_N)
    law = EmpiricalScore(psi_N)
    levels_L = torch.unique(psi_N)  # ascending; the truncated mean is non-decreasing along it
    tau = float(levels_L[int((law.truncated_mean(levels_L) < t).sum())])
    q = truncate(law, tau)
    kl = float(kl_truncation(law.log_survival(tau)))
    return Reweighting("truncation", tau, q.log_weights, float(q.mean()), effective_sample_size(q), kl)


def exact_reference(psi_N: torch.Tensor, t: float) -> ExactReference:
    """Both exact laws at level t on one pool: :func:`solve_tilt` and :func:`solve_truncation`.
    Theorem D.14: at a matched mean, KL(q* || p) <= KL(p_tau || p)."""
    psi_N = checked_scores(psi_N)
    return ExactReference(psi_N, float(t), solve_tilt(psi_N, t), solve_truncation(psi_N, t))



def prior_sample_tilts(psi_M: torch.Tensor, ref: ExactReference) -> tuple[Reweighting, Reweighting]:
    """Samples of a learned prior p_theta reweighted like the reference: (its own exact
    tilt at the same level t, q*'s lambda applied to it). A sampler of the tilt of p_theta
    is judged against the first (sampler error alone); the first against q* is the
    prior's error. Raises :class:`UnreachableTarget` when t is above every sample's psi."""
    return solve_tilt(psi_M, ref.t), tilt_at(psi_M, ref.tilt.knob)


def weighted_histogram(values_N: torch.Tensor, w_N: torch.Tensor, size: int) -> torch.Tensor:
    """(size,) float64 sum of the weights ``w_N`` per integer value in [0, size)."""
    values_N = torch.as_tensor(values_N)
    if values_N.shape != w_N.shape or values_N.ndim != 1:
        raise ValueError(f"need values and weights of one 1-D shape, got {tuple(values_N.shape)}, "
                         f"{tuple(w_N.shape)}")
    if values_N.dtype.is_floating_point or (values_N.numel() and (values_N.min() < 0 or values_N.max() >= size)):
        raise ValueError(f"values must be integer ids in [0, {size})")
    return torch.bincount(values_N.long().cpu(), weights=w_N.to(torch.float64).cpu(), minlength=size)



def first_reachable(psi_NU: torch.Tensor, target_U: torch.Tensor, n: int) -> torch.Tensor:
    """Positions (in order) of the first ``n`` of U units whose level the pool reaches: t
    below the unit's largest score (at or above it the tilt exists only as lambda -> inf).
    Raises :class:`UnreachableTarget` when fewer than ``n`` are reachable."""
    psi_NU, target_U = torch.as_tensor(psi_NU), torch.as_tensor(target_U).reshape(-1)
    if psi_NU.ndim != 2 or psi_NU.shape[1] != len(target_U):
        raise ValueError(f"need psi_NU (N, U) and one target per unit, got {tuple(psi_NU.shape)} and "
                         f"{len(target_U)} targets")
    ok_U = target_U.to(psi_NU.dtype) < psi_NU.max(dim=0).values
    if int(ok_U.sum()) < n:
        raise UnreachableTarget(f"the pool of {len(psi_NU)} draws reaches the level t of only {int(ok_U.sum())} "
                                f"of {len(target_U)} units, fewer than the {n} asked for: draw a larger pool or "
                                "more units")
    return ok_U.nonzero().flatten()[:n]


def pool_references(psi_NU: torch.Tensor, target_U: torch.Tensor) -> list[ExactReference]:
    """:func:`exact_reference` of each of U units on one pool: column u of ``psi_NU`` at level
    ``target_U[u]``. An unreachable level names the unit."""
    psi_NU, target_U = torch.as_tensor(psi_NU), torch.as_tensor(target_U).reshape(-1)
    if psi_NU.ndim != 2 or psi_NU.shape[1] != len(target_U):
        raise ValueError(f"need psi_NU (N, U) and one target per unit, got {tuple(psi_NU.shape)} and "
                         f"{len(target_U)} targets")
    refs = []
    for u, t in enumerate(target_U.tolist()):
        try:
            refs.append(exact_reference(psi_NU[:, u], t))
        except ValueError as err:
            raise type(err)(f"unit at position {u}: {err}") from err
    return refs
