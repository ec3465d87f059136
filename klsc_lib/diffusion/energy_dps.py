"""EnergyDPS (paper Sec 2.3, Algorithm 1, App G, J.4) on any schedule, batched.

At every reverse step one guidance routine (:func:`guidance_step`) forms Tweedie's
x0-hat and the gradient of the energy psi on it; the sampler (DDPM ancestral or
DDIM) takes its usual step and adds zeta_i * lambda_b * grad_b:

    x0-hat  = (x_i - sqrt(1 - abar_i) eps(x_i, i)) / sqrt(abar_i)          (Alg. 1 line 4)
    x_{i-1} = step(x_i, x0-hat) + zeta_i lambda grad_{x_i} obj(psi(x0-hat))  (lines 6-7)

the plug-in grad log h_t ~ lambda grad psi(x0-hat) of App G (eq. 193) for the KLSC
tilt p^lambda ∝ p e^{lambda psi} (eq. 24). Every choice is a field of one
:class:`~klsc_lib.diffusion.guidance.GuidanceConfig`:

- ``grad_through_denoiser``: True (DPS, released code) differentiates psi(x0-hat(x_i))
  through the denoiser; False is Jacobian-free: the gradient of psi w.r.t. x0-hat,
  times d x0-hat / d x_i = 1 / sqrt(abar_i) with eps held fixed.
- ``step_size``: ``"constant"``: zeta_i = 1 (lambda the per-step scale, the paper's
  zeta * lambda = 1.0, App J.4); ``"tilted_score"``: zeta_i = d x_{i-1} / d score, so the step
  equals sampling with the score s + lambda grad psi(x0-hat) and lambda is the tilt's
  lambda (App G.4).
- Per sample: ``lam_B`` and ``cap_B`` (scalars or one value per sample), the
  gradient of the batch sum of the objective (samples are independent, so each gets
  its own gradient; no batch-wide normalisation), and per-sample generators, so a
  batch of B equals B single runs with the same seeds.
- the cap rule and ``cap_mode`` clip / hinge / target (App J.2, :mod:`klsc_lib.energies.caps`).
- ``psi_views``, ``recurrence``, ``shift_clip``: psi read on shifted copies of x0-hat
  (:mod:`klsc_lib.energies.views`), self-recurrence (each step repeated, re-noised in
  between; Bansal et al. 2023) and each sample's shift clipped to its step's noise norm
  (:func:`clip_shift`), the corrections notebook 04 measures against the exact tilt.
- :func:`sample_units`: many units' samples in batches that mix units.
- ``guidance.speed`` (:mod:`klsc_lib.diffusion.speed`): how the networks run; float32
  eager by default. The psi that :func:`sample_units` reports is always float32.
- NaN / inf in psi or its gradient raises :class:`NonFiniteGuidance`: at once on CPU;
  on an accelerator once the chain has run (a per-step check would wait for the device
  every step), naming the first bad step all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.samplers import (Callback, DenoiserOutput, Generators, Variance, denoise, initial_noise,
                                         resolve_generators, reverse_process, step_alphas, tilted_score_step_size)
from klsc_lib.diffusion.speed import to_channels_last
from klsc_lib.energies.base import Energy, ScoreFn
from klsc_lib.energies.caps import capped_objective
from klsc_lib.energies.views import shifted_views
from klsc_lib.interfaces import DDPMSchedule, Prior


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
    """Whether the guided sampler checks psi and its gradient once, after the chain, instead
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


def posterior_std(schedule: DDPMSchedule, t: int, t_prev: int) -> float:
    """sqrt(beta-tilde) of one (respaced) step: the std of the noise a DDPM step adds (0 at the last)."""
    abar, abar_prev, beta = step_alphas(schedule, t, t_prev)
    return (beta * (1 - abar_prev) / (1 - abar)) ** 0.5


def clip_shift(shift_B: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each sample's shift scaled down (never up) to a norm of at most sigma x sqrt(its
    dimension): the norm of the noise a step with std sigma adds, so guidance never moves a
    sample farther than the step's own noise does."""
    limit = sigma * shift_B[0].numel() ** 0.5
    norm_B = shift_B.flatten(1).norm(dim=1)
    scale_B = torch.where(norm_B > limit, limit / norm_B.clamp_min(torch.finfo(norm_B.dtype).tiny), 1.0)
    return shift_B * scale_B.reshape(-1, *([1] * (shift_B.ndim - 1)))


