"""EnergyDPS (paper Sec 2.3, Algorithm 1, App G, J.4) on any schedule, batched.

At every reverse step one guidance routine (:func:`guidance_step`) forms Tweedie's
x0-hat and the gradient of the energy psi on it; the sampler (DDPM ancestral or
DDIM) takes its usual step and adds zeta_i * lambda_b * grad_b:

    x0-hat  = (x_i - sqrt(1 - abar_i) eps(x_i, i)) / sqrt(abar_i)          (Alg. 1 line 4)
    x_{i-1} = step(x_i, x0-hat) + zeta_i lambda grad_{x_i} obj(psi(x0-hat))  (lines 6-7)

the plug-in grad log h_t ~ lambda grad psi(x0-hat) of App G (eq. 193) for the KLSC
tilt p^lambda ∝ p e^{lambda psi} (eq. 24). Choices, made explicit:

- ``grad_through_denoiser``: True (DPS, released code) differentiates psi(x0-hat(x_i))
  through the denoiser; False is Jacobian-free: the gradient of psi w.r.t. x0-hat,
  times d x0-hat / d x_i = 1 / sqrt(abar_i) with eps held fixed.
- ``step_size``: ``"constant"``: zeta_i = zeta (the paper's zeta * lambda = 1.0,
  App J.4); ``"tilted_score"``: zeta_i = zeta * d x_{i-1} / d score, so the step
  equals sampling with the score s + lambda grad psi(x0-hat) and lambda is the tilt's
  lambda (App G.4).
- Per sample: ``lam_B`` and ``cap_B`` (scalars or one value per sample), the
  gradient of the batch sum of the objective (samples are independent, so each gets
  its own gradient; no batch-wide normalisation), and per-sample generators, so a
  batch of B equals B single runs with the same seeds.
- ``cap_B`` with ``cap_mode`` clip / hinge / target (App J.2, :mod:`klsc_lib.energies.caps`).
- NaN / inf in psi or its gradient raises :class:`NonFiniteGuidance`: at once on CPU;
  on an accelerator once the chain has run (the per-step check would wait for the
  device every step), naming the first bad step all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from klsc_lib.diffusion.samplers import (Callback, DenoiserOutput, Generators, Variance, denoise, initial_noise,
                                         reverse_process, tilted_score_step_size)
from klsc_lib.energies.base import Energy, ScoreFn, as_energy
from klsc_lib.energies.caps import CAP_MODES, capped_objective
from klsc_lib.interfaces import Prior

StepSize = Literal["constant", "tilted_score"]


class NonFiniteGuidance(FloatingPointError):
    """psi or its gradient was NaN / inf during guided sampling."""


@dataclass(frozen=True)
class GuidanceOutput(DenoiserOutput):
    """The denoiser output plus psi(x0-hat) and the gradient of the (capped) objective
    w.r.t. x_t, all detached."""

    psi: torch.Tensor | None = None
    grad: torch.Tensor | None = None


def _psi_error(energy: Energy, n_bad: int, batch: int, i: int, t: int) -> NonFiniteGuidance:
    return NonFiniteGuidance(
        f"energy {energy.name!r} returned NaN/inf for {n_bad} of {batch} samples at reverse step {i} (diffusion "
        f"timestep t={t}); make psi finite on every x0-hat the sampler can produce (guard divisions/logs, or clip "
        "x0-hat to the data range)")


def _grad_error(energy: Energy, i: int, t: int) -> NonFiniteGuidance:
    return NonFiniteGuidance(f"the gradient of {energy.name!r} is NaN/inf at reverse step {i} (diffusion "
                             f"timestep t={t}); psi is not differentiable at some x0-hat")


def guidance_step(prior: Prior, energy: Energy, x: torch.Tensor, t: int, i: int = 0, *,
                  cap_B: torch.Tensor | float | None = None, cap_mode: str = "clip", kappa: float = 10.0,
                  grad_through_denoiser: bool = True, variance: Variance = "auto",
                  check: bool = True) -> GuidanceOutput:
    """x0-hat at x_t and grad_{x_t} of obj(psi(x0-hat)) per sample (``i`` names the reverse
    step in errors). ``check=False`` skips the NaN / inf checks, which wait for the GPU;
    the sampler then checks every step's psi and gradient once, at the end."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(grad_through_denoiser)
        out = denoise(prior.eps, prior.schedule, x_in, t, clip_x0=prior.clip_x0, variance=variance)
        wrt = x_in if grad_through_denoiser else out.denoised.detach().requires_grad_(True)
        psi_B = energy(out.denoised if grad_through_denoiser else wrt)
        if check and not torch.isfinite(psi_B).all():
            raise _psi_error(energy, int((~torch.isfinite(psi_B)).sum()), len(psi_B), i, t)
        objective_B = capped_objective(psi_B, cap_B, cap_mode, kappa)
        (grad,) = torch.autograd.grad(objective_B.sum(), wrt)
    if not grad_through_denoiser:
        grad = grad / float(prior.schedule.alphas_cumprod_T[t]) ** 0.5  # d x0-hat / d x_t with eps held fixed
    if check and not torch.isfinite(grad).all():
        raise _grad_error(energy, i, t)
    log_var = None if out.log_variance is None else out.log_variance.detach()
    return GuidanceOutput(out.eps.detach(), out.denoised.detach(), log_var, psi_B.detach(), grad.detach())


