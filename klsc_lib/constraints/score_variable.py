"""The 1-D score-variable view of paper App D.2-D.4.

Everything the hard constraint and KLSC do to a prior p is seen through the scalar
Y = psi(X), X ~ p: its survival S(tau) = P(Y >= tau) (the mass of the upper set
A_tau of Def. 2.1), CDF F = 1 - S, hazard h = f / S (eqs. 11, 64, 79), mean
residual life m(tau) = E[Y - tau | Y >= tau] (eq. 79) and the truncated mean
t_hard(tau) = tau + m(tau) (eq. 78).

Two laws of Y share these method names:

- :class:`EmpiricalScore`: a weighted sample {(y_i, w_i)}. It covers Monte Carlo
  prior samples (uniform weights, App H.3), quadrature grids (w_i = density x cell
  size) and every reweighting of them (truncations and tilts, see
  :mod:`klsc_lib.constraints.hard_vs_tilt`). Its hazard is the finite-shell hazard B_delta / delta
  (Lemma D.6), since a sample has no density.
- :class:`StandardNormalScore`: Y ~ N(0, 1), the canonical example of App D.4.4,
  in closed form (hazard = inverse Mills ratio, eq. 111).

All math is float64 torch on the device of the inputs.
"""

from __future__ import annotations

import math

import torch

Scalar = float | torch.Tensor


def inverse_mills_ratio(tau: Scalar) -> torch.Tensor:
    """r(tau) = phi(tau) / Phi_bar(tau), eq. (111), evaluated in log space so that it
    stays accurate far in both tails."""
    tau = torch.as_tensor(tau, dtype=torch.float64)
    log_phi = -0.5 * tau**2 - 0.5 * math.log(2 * math.pi)
    return torch.exp(log_phi - torch.special.log_ndtr(-tau))


class StandardNormalScore:
    """Y ~ N(0, 1) (eq. 109): the closed forms of App D.4.4."""

    lower = -math.inf
    upper = math.inf

    def mean(self) -> torch.Tensor:
        return torch.tensor(0.0, dtype=torch.float64)

    def var(self) -> torch.Tensor:
        return torch.tensor(1.0, dtype=torch.float64)

    def pdf(self, tau: Scalar) -> torch.Tensor:
        tau = torch.as_tensor(tau, dtype=torch.float64)
        return torch.exp(-0.5 * tau**2) / math.sqrt(2 * math.pi)

    def cdf(self, tau: Scalar) -> torch.Tensor:
        return torch.special.ndtr(torch.as_tensor(tau, dtype=torch.float64))

    def survival(self, tau: Scalar) -> torch.Tensor:
        """Phi_bar(tau) = 1 - Phi(tau), eq. (110)."""
        return torch.special.ndtr(-torch.as_tensor(tau, dtype=torch.float64))

    def log_survival(self, tau: Scalar) -> torch.Tensor:
        return torch.special.log_ndtr(-torch.as_tensor(tau, dtype=torch.float64))

    def hazard(self, tau: Scalar) -> torch.Tensor:
        """h(tau) = r(tau), the inverse Mills ratio (eq. 111)."""
        return inverse_mills_ratio(tau)

    def truncated_mean(self, tau: Scalar) -> torch.Tensor:
        """t_hard(tau) = E[Y | Y >= tau] = r(tau), eq. (113)."""
        return inverse_mills_ratio(tau)

    def mean_residual_life(self, tau: Scalar) -> torch.Tensor:
        """m(tau) = r(tau) - tau, eq. (114)."""
        return inverse_mills_ratio(tau) - torch.as_tensor(tau, dtype=torch.float64)

    def boundary_mass(self, tau: Scalar, delta: float) -> torch.Tensor:
        """B_delta(p_tau) = 1 - S(tau + delta) / S(tau), eq. (63)."""
        tau = torch.as_tensor(tau, dtype=torch.float64)
        return -torch.expm1(self.log_survival(tau + delta) - self.log_survival(tau))


