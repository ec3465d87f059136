"""EnergyDPS (paper Sec 2.3, Algorithm 1 as rebuilt in RM §10): DDPM ancestral
sampling of the prior plus, at every reverse step, the gradient of the intrinsic
score psi evaluated on Tweedie's clean estimate,

    x0-hat = (x_i + (1 - abar_i) s_theta(x_i, i)) / sqrt(abar_i)        (line 4)
    x_{i-1} = ancestral_step(x_i, x0-hat) + zeta_i * lambda * grad_{x_i} psi(x0-hat)   (lines 6-7)

i.e. the plug-in grad log h_t ~ lambda grad psi(x0-hat) of App G (eq. 193) for the
KLSC tilt p^lambda ∝ p e^{lambda psi} (eq. 24). The DPS details, made explicit:

- ``grad_through_denoiser``: True (DPS, released code) differentiates through the
  denoiser, grad_{x_i} psi(x0-hat(x_i)); False treats eps as constant, so
  d x0-hat / d x_i = I / sqrt(abar_i) (cheaper: no backward pass through a UNet).
- ``step_size``: ``"constant"`` uses zeta_i = zeta for every step (DPS; the released
  code has zeta * lambda = 1.0, RM §13 J.4); ``"tilted_score"`` uses
  zeta_i = zeta * beta_i / sqrt(alpha_i), which is exactly sampling with the score
  s + lambda grad psi(x0-hat) (App G.4), so lambda means the tilt's lambda.
- The step is applied to x_{i-1} after the ancestral update, with the gradient
  taken at x_i (DPS Algorithm 1).
- Gradients are per sample: psi returns one value per sample and the gradient of
  the batch sum gives each sample its own gradient, with no batch-wide norm (DPS
  divides by the norm of the whole batch's residual, which couples samples).
- ``cap`` c: the J.2 'clip' objective min(psi(x0-hat), c), whose gradient is 0 once
  psi >= c.
- ``clip_x0``: clamp x0-hat (guided-diffusion ``clip_denoised``) before psi and the
  ancestral step; None for the GMM.

The function is generic over the shape of x: (B, D) for the GMM oracle, (B, C, H, W)
for a UNet prior with a transcoder-feature psi (notebook 04).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from tqdm.auto import tqdm

from klsc_lib.diffusion.samplers import (Callback, ancestral_step, noise_like, tilted_score_step_size, timestep_batch,
                                         validated_timesteps)
from klsc_lib.diffusion.schedule import DDPMSchedule

Psi = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) -> (B,)


class NonFiniteGuidance(FloatingPointError):
    """psi or its gradient was NaN / inf during guided sampling."""


def _guidance_gradient(psi: Psi, model, x: torch.Tensor, t: int, i: int, schedule: DDPMSchedule,
                       extra_args: dict, cap: float | None, grad_through_denoiser: bool,
                       clip_x0: tuple[float, float] | None):
    """(x0-hat, psi(x0-hat), grad_{x_i} of psi or min(psi, cap)), all detached."""
    t_B = timestep_batch(t, x)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(grad_through_denoiser)
        eps = model(x_in, t_B, **extra_args)
        x0 = schedule.predict_x0(x_in, eps, t_B)
        if clip_x0 is not None:
            x0 = x0.clamp(*clip_x0)
        wrt = x_in if grad_through_denoiser else x0.detach().requires_grad_(True)
        psi_B = psi(x0 if grad_through_denoiser else wrt)
        if psi_B.shape != (x.shape[0],):
            raise ValueError(f"psi must return one value per sample, shape ({x.shape[0]},); got {tuple(psi_B.shape)}")
        bad = ~torch.isfinite(psi_B)
        if bad.any():
            raise NonFiniteGuidance(
                f"psi returned NaN/inf for {int(bad.sum())} of {len(psi_B)} samples at reverse step {i} "
                f"(diffusion timestep t={t}); make psi finite on every x0-hat the sampler can produce "
                "(e.g. guard divisions/logs, or clip_x0 to the data range)")
        objective_B = psi_B if cap is None else psi_B.clamp(max=cap)
        (grad,) = torch.autograd.grad(objective_B.sum(), wrt)
    if not grad_through_denoiser:
        grad = grad / float(schedule.alphas_cumprod_T[t]) ** 0.5  # d x0-hat / d x_i with eps held fixed
    if not torch.isfinite(grad).all():
        raise NonFiniteGuidance(f"the gradient of psi is NaN/inf at reverse step {i} (diffusion timestep t={t}); "
                                "psi is not differentiable at some x0-hat")
    return x0.detach(), psi_B.detach(), grad


def sample_energy_dps(model: Callable[..., torch.Tensor], x: torch.Tensor, schedule: DDPMSchedule, psi: Psi,
                      lam: float, extra_args: dict | None = None, callback: Callback | None = None,
                      disable: bool | None = None, generator: torch.Generator | None = None,
                      timesteps: torch.Tensor | None = None, zeta: float = 1.0,
                      step_size: Literal["constant", "tilted_score"] = "constant", cap: float | None = None,
                      grad_through_denoiser: bool = True,
                      clip_x0: tuple[float, float] | None = None) -> torch.Tensor:
    """EnergyDPS (Algorithm 1) from the noise ``x`` = x_T; returns x_0. With ``lam = 0``
    it draws the same samples as :func:`sample_ddpm` for the same generator.

    ``callback`` gets ``{"x", "i", "t", "denoised", "psi"}`` at every step.
    """
    if step_size not in ("constant", "tilted_score"):
        raise ValueError(f"step_size must be 'constant' or 'tilted_score', got {step_size!r}")
    extra_args = {} if extra_args is None else extra_args
    timesteps = validated_timesteps(schedule, timesteps)
    prev_T = torch.cat([timesteps[1:], timesteps.new_full((1,), -1)])
    x = x.detach()
    for i, (t, t_prev) in enumerate(tqdm(list(zip(timesteps.tolist(), prev_T.tolist())), disable=disable)):
        x0, psi_B, grad = _guidance_gradient(psi, model, x, t, i, schedule, extra_args, cap,
                                             grad_through_denoiser, clip_x0)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0, "psi": psi_B})
        zeta_i = zeta * (tilted_score_step_size(schedule, t, t_prev) if step_size == "tilted_score" else 1.0)
        x_prev = ancestral_step(schedule, x, x0, t, t_prev, noise_like(x, generator) if t_prev >= 0 else None)
        x = (x_prev + zeta_i * lam * grad).detach()
    return x
