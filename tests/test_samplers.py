"""DDPM / DDIM samplers and the oracle GMM score (paper App I.3, eqs. 208-211; RM §10)."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.diffusion.gmm_oracle import GMMOracle, gmm_oracle_prior
from klsc_lib.diffusion.samplers import (ancestral_step, sample_ddim, sample_ddpm, spaced_timesteps,
                                         tilted_score_step_size)
from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.worlds.gmm import GaussianMixture, four_mode_gmm


pytestmark = pytest.mark.usefixtures("one_thread")


def single_gaussian(mean=(0.5, -1.0), std=0.7) -> GaussianMixture:
    return GaussianMixture(torch.tensor([mean], dtype=torch.float64),
                           (std**2 * torch.eye(2, dtype=torch.float64)).unsqueeze(0),
                           torch.ones(1, dtype=torch.float64))


def test_spaced_timesteps_cover_the_schedule():
    schedule = DDPMSchedule()
    steps = spaced_timesteps(schedule, 100)
    assert len(steps) == 100 and steps[0] == 999 and steps[-1] == 0
    assert bool((steps[:-1] > steps[1:]).all())
    assert torch.equal(spaced_timesteps(schedule), torch.arange(999, -1, -1))
    with pytest.raises(ValueError, match="num_steps"):
        spaced_timesteps(schedule, 0)


def test_samplers_reject_bad_timesteps():
    oracle = GMMOracle(four_mode_gmm(), DDPMSchedule())
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddpm(oracle, x, oracle.schedule, timesteps=torch.tensor([10, 20, 0]), disable=True)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample_ddim(oracle, x, oracle.schedule, timesteps=torch.tensor([1000, 0]), disable=True)


def test_ancestral_step_with_consecutive_steps_is_the_schedule_step():
    schedule = DDPMSchedule()
    gen = torch.Generator().manual_seed(0)
    x, x0, noise = (torch.randn(5, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    for t in (999, 500, 1):
        t_B = torch.full((5,), t)
        eps = (x - schedule.alphas_cumprod_T[t].sqrt() * x0) / (1 - schedule.alphas_cumprod_T[t]).sqrt()
        expected = schedule.step(eps, t_B, x, noise=noise).prev_sample
        torch.testing.assert_close(ancestral_step(schedule, x, x0, t, t - 1, noise), expected)
    # the last step returns the posterior mean, no noise
    eps0 = (x - schedule.alphas_cumprod_T[0].sqrt() * x0) / (1 - schedule.alphas_cumprod_T[0]).sqrt()
    torch.testing.assert_close(ancestral_step(schedule, x, x0, 0, -1, noise),
                               schedule.step(eps0, torch.zeros(5, dtype=torch.long), x).prev_sample)


def test_tilted_score_step_size_is_beta_over_sqrt_alpha():
    schedule = DDPMSchedule()
    beta = float(schedule.betas_T[400])
    assert tilted_score_step_size(schedule, 400, 399) == pytest.approx(beta / math.sqrt(1 - beta), rel=1e-9)


def test_oracle_score_is_the_gradient_of_the_noised_log_density():
    gmm = four_mode_gmm()
    oracle = GMMOracle(gmm, DDPMSchedule())
    gen = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(64, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)
    t_B = torch.randint(0, 1000, (64,), generator=gen)
    (autograd,) = torch.autograd.grad(oracle.log_prob(x, t_B).sum(), x)
    torch.testing.assert_close(oracle.score(x.detach(), t_B), autograd)


def test_oracle_matches_the_noised_mixture_and_tweedie_for_a_gaussian():
    schedule = DDPMSchedule()
    gmm = four_mode_gmm()
    oracle = GMMOracle(gmm, schedule)
    x = torch.randn(16, 2, dtype=torch.float64)
    abar = schedule.alphas_cumprod_T[300]
    torch.testing.assert_close(oracle.score(x, torch.full((16,), 300)), gmm.noised(abar).score(x))
    torch.testing.assert_close(oracle.log_prob(x, torch.full((16,), 300)), gmm.noised(abar).log_prob(x))
    # Tweedie for N(mu, s^2 I): E[x0|x_t] = mu + sqrt(abar) s^2 / (abar s^2 + 1 - abar) (x_t - sqrt(abar) mu)
    g = single_gaussian()
    mu, s2 = g.means_KD[0], 0.49
    expected = mu + abar.sqrt() * s2 / (abar * s2 + 1 - abar) * (x - abar.sqrt() * mu)
    torch.testing.assert_close(GMMOracle(g, schedule).predict_x0(x, torch.full((16,), 300)), expected)


def test_oracle_rejects_wrong_shapes():
    oracle = GMMOracle(four_mode_gmm(), DDPMSchedule())
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        oracle(torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.long))


def test_ddpm_with_the_oracle_reproduces_the_gmm():
    """lambda = 0: mode weights within 3 standard errors, within-mode spread right."""
    gmm = four_mode_gmm()
    prior = gmm_oracle_prior(gmm)
    n = 4000
    gen = torch.Generator().manual_seed(2)
    x_T = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x0 = sample_ddpm(prior.eps, x_T, prior.schedule, generator=gen, timesteps=spaced_timesteps(prior.schedule, 100),
                     disable=True)
    mode_N = gmm.responsibilities(x0).argmax(1)
    freq_K = torch.bincount(mode_N, minlength=4).double() / n
    se = math.sqrt(0.25 * 0.75 / n)
    assert (freq_K - 0.25).abs().max() < 3 * se, freq_K
    within_std = (x0 - gmm.means_KD[mode_N]).std(0)
    assert torch.allclose(within_std, torch.full((2,), 0.6, dtype=torch.float64), rtol=0.06), within_std


def test_ddim_is_deterministic_and_maps_noise_affinely_onto_a_gaussian():
    g = single_gaussian()
    oracle = GMMOracle(g, DDPMSchedule())
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    steps = spaced_timesteps(oracle.schedule, 200)
    a = sample_ddim(oracle, x_T, oracle.schedule, timesteps=steps, disable=True)
    b = sample_ddim(oracle, x_T, oracle.schedule, timesteps=steps, disable=True)
    torch.testing.assert_close(a, b)
    # for a Gaussian prior the probability-flow map is affine: x_T ~> mu + s (x_T - 0) per coordinate
    assert torch.allclose(a.mean(0), g.means_KD[0] + 0.7 * x_T.mean(0), atol=0.01)
    assert torch.allclose(a.std(0), 0.7 * x_T.std(0), rtol=0.02)