def defer_checks(device: torch.device) -> bool:
    """Whether the guided samplers check psi and its gradient once, after the chain, instead
    of at every step: on accelerators, where a per-step check waits for the device."""
    return device.type != "cpu"


class _FiniteLog:
    """Per reverse step, on the device and without waiting for it: how many psi values
    were NaN / inf and whether the gradient was; :meth:`raise_first` raises for the first
    bad step, with the message :func:`guidance_step` would have given there."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.bad_psi: list[torch.Tensor] = []
        self.bad_grad: list[torch.Tensor] = []

    def add(self, i: int, t: int, out: GuidanceOutput) -> None:
        self.steps.append((i, t))
        self.bad_psi.append((~torch.isfinite(out.psi)).sum())
        self.bad_grad.append(~torch.isfinite(out.grad).all())

    def raise_first(self, energy: Energy, batch: int) -> None:
        if not self.steps:
            return
        bad_psi, bad_grad = torch.stack(self.bad_psi).tolist(), torch.stack(self.bad_grad).tolist()
        for (i, t), n_psi, grad in zip(self.steps, bad_psi, bad_grad):
            if n_psi:
                raise _psi_error(energy, n_psi, batch, i, t)
            if grad:
                raise _grad_error(energy, i, t)


def _per_sample(value, batch: int, like: torch.Tensor, what: str) -> torch.Tensor:
    """A scalar or (B,) value as a tensor broadcasting against ``like`` (B, ...)."""
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        v = v.expand(batch)
    if v.shape != (batch,):
        raise ValueError(f"{what} must be a scalar or one value per sample ({batch},), got shape {tuple(v.shape)}")
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _sample_guided(prior: Prior, energy: Energy | ScoreFn, x_T: torch.Tensor | None, eta: float | None, *,
                   timesteps, lam_B, cap_B, cap_mode, kappa, grad_through_denoiser, step_size, zeta, variance,
                   generators, batch_size, dtype, device, callback, disable) -> torch.Tensor:
    if step_size not in ("constant", "tilted_score"):
        raise ValueError(f"step_size must be 'constant' or 'tilted_score', got {step_size!r}")
    if cap_mode not in CAP_MODES:
        raise ValueError(f"cap_mode must be one of {CAP_MODES}, got {cap_mode!r}")
    energy = as_energy(energy)
    if x_T is None:
        x_T = initial_noise(prior.sample_shape, generators, batch_size, dtype, device)
    batch = x_T.shape[0]
    lam = _per_sample(lam_B, batch, x_T, "lam_B")
    cap = None if cap_B is None else _per_sample(cap_B, batch, x_T, "cap_B").reshape(-1)
    schedule = prior.schedule

    log, defer = _FiniteLog(), defer_checks(x_T.device)

    def guide(x: torch.Tensor, i: int, t: int, t_prev: int):
        out = guidance_step(prior, energy, x, t, i, cap_B=cap, cap_mode=cap_mode, kappa=kappa,
                            grad_through_denoiser=grad_through_denoiser, variance=variance, check=not defer)
        if defer:
            log.add(i, t, out)
        zeta_i = zeta * (tilted_score_step_size(schedule, t, t_prev, 1.0 if eta is None else eta)
                         if step_size == "tilted_score" else 1.0)
        return out, (zeta_i * lam) * out.grad, {"psi": out.psi}

    x_0 = reverse_process(prior.eps, x_T, schedule, eta=eta, callback=callback, disable=disable,
                          generator=generators, timesteps=timesteps, clip_x0=prior.clip_x0, variance=variance,
                          guide=guide)
    log.raise_first(energy, batch)
    return x_0


def sample_energy_dps_ddpm(prior: Prior, energy: Energy | ScoreFn, x_T: torch.Tensor | None = None, *,
                           timesteps: torch.Tensor | None = None, lam_B: float | torch.Tensor = 1.0,
                           cap_B: float | torch.Tensor | None = None, cap_mode: str = "clip", kappa: float = 10.0,
                           grad_through_denoiser: bool = True, step_size: StepSize = "constant", zeta: float = 1.0,
                           variance: Variance = "auto", generators: Generators = None, batch_size: int | None = None,
                           dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                           callback: Callback | None = None, disable: bool | None = None) -> torch.Tensor:
    """EnergyDPS with DDPM ancestral steps (Algorithm 1; all 1000 steps or respaced
    ``timesteps``), from ``x_T`` or from noise drawn with ``generators``; returns x_0.

    ``lam_B = 0`` draws exactly the samples of :func:`~klsc_lib.diffusion.samplers.sample_ddpm`
    with the same generators. ``callback`` gets ``{"x", "i", "t", "denoised", "psi"}``."""
    return _sample_guided(prior, energy, x_T, None, timesteps=timesteps, lam_B=lam_B, cap_B=cap_B, cap_mode=cap_mode,
                          kappa=kappa, grad_through_denoiser=grad_through_denoiser, step_size=step_size, zeta=zeta,
                          variance=variance, generators=generators, batch_size=batch_size, dtype=dtype,
                          device=device, callback=callback, disable=disable)


def sample_energy_dps_ddim(prior: Prior, energy: Energy | ScoreFn, x_T: torch.Tensor | None = None, *,
                           eta: float = 0.0, timesteps: torch.Tensor | None = None,
                           lam_B: float | torch.Tensor = 1.0, cap_B: float | torch.Tensor | None = None,
                           cap_mode: str = "clip", kappa: float = 10.0, grad_through_denoiser: bool = True,
                           step_size: StepSize = "constant", zeta: float = 1.0, generators: Generators = None,
                           batch_size: int | None = None, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None, callback: Callback | None = None,
                           disable: bool | None = None) -> torch.Tensor:
    """EnergyDPS with DDIM(eta) steps on stride-spaced ``timesteps``; ``lam_B = 0`` is
    :func:`~klsc_lib.diffusion.samplers.sample_ddim` bit for bit."""
    return _sample_guided(prior, energy, x_T, eta, timesteps=timesteps, lam_B=lam_B, cap_B=cap_B, cap_mode=cap_mode,
                          kappa=kappa, grad_through_denoiser=grad_through_denoiser, step_size=step_size, zeta=zeta,
                          variance="posterior", generators=generators, batch_size=batch_size, dtype=dtype,
                          device=device, callback=callback, disable=disable)
