"""A Gaussian mixture prior (:class:`GaussianMixture`, App H eq. 194) and the exact
(oracle) diffusion score of it at every DDPM
timestep (paper App I.3, eqs. 208-211): the noised marginal is again a
mixture, p_t = sum_k pi_k N(sqrt(abar_t) mu_k, abar_t Sigma_k + (1 - abar_t) I), and
its score is sum_k gamma_k(x) Sigma_{t,k}^{-1} (m_{t,k} - x). "In Algorithm 1 we set
s_theta = grad log p_t" (I.3): the oracle plugs into every sampler as an
epsilon-predictor, eps = -sqrt(1 - abar_t) * score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from klsc_lib.interfaces import DDPMSchedule, Prior


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k)  (eq. 194; noised form eq. 209)."""

    means_KD: torch.Tensor
    covs_KDD: torch.Tensor
    weights_K: torch.Tensor

    def __post_init__(self) -> None:
        K, D = self.means_KD.shape
        if self.covs_KDD.shape != (K, D, D) or self.weights_K.shape != (K,):
            raise ValueError(f"shapes: means {tuple(self.means_KD.shape)}, covs {tuple(self.covs_KDD.shape)}, "
                             f"weights {tuple(self.weights_K.shape)}; expected (K,D), (K,D,D), (K,)")
        if not torch.isclose(self.weights_K.sum(), self.weights_K.new_tensor(1.0), atol=1e-6):
            raise ValueError("mixture weights must sum to 1")

    @property
    def dim(self) -> int:
        return self.means_KD.shape[1]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        return GaussianMixture(self.means_KD.to(device, dtype), self.covs_KDD.to(device, dtype),
                               self.weights_K.to(device, dtype))

    def _components(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.means_KD, covariance_matrix=self.covs_KDD)

    def component_log_prob(self, x_BD: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, Sigma_k), shape (B, K)."""
        return self._components().log_prob(x_BD.unsqueeze(-2)) + self.weights_K.log()

    def log_prob(self, x_BD: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x_BD), dim=-1)

    def responsibilities(self, x_BD: torch.Tensor) -> torch.Tensor:
        """gamma_k(x), eq. (210), shape (B, K)."""
        return torch.softmax(self.component_log_prob(x_BD), dim=-1)

    def score(self, x_BD: torch.Tensor) -> torch.Tensor:
        """grad log p(x) = sum_k gamma_k(x) Sigma_k^{-1} (mu_k - x), eq. (211)."""
        gamma_BK = self.responsibilities(x_BD)
        diff_BKD = self.means_KD - x_BD.unsqueeze(-2)
        prec_diff_BKD = torch.linalg.solve(self.covs_KDD, diff_BKD.unsqueeze(-1)).squeeze(-1)
        return (gamma_BK.unsqueeze(-1) * prec_diff_BKD).sum(-2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pick a mode by its weight, then sample its Gaussian (App H.1)."""
        k_N = torch.multinomial(self.weights_K.cpu(), n, replacement=True, generator=generator)
        z_ND = torch.randn(n, self.dim, generator=generator, dtype=self.means_KD.dtype)
        chol_KDD = torch.linalg.cholesky(self.covs_KDD.cpu())
        x_ND = self.means_KD.cpu()[k_N] + (chol_KDD[k_N] @ z_ND.unsqueeze(-1)).squeeze(-1)
        return x_ND.to(self.means_KD.device)

    def noised(self, alpha_bar: float | torch.Tensor) -> "GaussianMixture":
        """Law of sqrt(abar) X0 + sqrt(1-abar) eps: means scaled, covariances
        abar Sigma + (1-abar) I (eq. 209)."""
        a = torch.as_tensor(alpha_bar, dtype=self.means_KD.dtype, device=self.means_KD.device)
        eye = torch.eye(self.dim, dtype=self.means_KD.dtype, device=self.means_KD.device)
        return GaussianMixture(a.sqrt() * self.means_KD, a * self.covs_KDD + (1 - a) * eye, self.weights_K)

    def smoothed(self, bandwidth: float) -> "GaussianMixture":
        """p convolved with N(0, h^2 I): the KDE-comparable prior of App I.4."""
        eye = torch.eye(self.dim, dtype=self.means_KD.dtype, device=self.means_KD.device)
        return GaussianMixture(self.means_KD, self.covs_KDD + bandwidth**2 * eye, self.weights_K)


