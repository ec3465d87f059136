"""The exact (oracle) diffusion score of a Gaussian mixture prior at every DDPM
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

from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.worlds.gmm import GaussianMixture
from klsc_lib.interfaces import Prior


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
