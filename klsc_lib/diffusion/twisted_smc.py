"""Twisted sequential Monte Carlo towards the KLSC tilt (paper eq. 24; the twisted
diffusion sampler of Wu et al. 2023, "Practical and asymptotically exact conditional
sampling in diffusion models"): EnergyDPS proposes, importance weights correct.

The target is q*(x) ∝ p(x) e^{lambda psi(x)} (the tilt, lambda in psi's units, e.g.
solved on a pool by :func:`klsc_lib.constraints.exact_reference.solve_tilt`). Each unit
runs ``n_particles`` particles; at reverse step i the twist is the plug-in
log h_i(x_i) = lambda psi(x0-hat(x_i)) (App G eq. 193), the proposal is the guided DDPM
step x_{i-1} = mu(x_i) + zeta_i lambda grad log h_i + sigma_i z (``step_size``
"tilted_score", so the step samples with score + grad log h_i), and the incremental
log weight is

    log h_{i-1}(x_{i-1}) - log h_i(x_i) + log N(x_{i-1}; mu, sigma^2) - log N(x_{i-1}; mu + s, sigma^2),

the last two terms = -(|s|^2 + 2 sigma s.z) / (2 sigma^2) per element, summed. The last
step is the unguided one (x_0 = the posterior mean, no shift) and the final twist is
the exact e^{lambda psi(x_0)}, so the weighted particles target q* for any proposal:
the error vanishes as the particles grow (the plug-in's bias does not). Particles are
resampled (systematic, within a unit) when a unit's effective sample size falls below
``ess_threshold`` of its particles, and once at the end to equal weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from klsc_lib.diffusion.energy_dps import guidance_step
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.samplers import (Callback, Generators, ancestral_step, initial_noise, noise_like,
                                         resolve_generators, respaced_log_variance, step_alphas, step_pairs,
                                         tilted_score_step_size)
from klsc_lib.energies.base import Energy
from klsc_lib.interfaces import Prior


@dataclass(frozen=True)
class SMCResult:
    """Equal-weight samples of each unit (unit-major, ``n_particles`` per unit) and how
    the particle system fared."""

    x_B: torch.Tensor  # (U * n_particles, ...) resampled to equal weights
    psi_B: torch.Tensor  # psi of x_B
    ess_U: torch.Tensor  # final effective sample size per unit, before the last resampling
    resamples_U: torch.Tensor  # resampling events per unit during the chain
    ancestors_U: torch.Tensor  # distinct particles behind each unit's final samples


def effective_sample_size(log_w_UK: torch.Tensor) -> torch.Tensor:
    """(sum w)^2 / sum w^2 per row of log weights."""
    w = torch.softmax(log_w_UK, dim=-1)
    return 1.0 / w.square().sum(-1)


def systematic_resample(log_w_K: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """K indices by systematic resampling (one uniform offset) of the normalised weights."""
    k = len(log_w_K)
    w = torch.softmax(log_w_K.double().cpu(), dim=0)
    u0 = torch.rand((), generator=generator, dtype=torch.float64)
    positions = (u0 + torch.arange(k, dtype=torch.float64)) / k
    return torch.searchsorted(torch.cumsum(w, 0), positions).clamp_(max=k - 1)


def sample_twisted_smc(prior: Prior, energy: Energy, guidance: GuidanceConfig, lam_U: torch.Tensor,
                       n_particles: int, *, generators: Generators, resample_generators: list[torch.Generator],
                       ess_threshold: float = 0.5, anneal: bool = False, device: torch.device | str | None = None,
                       callback: Callback | None = None, disable: bool | None = None) -> SMCResult:
    """Twisted SMC for U units at once: particle b belongs to unit b // ``n_particles``;
    ``energy`` scores psi of each particle's unit (as :func:`sample_units` builds it),
    ``lam_U`` is each unit's tilt lambda, ``generators`` one per particle (its noise),
    ``resample_generators`` one per unit. ``guidance`` gives the steps, the gradient path
    and the variance; it must be DDPM with ``step_size="tilted_score"`` and
    ``cap_rule="none"`` (the target is the uncapped tilt)."""
    if guidance.sampler != "ddpm" or guidance.step_size != "tilted_score" or guidance.cap_rule != "none":
        raise ValueError("twisted SMC targets p e^{lambda psi}: use GuidanceConfig(sampler='ddpm', "
                         "step_size='tilted_score', cap_rule='none'), got "
                         f"sampler={guidance.sampler!r}, step_size={guidance.step_size!r}, "
                         f"cap_rule={guidance.cap_rule!r}")
    if not guidance.plain_steps:
        raise ValueError("twisted SMC weights one plain guided step on psi itself: use psi_views=1, recurrence=1 "
                         f"and shift_clip=None, got {guidance.psi_views}, {guidance.recurrence}, {guidance.shift_clip}")
    lam_U = torch.as_tensor(lam_U, dtype=torch.float32).flatten()
    n_units = len(lam_U)
    if len(resample_generators) != n_units:
        raise ValueError(f"need one resampling generator per unit ({n_units}), got {len(resample_generators)}")
    if n_particles < 2 or not 0.0 < ess_threshold <= 1.0:
        raise ValueError(f"need n_particles >= 2 and 0 < ess_threshold <= 1, got {n_particles}, {ess_threshold}")
    batch = n_units * n_particles
    gens = resolve_generators(generators, batch)
    x = initial_noise(prior.sample_shape, gens, batch, device=device)
    lam_B = lam_U.to(x.device).repeat_interleave(n_particles)
    view = (-1,) + (1,) * (x.ndim - 1)
    schedule, variance = prior.schedule, guidance.variance
    log_w_B = torch.zeros(batch, dtype=torch.float64, device=x.device)
    prev_twist_B = torch.zeros(batch, dtype=torch.float64, device=x.device)
    log_pq_B = torch.zeros(batch, dtype=torch.float64, device=x.device)
    resamples_U = torch.zeros(n_units, dtype=torch.long)
    ancestry_B = torch.arange(batch)

    def resample(rows: list[int]) -> torch.Tensor:
        """Indices into the batch after resampling units ``rows`` (others kept)."""
        idx = torch.arange(batch)
        w_UK = log_w_B.view(n_units, n_particles).cpu()
        for u in rows:
            idx[u * n_particles:(u + 1) * n_particles] = u * n_particles + systematic_resample(
                w_UK[u], resample_generators[u])
        return idx

    for i, (t, t_prev) in enumerate(tqdm(step_pairs(guidance.timesteps(schedule)), disable=disable)):
        out = guidance_step(prior, energy, x, t, i, grad_through_denoiser=guidance.grad_through_denoiser,
                            variance=variance)
        kappa = float(schedule.alphas_cumprod_T[t]) if anneal else 1.0  # twist lambda_i = kappa_i lambda
        twist_B = kappa * lam_B.double() * out.psi.double()
        log_w_B += twist_B - prev_twist_B + log_pq_B
        low = (effective_sample_size(log_w_B.view(n_units, n_particles)) < ess_threshold * n_particles).nonzero()
        rows = low.flatten().tolist()
        denoised, grad, log_var = out.denoised, out.grad, out.log_variance
        if rows:
            idx = resample(rows).to(x.device)
            x, denoised, grad, twist_B = x[idx], denoised[idx], grad[idx], twist_B[idx]
            log_var = None if log_var is None else log_var[idx]
            ancestry_B = ancestry_B[idx.cpu()]
            log_w_B.view(n_units, n_particles)[rows] = 0.0
            resamples_U[rows] += 1
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": denoised, "psi": out.psi, "log_w": log_w_B})
        with torch.no_grad():
            mean = ancestral_step(schedule, x, denoised, t, t_prev, None)
            if t_prev < 0:  # the last step: the posterior mean, unguided (a shift here would never be denoised)
                x, log_pq_B = mean, torch.zeros_like(log_pq_B)
            else:
                abar, abar_prev, beta = step_alphas(schedule, t, t_prev)
                sigma = ((0.5 * respaced_log_variance(schedule, log_var, t, t_prev)).exp() if log_var is not None
                         else torch.full_like(x, (beta * (1 - abar_prev) / (1 - abar)) ** 0.5))
                z = noise_like(x, gens)
                shift = tilted_score_step_size(schedule, t, t_prev) * kappa * lam_B.reshape(view) * grad
                x = mean + sigma * z + shift
                log_pq_B = -((shift.square() + 2 * sigma * shift * z) / (2 * sigma.square())).flatten(1).sum(1).double()
        prev_twist_B = twist_B
    with torch.no_grad():
        psi_B = energy(x).float()
    log_w_B += lam_B.double() * psi_B.double() - prev_twist_B + log_pq_B
    ess_U = effective_sample_size(log_w_B.view(n_units, n_particles)).float().cpu()
    idx = resample(list(range(n_units)))
    ancestry_B = ancestry_B[idx]
    ancestors_U = torch.tensor([len(set(ancestry_B[u * n_particles:(u + 1) * n_particles].tolist()))
                                for u in range(n_units)])
    return SMCResult(x[idx.to(x.device)].cpu(), psi_B[idx.to(psi_B.device)].cpu(), ess_U, resamples_U, ancestors_U)