@dataclass(frozen=True)
class GMMOracle:
    """eps / score / log-density of the DDPM-noised mixture, each timestep per sample."""

    gmm: GaussianMixture
    schedule: DDPMSchedule

    def _component_terms(self, x_BD: torch.Tensor, t_B: torch.Tensor):
        """(log pi_k N(x; m_tk, S_tk) as (B, K), S_tk^{-1}(m_tk - x) as (B, K, D)).

        The noised parameters (eq. 209) are factorised once per distinct timestep in
        the batch (a sampler step has one), then gathered per sample."""
        if x_BD.ndim != 2 or x_BD.shape[1] != self.gmm.dim:
            raise ValueError(f"GMM oracle expects x of shape (B, {self.gmm.dim}), got {tuple(x_BD.shape)}")
        t_B = torch.as_tensor(t_B, device=x_BD.device).long().expand(x_BD.shape[0])
        gmm = self.gmm.to(x_BD.device, x_BD.dtype)
        t_unique, inverse_B = torch.unique(t_B, return_inverse=True)
        abar_U11 = self.schedule.alphas_cumprod_T.to(x_BD.device, x_BD.dtype)[t_unique].reshape(-1, 1, 1)
        eye_DD = torch.eye(gmm.dim, dtype=x_BD.dtype, device=x_BD.device)
        covs_UKDD = abar_U11.unsqueeze(-1) * gmm.covs_KDD + (1 - abar_U11.unsqueeze(-1)) * eye_DD
        chol_UKDD = torch.linalg.cholesky(covs_UKDD)
        prec_UKDD = torch.cholesky_inverse(chol_UKDD)
        logdet_UK = 2 * torch.diagonal(chol_UKDD, dim1=-2, dim2=-1).log().sum(-1)
        diff_BKD = abar_U11.sqrt()[inverse_B] * gmm.means_KD - x_BD.unsqueeze(1)
        prec_diff_BKD = torch.einsum("bkij,bkj->bki", prec_UKDD[inverse_B], diff_BKD)
        maha_BK = (diff_BKD * prec_diff_BKD).sum(-1)
        log_comp_BK = gmm.weights_K.log() - 0.5 * (maha_BK + logdet_UK[inverse_B] + gmm.dim * math.log(2 * math.pi))
        return log_comp_BK, prec_diff_BKD

    def log_prob(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """log p_t(x), eq. (209), shape (B,)."""
        return torch.logsumexp(self._component_terms(x_BD, t_B)[0], dim=-1)

    def score(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(x) with responsibilities gamma_k (eqs. 210-211), shape (B, D)."""
        log_comp_BK, prec_diff_BKD = self._component_terms(x_BD, t_B)
        gamma_BK = torch.softmax(log_comp_BK, dim=-1)
        return (gamma_BK.unsqueeze(-1) * prec_diff_BKD).sum(1)

    def __call__(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """eps(x_t, t) = -sqrt(1 - abar_t) * score: the epsilon-predictor the samplers take."""
        t_B = torch.as_tensor(t_B, device=x_BD.device).long().expand(x_BD.shape[0])
        return self.schedule.eps_from_score(self.score(x_BD, t_B), t_B)

    def predict_x0(self, x_BD: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """Tweedie's E[x_0 | x_t] from the exact score."""
        t_B = torch.as_tensor(t_B, device=x_BD.device).long().expand(x_BD.shape[0])
        return self.schedule.predict_x0(x_BD, self(x_BD, t_B), t_B)


def gmm_oracle_prior(gmm: GaussianMixture, schedule: DDPMSchedule | None = None,
                     name: str = "gmm-oracle") -> Prior:
    """The oracle as a :class:`Prior` (no x0 clipping: the GMM is unbounded)."""
    schedule = DDPMSchedule() if schedule is None else schedule
    return Prior(eps=GMMOracle(gmm, schedule), schedule=schedule, sample_shape=(gmm.dim,), name=name, clip_x0=None)
