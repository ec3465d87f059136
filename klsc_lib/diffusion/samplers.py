"""Reverse-diffusion samplers in the shape of k-diffusion's ``sampling.py``: one plain
function per sampler, ``model, x, schedule, extra_args=None, callback=None,
disable=None`` plus ``generator`` and optional respaced ``timesteps``.

``model(x_t, t_B, **extra_args) -> eps`` is an epsilon-predictor on integer DDPM
timesteps (a UNet on ``(B, C, H, W)`` or the oracle GMM on ``(B, D)``; paper App G,
I.3). A model with an ``eps_and_log_variance`` method (guided-diffusion's
learned-range variance, App J.4) gets its learned variance in DDPM steps.

Respacing (guided-diffusion ``space_timesteps``): a decreasing subset
t_N > ... > t_1 > t_0 = 0 of the training steps is walked with the effective betas
beta_i = 1 - abar_{t_i} / abar_{t_{i-1}} (:func:`step_alphas`).

Noise: ``generator`` is one ``torch.Generator`` for the whole batch, or one
generator (or integer seed) per sample. With per-sample generators every sample's
noise, x_T included, comes from its own stream, so a batch of B equals B single runs
with the same seeds and a sample never depends on what else is in its batch.

The guided samplers of :mod:`klsc_lib.diffusion.energy_dps` run the same loop
(:func:`reverse_process`) with a guidance shift added after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from klsc_lib.interfaces import DDPMSchedule

Callback = Callable[[dict[str, Any]], None]
Generators = torch.Generator | Sequence[torch.Generator] | Sequence[int] | torch.Tensor | None
Variance = Literal["auto", "posterior", "learned"]


# ---- timesteps --------------------------------------------------------------------------

def spaced_timesteps(schedule: DDPMSchedule, num_steps: int | None = None) -> torch.Tensor:
    """``num_steps`` evenly spaced training timesteps ("stride" spacing), decreasing from
    T-1 down to 0 (all T of them when ``num_steps`` is None)."""
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


def step_pairs(timesteps: torch.Tensor) -> list[tuple[int, int]]:
    """(t, t_prev) for every reverse step, t_prev = -1 after the last one."""
    prev = torch.cat([timesteps[1:], timesteps.new_full((1,), -1)])
    return list(zip(timesteps.tolist(), prev.tolist()))


def step_alphas(schedule: DDPMSchedule, t: int, t_prev: int) -> tuple[float, float, float]:
    """(abar_t, abar_prev, beta_i) of one (possibly respaced) step; abar = 1 before the
    first training step (t_prev = -1) and beta_i = 1 - abar_t / abar_prev."""
    abar_T = schedule.alphas_cumprod_T
    abar, abar_prev = float(abar_T[t]), (float(abar_T[t_prev]) if t_prev >= 0 else 1.0)
    return abar, abar_prev, 1.0 - abar / abar_prev


# ---- noise ------------------------------------------------------------------------------

def resolve_generators(generators: Generators, batch: int | None = None
                       ) -> torch.Generator | list[torch.Generator] | None:
    """One shared generator, or a list of per-sample generators (integer seeds are seeded
    CPU generators); a list must have one entry per sample."""
    if generators is None or isinstance(generators, torch.Generator):
        return generators
    items = generators.tolist() if isinstance(generators, torch.Tensor) else list(generators)
    gens = [g if isinstance(g, torch.Generator) else torch.Generator().manual_seed(int(g)) for g in items]
    if batch is not None and len(gens) != batch:
        raise ValueError(f"{len(gens)} per-sample generators/seeds for a batch of {batch}; pass one per sample")
    return gens


def noise_like(x: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device (CPU by
    default, so a seeded run gives the same samples on every device); with a list, row b
    comes from generator b."""
    if isinstance(generator, list):
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} per-sample generators for a batch of {x.shape[0]}")
        rows = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device) for g in generator])
        if rows.device.type == "cpu" and x.device.type == "cuda":  # no wait for the GPU
            return rows.pin_memory().to(x.device, non_blocking=True)
        return rows.to(x.device)
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def initial_noise(sample_shape: tuple[int, ...], generators: Generators, batch: int | None = None,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """x_T ~ N(0, I) of shape (B, *sample_shape): B from the per-sample generators or ``batch``."""
    gens = resolve_generators(generators, batch)
    if isinstance(gens, list):
        batch = len(gens)
    if batch is None:
        raise ValueError("give x_T, per-sample generators/seeds, or batch_size to set the batch size")
    return noise_like(torch.empty((batch, *sample_shape), dtype=dtype, device=device), gens)


# ---- one reverse step -------------------------------------------------------------------

@dataclass(frozen=True)
class DenoiserOutput:
    """What the denoiser says at x_t: eps, Tweedie's x0-hat (clipped if asked) and,
    for learned-variance models, the log variance on the training schedule."""

    eps: torch.Tensor
    denoised: torch.Tensor
    log_variance: torch.Tensor | None = None


def timestep_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    """t repeated once per sample, on x's device (the ``t_B`` a model receives)."""
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def denoise(model: Callable[..., torch.Tensor], schedule: DDPMSchedule, x: torch.Tensor, t: int,
            extra_args: dict | None = None, clip_x0: tuple[float, float] | None = None,
            variance: Variance = "auto") -> DenoiserOutput:
    """One model call: eps, x0-hat (clamped to ``clip_x0``, eps then made consistent
    with the clamped x0 as guided-diffusion does) and the learned log variance."""
    extra_args = {} if extra_args is None else extra_args
    if variance not in ("auto", "posterior", "learned"):
        raise ValueError(f"variance must be 'auto', 'posterior' or 'learned', got {variance!r}")
    learned = hasattr(model, "eps_and_log_variance") and variance != "posterior"
    if variance == "learned" and not learned:
        raise ValueError("variance='learned' needs a model with eps_and_log_variance (a learned-sigma UNet)")
    t_B = timestep_batch(t, x)
    if learned:
        eps, log_var = model.eps_and_log_variance(x, t_B, **extra_args)
    else:
        eps, log_var = model(x, t_B, **extra_args), None
    x0 = schedule.predict_x0(x, eps, t_B)
    if clip_x0 is not None:
        x0 = x0.clamp(*clip_x0)
        abar = float(schedule.alphas_cumprod_T[t])
        eps = (x - abar**0.5 * x0) / (1 - abar) ** 0.5
    return DenoiserOutput(eps, x0, log_var)


def respaced_log_variance(schedule: DDPMSchedule, log_variance: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
    """A learned-range log variance log sigma^2 = f log beta_t + (1-f) log beta-tilde_t on the
    training schedule, re-expressed with the respaced step's beta_i and beta-tilde_i
    (guided-diffusion respacing); unchanged when t_prev = t - 1. Needs t_prev >= 0."""
    if t_prev == t - 1:
        return log_variance
    abar_T, beta_T = schedule.alphas_cumprod_T, schedule.betas_T
    tt = max(t, 1)  # guided-diffusion uses beta-tilde_1 in place of beta-tilde_0 = 0
    lo_t = math.log(float(beta_T[tt] * (1 - abar_T[tt - 1]) / (1 - abar_T[tt])))
    hi_t = math.log(float(beta_T[t]))
    frac = (log_variance - lo_t) / (hi_t - lo_t)
    abar, abar_prev, beta = step_alphas(schedule, t, t_prev)
    return frac * math.log(beta) + (1 - frac) * math.log(beta * (1 - abar_prev) / (1 - abar))


def ancestral_step(schedule: DDPMSchedule, x: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int,
                   noise: torch.Tensor | None, log_variance: torch.Tensor | None = None) -> torch.Tensor:
    """x_{t_prev} ~ q(x_{t_prev} | x_t, x0-hat): the posterior mean plus sigma z with
    sigma^2 = beta-tilde (or the learned variance); no noise after the last step."""
    abar, abar_prev, beta = step_alphas(schedule, t, t_prev)
    mean = (abar_prev**0.5 * beta / (1 - abar)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)) * x
    if t_prev < 0 or noise is None:
        return mean
    if log_variance is not None:
        return mean + (0.5 * respaced_log_variance(schedule, log_variance, t, t_prev)).exp() * noise
    return mean + (beta * (1 - abar_prev) / (1 - abar)) ** 0.5 * noise


def ddim_sigma(schedule: DDPMSchedule, t: int, t_prev: int, eta: float) -> float:
    """sigma = eta * sqrt(beta-tilde_i) (Song et al. 2021, eq. 16)."""
    abar, abar_prev, beta = step_alphas(schedule, t, t_prev)
    return eta * ((1 - abar_prev) / (1 - abar) * beta) ** 0.5


def ddim_step(schedule: DDPMSchedule, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, eta: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z."""
    _, abar_prev, _ = step_alphas(schedule, t, t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    x = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
    return x + sigma * noise if (noise is not None and sigma > 0 and t_prev >= 0) else x


def tilted_score_step_size(schedule: DDPMSchedule, t: int, t_prev: int, eta: float = 1.0) -> float:
    """d x_prev / d score: how much one step moves per unit change of the score, so that
    adding ``zeta_i * g`` to x_prev equals sampling with score + g (the ideal tilted
    score of App G eq. 193). For DDIM the score enters through eps and x0-hat:
    sqrt(abar_prev)(1 - abar)/sqrt(abar) - sqrt(1 - abar) sqrt(1 - abar_prev - sigma^2);
    at eta = 1 (DDPM) this is beta_i / sqrt(alpha_i)."""
    abar, abar_prev, _ = step_alphas(schedule, t, t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    return abar_prev**0.5 * (1 - abar) / abar**0.5 - (1 - abar) ** 0.5 * max(1 - abar_prev - sigma**2, 0.0) ** 0.5


# ---- the loop shared by every sampler -----------------------------------------------------

Guide = Callable[[torch.Tensor, int, int, int], tuple[DenoiserOutput, torch.Tensor | None, dict]]


def reverse_process(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule, *,
                    eta: float | None, extra_args: dict | None = None, callback: Callback | None = None,
                    disable: bool | None = None, generator: Generators = None,
                    timesteps: torch.Tensor | None = None, clip_x0: tuple[float, float] | None = None,
                    variance: Variance = "auto", guide: Guide | None = None, recurrence: int = 1) -> torch.Tensor:
    """Walk ``timesteps`` from x = x_T: DDPM ancestral steps (``eta=None``) or DDIM(eta).

    ``guide(x, i, t, t_prev) -> (denoiser output, shift or None, callback extras)``
    replaces the plain model call; its shift is added to x_prev after the step.
    ``recurrence`` r > 1 is self-recurrence (Bansal et al. 2023, "Universal Guidance"):
    each step is taken r times, x_prev re-noised back to x_t by the forward kernel
    (:func:`renoise`) between passes; with an exact (tilted) score every pass keeps the
    target's marginals, so r only buys the guidance more chances to act."""
    if eta is not None and not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
    if recurrence < 1:
        raise ValueError(f"recurrence must be >= 1 (1 = each step once), got {recurrence}")
    timesteps = validated_timesteps(schedule, timesteps)
    gens = resolve_generators(generator, x.shape[0])
    x = x.detach()
    for i, (t, t_prev) in enumerate(tqdm(step_pairs(timesteps), disable=disable)):
        for r in range(recurrence):
            if r:
                x = renoise(schedule, x, t, t_prev, noise_like(x, gens))
            if guide is None:
                with torch.no_grad():
                    out = denoise(model, schedule, x, t, extra_args, clip_x0, variance)
                shift, extras = None, {}
            else:
                out, shift, extras = guide(x, i, t, t_prev)
            if callback is not None:
                callback({"x": x, "i": i, "t": t, "denoised": out.denoised, **extras})
            stochastic = t_prev >= 0 and (eta is None or eta > 0)
            noise = noise_like(x, gens) if stochastic else None
            with torch.no_grad():
                if eta is None:
                    x = ancestral_step(schedule, x, out.denoised, t, t_prev, noise, out.log_variance)
                else:
                    x = ddim_step(schedule, out.denoised, out.eps, t, t_prev, eta, noise)
            if shift is not None:
                x = (x + shift).detach()
    return x


def renoise(schedule: DDPMSchedule, x_prev: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t ~ q(x_t | x_prev) = N(sqrt(1 - beta_i) x_prev, beta_i I), the forward kernel of one
    (respaced) step: what self-recurrence uses to go back up a step."""
    beta = step_alphas(schedule, t, t_prev)[2]
    return (1 - beta) ** 0.5 * x_prev + beta**0.5 * noise


def sample_ddpm(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule,
                extra_args: dict | None = None, callback: Callback | None = None, disable: bool | None = None,
                generator: Generators = None, timesteps: torch.Tensor | None = None,
                clip_x0: tuple[float, float] | None = None, variance: Variance = "auto") -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020; App J.4: the DPS sampler).

    ``clip_x0`` clamps Tweedie's x0-hat (guided-diffusion ``clip_denoised``); leave it
    None for unbounded data such as the GMM. ``variance``: the model's learned variance
    where it has one (``auto``), or the posterior variance beta-tilde."""
    return reverse_process(model, x, schedule, eta=None, extra_args=extra_args, callback=callback, disable=disable,
                           generator=generator, timesteps=timesteps, clip_x0=clip_x0, variance=variance)


def sample_ddim(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule,
                extra_args: dict | None = None, callback: Callback | None = None, disable: bool | None = None,
                generator: Generators = None, timesteps: torch.Tensor | None = None,
                eta: float = 0.0, clip_x0: tuple[float, float] | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) with sigma = eta * sigma-tilde: ``eta = 0`` is the
    deterministic ODE-like sampler, ``eta = 1`` has the DDPM posterior variance."""
    return reverse_process(model, x, schedule, eta=eta, extra_args=extra_args, callback=callback, disable=disable,
                           generator=generator, timesteps=timesteps, clip_x0=clip_x0, variance="posterior")
