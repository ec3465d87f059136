"""DDPM noise schedule (Ho et al. 2020) as a stateless config, in the style of
diffusers schedulers: the config holds only numbers, every method is a pure
function of its arguments, and :meth:`DDPMSchedule.step` returns a small dataclass.

Paper: App G (VP-SDE), I.3 eq. (208) Algorithm 1 lines 3-6. Defaults are
the DPS / guided-diffusion ImageNet-256 settings: 1000 steps, linear
beta from 1e-4 to 0.02.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class DDPMStepOutput:
    prev_sample: torch.Tensor  # x_{t-1}
    pred_original_sample: torch.Tensor  # Tweedie x0-hat


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

    def on_device(self, values_T: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``values_T`` on ``device``, copied there once (a copy per call would make the host
        wait for the accelerator at every sampler step)."""
        if values_T.device == device:
            return values_T
        cache = self.__dict__.setdefault("_on_device", {})
        key = (id(values_T), str(device))
        if key not in cache:
            cache[key] = values_T.to(device)
        return cache[key]

    def _gather(self, values_T: torch.Tensor, t_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast against ``like`` (B, ...)."""
        out_B = self.on_device(values_T, like.device)[t_B.long().to(like.device)].to(like.dtype)
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

    def posterior_variance(self, t_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """beta-tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t); zero at t = 0."""
        abar = self.alphas_cumprod_T
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        var_T = self.betas_T * (1 - abar_prev) / (1 - abar)
        return self._gather(var_T, t_B, like)

    def step(self, eps: torch.Tensor, t_B: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor | None = None,
             clip_x0: tuple[float, float] | None = None) -> DDPMStepOutput:
        """One ancestral step x_t -> x_{t-1} (Algorithm 1 lines 4-6).

        ``noise`` is the standard normal z (drawn by the caller, so sampling stays
        reproducible); it is ignored where t = 0. ``clip_x0`` clamps x0-hat as the
        guided-diffusion code does (``clip_denoised=True``).
        """
        abar_T = self.alphas_cumprod_T
        abar_prev_T = torch.cat([abar_T.new_ones(1), abar_T[:-1]])
        x0 = self.predict_x0(x_t, eps, t_B)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        abar = self._gather(abar_T, t_B, x_t)
        abar_prev = self._gather(abar_prev_T, t_B, x_t)
        beta = self._gather(self.betas_T, t_B, x_t)
        coef_x0 = abar_prev.sqrt() * beta / (1 - abar)
        coef_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        mean = coef_x0 * x0 + coef_xt * x_t
        if noise is None:
            return DDPMStepOutput(mean, x0)
        nonzero = (t_B > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.device)
        std = self.posterior_variance(t_B, x_t).sqrt()
        return DDPMStepOutput(mean + nonzero * std * noise, x0)