class EmpiricalScore:
    """Law of Y given by a weighted sample: values y_N with normalised weights w_N.

    The sample order is kept (so a grid's weights reshape back to the grid); a
    sorted copy with log tail sums answers survival queries in O(log N), batched
    over any tensor of thresholds.
    """

    def __init__(self, values_N: torch.Tensor, log_weights_N: torch.Tensor | None = None):
        if values_N.ndim != 1 or values_N.numel() == 0:
            raise ValueError(f"values must be a non-empty 1-D tensor, got shape {tuple(values_N.shape)}")
        values_N = values_N.to(torch.float64)
        if log_weights_N is None:
            log_weights_N = torch.zeros_like(values_N)
        if log_weights_N.shape != values_N.shape:
            raise ValueError(f"log_weights shape {tuple(log_weights_N.shape)} != values shape {tuple(values_N.shape)}")
        log_weights_N = log_weights_N.to(values_N)
        if torch.isnan(values_N).any() or torch.isnan(log_weights_N).any():
            raise ValueError("NaN in score values or log-weights; drop or fix those samples first")
        if torch.isinf(values_N).any():
            raise ValueError("infinite score values; the score variable must be finite (Assumption D.2)")
        log_total = torch.logsumexp(log_weights_N, dim=0)
        if not torch.isfinite(log_total):
            raise ValueError("the weights have no finite positive mass; check the log-weights")
        self.values = values_N
        self.log_weights = log_weights_N - log_total
        self._sorted, order = torch.sort(values_N)
        lw_sorted = self.log_weights[order]
        # log P(Y >= y_(i)) and E[Y 1{Y >= y_(i)}] for the i-th smallest value.
        self._log_tail = torch.flip(torch.logcumsumexp(torch.flip(lw_sorted, (0,)), 0), (0,))
        self._tail_first_moment = torch.flip(torch.cumsum(torch.flip(lw_sorted.exp() * self._sorted, (0,)), 0), (0,))

    @classmethod
    def from_density_grid(cls, values_G: torch.Tensor, log_density_G: torch.Tensor,
                          log_cell: float) -> "EmpiricalScore":
        """Quadrature law: node scores with masses density x cell size (midpoint rule)."""
        return cls(values_G.reshape(-1), log_density_G.reshape(-1) + log_cell)

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def lower(self) -> float:
        return float(self._sorted[0])

    @property
    def upper(self) -> float:
        return float(self._sorted[-1])

    def mean(self) -> torch.Tensor:
        return (self.weights * self.values).sum()

    def var(self) -> torch.Tensor:
        return (self.weights * (self.values - self.mean()) ** 2).sum()

    def _tail_index(self, tau: Scalar) -> torch.Tensor:
        tau = torch.as_tensor(tau, dtype=torch.float64, device=self.values.device)
        return torch.searchsorted(self._sorted, tau.contiguous(), side="left")

    def log_survival(self, tau: Scalar) -> torch.Tensor:
        """log P(Y >= tau); -inf above the largest value."""
        idx = self._tail_index(tau)
        padded = torch.cat([self._log_tail, self._log_tail.new_tensor([-math.inf])])
        return padded[idx]

    def survival(self, tau: Scalar) -> torch.Tensor:
        """S(tau) = P(Y >= tau) = p(A_tau) (Def. 2.1)."""
        return self.log_survival(tau).exp()

    def cdf(self, tau: Scalar) -> torch.Tensor:
        """F(tau) = P(Y < tau) = 1 - S(tau)."""
        return -torch.expm1(self.log_survival(tau))

    def truncated_mean(self, tau: Scalar) -> torch.Tensor:
        """t_hard(tau) = E[Y | Y >= tau] (eq. 78; the hard curve of eq. 199). NaN where
        the upper set is empty."""
        idx = self._tail_index(tau)
        padded = torch.cat([self._tail_first_moment, self._tail_first_moment.new_tensor([math.nan])])
        return padded[idx] / self.survival(tau)

    def mean_residual_life(self, tau: Scalar) -> torch.Tensor:
        """m(tau) = E[Y - tau | Y >= tau], eq. (79)."""
        return self.truncated_mean(tau) - torch.as_tensor(tau, dtype=torch.float64, device=self.values.device)

    def boundary_mass(self, tau: Scalar, delta: float) -> torch.Tensor:
        """B_delta = P(tau <= Y < tau + delta) / P(Y >= tau), Def. 2.3 / eq. (63)."""
        tau = torch.as_tensor(tau, dtype=torch.float64, device=self.values.device)
        return -torch.expm1(self.log_survival(tau + delta) - self.log_survival(tau))

    def hazard(self, tau: Scalar, delta: float) -> torch.Tensor:
        """Finite-shell hazard B_delta(tau) / delta, which tends to h(tau) = f / S as
        delta -> 0 when Y has a density (Lemma D.6, eq. 64)."""
        return self.boundary_mass(tau, delta) / delta


