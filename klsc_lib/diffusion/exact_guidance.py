"""The exact tilt guidance of Theorem G.3 for a Gaussian-mixture prior (paper App G.2-G.4).

The tilted marginals are p^lambda_t = p_t h_t with h_t(x_t) ∝ E[e^{lambda psi(X_0)} | X_t = x_t]
(eq. 191), and sampling with the score grad log p_t + grad log h_t (eq. 193) is exact for
the KLSC tilt. Under a mixture prior the posterior of x_0 given x_t = a x_0 + s eps
(a = sqrt(abar_t), s^2 = 1 - abar_t) is again a mixture:

    weights   gamma_k(x_t)                          (the oracle's responsibilities, eq. 210)
    S_k     = (Sigma_k^{-1} + a^2 / s^2 I)^{-1}
    m_k(x_t) = S_k (Sigma_k^{-1} mu_k + a / s^2 x_t)

so E[e^{lambda psi} | x_t] = sum_k gamma_k(x_t) E_{N(m_k, S_k)} e^{lambda psi}, each term by
Gauss-Hermite quadrature (z on a tensor grid of probabilists' Hermite nodes,
x_0 = m_k + chol(S_k) z), and grad log h_t by autograd. EnergyDPS's plug-in
lambda grad psi(x0-hat) approximates exactly this term.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from klsc_lib.diffusion.gmm_oracle import GMMOracle
from klsc_lib.energies.base import Energy, ScoreFn, as_energy


def gauss_hermite_grid(dim: int, order: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(nodes_QD, log_weights_Q) with sum_q w_q f(z_q) ≈ E f(Z), Z ~ N(0, I_dim): the tensor
    product of ``order`` probabilists' Gauss-Hermite nodes per axis (Q = order^dim)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    weights = weights / math.sqrt(2 * math.pi)
    grid = np.array(list(itertools.product(nodes, repeat=dim)))
    log_w = np.array([np.log(weights[list(idx)]).sum() for idx in itertools.product(range(order), repeat=dim)])
    return torch.as_tensor(grid, dtype=dtype), torch.as_tensor(log_w, dtype=dtype)


@dataclass
class ExactTiltGuidance:
    """grad log h_t for the tilt p e^{lambda psi} of the oracle's mixture (Theorem G.3).

    Calling it gives the guided epsilon-predictor eps - sqrt(1 - abar_t) grad log h_t, so
    any sampler of :mod:`klsc_lib.diffusion.samplers` run on it targets the exact tilt."""

    oracle: GMMOracle
    energy: Energy | ScoreFn
    lam: float
    order: int = 24

    def __post_init__(self) -> None:
        self.energy = as_energy(self.energy)
        self._nodes_QD, self._log_w_Q = gauss_hermite_grid(self.oracle.gmm.dim, self.order)

    def log_h(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """log E[e^{lambda psi(X_0)} | X_t = x] (up to a constant in x), shape (B,)."""
        gmm = self.oracle.gmm.to(x_BD.device, x_BD.dtype)
        t_B = torch.as_tensor(t_B, device=x_BD.device).long().expand(x_BD.shape[0])
        abar_B = self.oracle.schedule.alphas_cumprod_T.to(x_BD)[t_B]
        a_B11, s2_B11 = abar_B.sqrt().reshape(-1, 1, 1), (1 - abar_B).reshape(-1, 1, 1)
        eye_DD = torch.eye(gmm.dim, dtype=x_BD.dtype, device=x_BD.device)
        prec_KDD = torch.linalg.inv(gmm.covs_KDD)
        post_prec_BKDD = prec_KDD + (a_B11**2 / s2_B11).unsqueeze(1) * eye_DD
        post_cov_BKDD = torch.linalg.inv(post_prec_BKDD)
        rhs_BKD = (prec_KDD @ gmm.means_KD.unsqueeze(-1)).squeeze(-1) + (a_B11 / s2_B11) * x_BD.unsqueeze(1)
        m_BKD = (post_cov_BKDD @ rhs_BKD.unsqueeze(-1)).squeeze(-1)
        chol_BKDD = torch.linalg.cholesky(post_cov_BKDD)
        nodes_QD = self._nodes_QD.to(x_BD)
        x0_BKQD = m_BKD.unsqueeze(2) + torch.einsum("bkij,qj->bkqi", chol_BKDD, nodes_QD)
        b, k, q, d = x0_BKQD.shape
        psi_BKQ = self.energy(x0_BKQD.reshape(-1, d)).reshape(b, k, q)
        log_gamma_BK = torch.log_softmax(self.oracle._component_terms(x_BD, t_B)[0], dim=-1)
        terms_BKQ = log_gamma_BK.unsqueeze(-1) + self._log_w_Q.to(x_BD) + self.lam * psi_BKQ
        return torch.logsumexp(terms_BKQ.reshape(b, -1), dim=1)

    def grad_log_h(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """grad_x log h_t(x), shape (B, D)."""
        with torch.enable_grad():
            x = x_BD.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_h(x, t_B).sum(), x)
        return grad

    def __call__(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        t_B = torch.as_tensor(t_B, device=x_BD.device).long().expand(x_BD.shape[0])
        score = self.oracle.score(x_BD, t_B) + self.grad_log_h(x_BD, t_B)
        return self.oracle.schedule.eps_from_score(score, t_B)
