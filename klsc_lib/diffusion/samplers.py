"""Reverse-diffusion samplers in the shape of k-diffusion's ``sampling.py``: one
plain function per sampler, ``model, x, schedule, extra_args=None, callback=None,
disable=None`` plus a ``generator`` and optional respaced ``timesteps``.

``model(x_t, t_B, **extra_args) -> eps`` is an epsilon-predictor on integer DDPM
timesteps (a UNet on ``(B, C, H, W)`` or the oracle GMM on ``(B, D)``; paper App G,
I.3). ``x`` is the starting noise x_T ~ N(0, I).

Respacing (guided-diffusion ``space_timesteps``): a decreasing subset
t_N > ... > t_1 > t_0 = 0 of the training steps is walked with the effective
betas beta_i = 1 - abar_{t_i} / abar_{t_{i-1}}; with every training step it is
exactly :meth:`DDPMSchedule.step` (RM §10 Algorithm 1 lines 4-6).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from klsc_lib.diffusion.schedule import DDPMSchedule

Callback = Callable[[dict[str, Any]], None]


def spaced_timesteps(schedule: DDPMSchedule, num_steps: int | None = None) -> torch.Tensor:
    """``num_steps`` evenly spaced training timesteps, decreasing, from T-1 down to 0
    (all T of them when ``num_steps`` is None)."""
    T = schedule.num_train_timesteps
    if num_steps is None:
        num_steps = T
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}] for this schedule, got {num_steps}")
    steps = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long()
    return torch.unique_consecutive(steps)


def validated_timesteps(schedule: DDPMSchedule, timesteps: torch.Tensor | None) -> torch.Tensor:
    """``timesteps`` as a CPU long tensor, checked; every training step when None."""
    if timesteps is None:
        return spaced_timesteps(schedule)
    timesteps = torch.as_tensor(timesteps).long().cpu()
    T = schedule.num_train_timesteps
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError("timesteps must be a non-empty 1-D sequence of training steps")
    if not bool((timesteps[:-1] > timesteps[1:]).all()) or timesteps.min() < 0 or timesteps.max() >= T:
        raise ValueError(f"timesteps must be strictly decreasing integers in [0, {T - 1}]; "
                         "build them with spaced_timesteps(schedule, num_steps)")
    return timesteps


def _alpha_bars(schedule: DDPMSchedule, t: int, t_prev: int) -> tuple[float, float]:
    """(abar_t, abar_prev) with abar = 1 before the first step (t_prev = -1)."""
    abar_T = schedule.alphas_cumprod_T
    return float(abar_T[t]), (float(abar_T[t_prev]) if t_prev >= 0 else 1.0)


def ancestral_step(schedule: DDPMSchedule, x: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
                   noise: torch.Tensor | None) -> torch.Tensor:
    """x_{t_prev} ~ q(x_{t_prev} | x_t, x0-hat): posterior mean plus sigma-tilde z (RM §10 line 6).
    ``noise`` is ignored at the last step (t_prev = -1)."""
    abar, abar_prev = _alpha_bars(schedule, t, t_prev)
    beta = 1.0 - abar / abar_prev
    mean = (abar_prev**0.5 * beta / (1 - abar)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)) * x
    if t_prev < 0 or noise is None:
        return mean
    return mean + (beta * (1 - abar_prev) / (1 - abar)) ** 0.5 * noise


def tilted_score_step_size(schedule: DDPMSchedule, t: int, t_prev: int) -> float:
    """beta_i / sqrt(alpha_i): the change of the ancestral mean per unit change of the
    score, so that adding ``zeta_i * g`` to x_{i-1} equals sampling with score + g
    (the ideal tilted score of App G eq. 193)."""
    abar, abar_prev = _alpha_bars(schedule, t, t_prev)
    alpha = abar / abar_prev
    return (1.0 - alpha) / alpha**0.5


def timestep_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    """t repeated once per sample, on x's device (the ``t_B`` a model receives)."""
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default), so a
    seeded run gives the same samples on every device."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


@torch.no_grad()
def sample_ddpm(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule,
                extra_args: dict | None = None, callback: Callback | None = None, disable: bool | None = None,
                generator: torch.Generator | None = None, timesteps: torch.Tensor | None = None,
                clip_x0: tuple[float, float] | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020; RM §13 J.4: the DPS sampler).

    ``clip_x0`` clamps Tweedie's x0-hat (guided-diffusion ``clip_denoised``); leave it
    None for unbounded data such as the GMM.
    """
    extra_args = {} if extra_args is None else extra_args
    timesteps = validated_timesteps(schedule, timesteps)
    prev_T = torch.cat([timesteps[1:], timesteps.new_full((1,), -1)])
    for i, (t, t_prev) in enumerate(tqdm(list(zip(timesteps.tolist(), prev_T.tolist())), disable=disable)):
        t_B = timestep_batch(t, x)
        x0 = schedule.predict_x0(x, model(x, t_B, **extra_args), t_B)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
        x = ancestral_step(schedule, x, x0, t, t_prev, noise_like(x, generator) if t_prev >= 0 else None)
    return x


@torch.no_grad()
def sample_ddim(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule,
                extra_args: dict | None = None, callback: Callback | None = None, disable: bool | None = None,
                generator: torch.Generator | None = None, timesteps: torch.Tensor | None = None,
                eta: float = 0.0, clip_x0: tuple[float, float] | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps
    + sigma z with sigma = eta * sigma-tilde; ``eta = 0`` is the deterministic ODE-like
    sampler, ``eta = 1`` has the DDPM posterior variance."""
    extra_args = {} if extra_args is None else extra_args
    timesteps = validated_timesteps(schedule, timesteps)
    prev_T = torch.cat([timesteps[1:], timesteps.new_full((1,), -1)])
    for i, (t, t_prev) in enumerate(tqdm(list(zip(timesteps.tolist(), prev_T.tolist())), disable=disable)):
        t_B = timestep_batch(t, x)
        eps = model(x, t_B, **extra_args)
        x0 = schedule.predict_x0(x, eps, t_B)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
            abar_t = float(schedule.alphas_cumprod_T[t])
            eps = (x - abar_t**0.5 * x0) / (1 - abar_t) ** 0.5  # keep eps consistent with the clipped x0
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
        abar, abar_prev = _alpha_bars(schedule, t, t_prev)
        sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
        x = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * noise_like(x, generator)
    return x