def sample_energy_dps(prior: Prior, energy: Energy | ScoreFn, guidance: GuidanceConfig, *,
                      cap_B: torch.Tensor | float | None = None, lam_B: torch.Tensor | float | None = None,
                      x_T: torch.Tensor | None = None, generators: Generators = None, batch_size: int | None = None,
                      dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                      callback: Callback | None = None, disable: bool | None = None) -> torch.Tensor:
    """EnergyDPS (Algorithm 1) as ``guidance`` says: DDPM ancestral or DDIM(eta) steps on
    ``guidance.timesteps``, from ``x_T`` or from noise drawn with ``generators``; returns x_0.

    ``cap_B``: the per-sample cap for the cap rules "target" and "calibrated"
    (:meth:`GuidanceConfig.resolve_cap`). ``lam_B``: lambda per sample (a scalar or (B,)),
    replacing the configured per-step scale (e.g. the tilt's lambda with
    ``step_size="tilted_score"``). With lambda 0 the samples are those of the unguided
    :func:`~klsc_lib.diffusion.samplers.sample_ddpm` / ``sample_ddim`` bit for bit.
    ``callback`` gets ``{"x", "i", "t", "denoised", "psi", "shift"}`` (psi as guidance read it;
    the shift added after the step, None where none is)."""
    speed = guidance.speed
    if speed.channels_last:
        to_channels_last(prior.eps)
    prior, energy = speed.prior(prior), speed.energy(energy)
    eta = None if guidance.sampler == "ddpm" else guidance.eta
    variance = guidance.variance if eta is None else "posterior"
    # resolved once: integer seeds become generators whose streams give x_T and then every
    # step's noise (seeded anew per use, the first step's noise would repeat x_T)
    gens = resolve_generators(generators, batch_size if x_T is None else x_T.shape[0])
    if x_T is None:
        x_T = initial_noise(prior.sample_shape, gens, batch_size, dtype, device)
    batch = x_T.shape[0]
    lam = _per_sample(guidance.step_scale(prior.schedule) if lam_B is None else lam_B, batch, x_T, "lam_B")
    cap = guidance.resolve_cap(cap_B)
    cap = None if cap is None else _per_sample(cap, batch, x_T, "cap_B").reshape(-1)
    schedule = prior.schedule

    log, defer = _FiniteLog(), defer_checks(x_T.device)

    def guide(x: torch.Tensor, i: int, t: int, t_prev: int):
        read = energy if guidance.psi_views == 1 else shifted_views(energy, guidance.psi_views, guidance.view_shift, i)
        out = guidance_step(prior, read, x, t, i, cap_B=cap, cap_mode=guidance.cap_mode, kappa=guidance.kappa,
                            grad_through_denoiser=guidance.grad_through_denoiser, variance=variance,
                            check=not defer)
        if defer:
            log.add(i, t, out)
        zeta_i = (tilted_score_step_size(schedule, t, t_prev, 1.0 if eta is None else eta)
                  if guidance.step_size == "tilted_score" else 1.0)
        shift = None if (t_prev < 0 and not guidance.final_shift) else (zeta_i * lam) * out.grad
        if shift is not None and guidance.shift_clip is not None:
            shift = clip_shift(shift, guidance.shift_clip * posterior_std(schedule, t, t_prev))
        return out, shift, {"psi": out.psi, "shift": shift}

    with speed.math():
        x_0 = reverse_process(prior.eps, x_T, schedule, eta=eta, callback=callback, disable=disable,
                              generator=gens, timesteps=guidance.timesteps(schedule), clip_x0=prior.clip_x0,
                              variance=variance, guide=guide, recurrence=guidance.recurrence)
    log.raise_first(energy, batch)
    return x_0


def sample_units(prior: Prior, energy_of: Callable[[torch.Tensor], Energy], units_B: torch.Tensor,
                 guidance: GuidanceConfig, seeds: Sequence[int], cap_B: torch.Tensor | float | None = None, *,
                 lam_B: torch.Tensor | float | None = None, batch_size: int = 64,
                 device: torch.device | str | None = None, callback: Callback | None = None,
                 disable: bool | None = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_BCHW, psi_B) on the CPU: one EnergyDPS sample per entry of ``units_B`` (units mixed
    in batches of ``batch_size``; ``energy_of(ids)`` is psi of one unit per sample), sample
    b drawn from seed ``seeds[b]`` (:func:`~klsc_lib.diffusion.guidance.sample_seeds`) with
    the cap ``cap_B[b]`` (a scalar or one value per sample, as the cap rule needs) and
    lambda ``lam_B[b]`` (default: the configured per-step scale)."""
    if len(seeds) != len(units_B):
        raise ValueError(f"need one seed per sample, got {len(seeds)} seeds for {len(units_B)} samples")
    cap = None if cap_B is None else torch.as_tensor(cap_B, dtype=torch.float32).expand(len(units_B))
    lam = None if lam_B is None else torch.as_tensor(lam_B, dtype=torch.float32).expand(len(units_B))
    xs, psis = [], []
    for s in range(0, len(units_B), batch_size):
        energy = energy_of(units_B[s:s + batch_size])
        x_BCHW = sample_energy_dps(prior, energy, guidance, cap_B=None if cap is None else cap[s:s + batch_size],
                                   lam_B=None if lam is None else lam[s:s + batch_size],
                                   generators=list(seeds[s:s + batch_size]), device=device, callback=callback,
                                   disable=disable)
        with torch.no_grad():
            psis.append(energy(x_BCHW).cpu())
        xs.append(x_BCHW.cpu())
    return torch.cat(xs), torch.cat(psis)
