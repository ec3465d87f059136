"""DDPM noise schedule (Ho et al. 2020) as a stateless config, in the style of
diffusers schedulers: the config holds only numbers and every method is a pure
function of its arguments. The reverse steps live in :mod:`klsc_lib.diffusion.samplers`.

Paper: App G (VP-SDE), I.3 eq. (208) Algorithm 1 lines 3-6. Defaults are
the DPS / guided-diffusion ImageNet-256 settings: 1000 steps, linear
beta from 1e-4 to 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class DDPMSchedule:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if not (0 < self.beta_start <= self.beta_end < 1):
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be >= 1")

    @cached_property
    def betas_T(self) -> torch.Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64)

    @cached_property
    def alphas_cumprod_T(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas_T, dim=0)

    def _gather(self, values_T: torch.Tensor, t_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast against ``like`` (B, ...)."""
        out_B = values_T.to(like.device)[t_B.long().to(like.device)].to(like.dtype)
        return out_B.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """Forward process, eq. (208): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        abar = self._gather(self.alphas_cumprod_T, t_B, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """Tweedie's estimate (Algorithm 1 line 4), written with eps = -sqrt(1-abar) * score."""
        abar = self._gather(self.alphas_cumprod_T, t_B, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_score(self, score: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        abar = self._gather(self.alphas_cumprod_T, t_B, score)
        return -(1 - abar).sqrt() * score

    def score_from_eps(self, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        abar = self._gather(self.alphas_cumprod_T, t_B, eps)
        return -eps / (1 - abar).sqrt()