def midpoint_grid_1d(lo: float, hi: float, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Cell midpoints of ``n`` equal cells on [lo, hi] and log of the cell width.
    Thresholds on cell edges (lo + k (hi - lo) / n) are then resolved exactly."""
    if not hi > lo or n < 1:
        raise ValueError(f"need hi > lo and n >= 1, got lo={lo}, hi={hi}, n={n}")
    width = (hi - lo) / n
    mid_G = lo + width * (torch.arange(n, dtype=torch.float64, device=device) + 0.5)
    return mid_G, math.log(width)


def midpoint_grid_2d(lim: float, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Midpoints of an n x n grid on [-lim, lim]^2 as (n*n, 2) points (row-major in
    (x2, x1), so ``values.reshape(n, n)`` is an image with x1 along columns) and the
    log cell area."""
    mid_G, log_width = midpoint_grid_1d(-lim, lim, n, device)
    x2_GG, x1_GG = torch.meshgrid(mid_G, mid_G, indexing="ij")
    return torch.stack([x1_GG.reshape(-1), x2_GG.reshape(-1)], dim=-1), 2 * log_width


def angular_score_law(log_prob, theta0: float, scale: float, n_theta: int, r_max: float = 10.0, n_r: int = 200,
                      device: torch.device | str = "cpu") -> EmpiricalScore:
    """Law of psi(x) = scale |wrap(atan2(x2, x1) - theta0)| (App H.1) under a 2-D density,
    by quadrature in polar coordinates: ``n_theta`` midpoint cells in the angle around
    theta0 and Gauss-Legendre in the radius on [0, r_max]. Unlike a Cartesian grid, the
    score takes ``n_theta / 2`` evenly spaced values, so quantities that need a smooth
    score density (hazard, mean residual life, Lemma D.11's speed) converge fast."""
    import numpy as np

    mid_T, log_width = midpoint_grid_1d(-math.pi, math.pi, n_theta, device)  # angle offset from theta0
    nodes, weights = np.polynomial.legendre.leggauss(n_r)
    r_R = torch.as_tensor((nodes + 1) * r_max / 2, dtype=torch.float64, device=device)
    log_w_R = torch.as_tensor(np.log(weights * r_max / 2), dtype=torch.float64, device=device) + r_R.log()
    angle_T = mid_T + theta0
    x_TRD = torch.stack([r_R * angle_T[:, None].cos(), r_R * angle_T[:, None].sin()], dim=-1)
    log_p_TR = log_prob(x_TRD.reshape(-1, 2)).reshape(n_theta, n_r).to(torch.float64)
    log_mass_T = torch.logsumexp(log_p_TR + log_w_R, dim=1) + log_width
    return EmpiricalScore(scale * mid_T.abs(), log_mass_T)
