"""DDPM / DDIM samplers and the oracle GMM score (paper App I.3, eqs. 208-211)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from klsc_lib.diffusion.gmm_oracle import GMMOracle, GaussianMixture, gmm_oracle_prior
from klsc_lib.diffusion.samplers import (ancestral_step, initial_noise, renoise, sample_ddim, sample_ddpm,
                                         spaced_timesteps, step_alphas, step_pairs, tilted_score_step_size)
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.worlds.gmm import four_mode_gmm


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


def test_respaced_steps_multiply_back_to_the_kept_alpha_bars():
    """prod over the walked steps of (1 - beta_i), from the first step down to step t_j, is
    abar_{t_j} (guided-diffusion respacing keeps the marginals at the kept steps)."""
    schedule = DDPMSchedule()
    steps = spaced_timesteps(schedule, 37)
    pairs = step_pairs(steps)
    one_minus_beta = np.array([1 - step_alphas(schedule, t, tp)[2] for t, tp in pairs])
    # walking up from x_0: abar_{t_j} = prod_{i >= j} (1 - beta_i)
    kept = np.cumprod(one_minus_beta[::-1])[::-1]
    np.testing.assert_allclose(kept, schedule.alphas_cumprod_T.numpy()[steps.numpy()], rtol=1e-12)


@pytest.mark.parametrize("t, t_prev", [(500, 499), (700, 650), (30, 0)])
def test_ancestral_step_keeps_the_forward_marginals(t, t_prev):
    """If x_t ~ q(x_t | x0) and x_prev ~ q(x_prev | x_t, x0), then x_prev ~ N(sqrt(abar_prev) x0,
    (1 - abar_prev) I): checked by Monte Carlo, for consecutive and respaced steps."""
    schedule = DDPMSchedule()
    n, gen = 200_000, torch.Generator().manual_seed(5)
    x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
    x_t = schedule.add_noise(x0, torch.randn(n, 1, generator=gen, dtype=torch.float64), torch.full((n,), t))
    x_prev = ancestral_step(schedule, x_t, x0, t, t_prev, torch.randn(n, 1, generator=gen, dtype=torch.float64))
    abar_prev = float(schedule.alphas_cumprod_T[t_prev])
    assert abs(float(x_prev.mean()) - abar_prev**0.5 * 0.8) < 4 / n**0.5
    assert float(x_prev.var()) == pytest.approx(1 - abar_prev, rel=0.01, abs=4e-3)


@pytest.mark.parametrize("t, t_prev", [(500, 499), (700, 650), (30, -1)])
def test_renoise_takes_the_prev_marginal_to_the_t_marginal(t, t_prev):
    """Self-recurrence goes back up a step: x_prev ~ N(sqrt(abar_prev) x0, (1 - abar_prev)) re-noised
    must be N(sqrt(abar_t) x0, 1 - abar_t), by Monte Carlo (t_prev = -1: x_prev is x0 itself)."""
    schedule = DDPMSchedule()
    n, gen = 200_000, torch.Generator().manual_seed(6)
    abar = float(schedule.alphas_cumprod_T[t])
    abar_prev = float(schedule.alphas_cumprod_T[t_prev]) if t_prev >= 0 else 1.0
    x_prev = abar_prev**0.5 * 0.8 + (1 - abar_prev) ** 0.5 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x_t = renoise(schedule, x_prev, t, t_prev, torch.randn(n, 1, generator=gen, dtype=torch.float64))
    assert abs(float(x_t.mean()) - abar**0.5 * 0.8) < 4 / n**0.5
    assert float(x_t.var()) == pytest.approx(1 - abar, rel=0.01, abs=4e-3)


@pytest.mark.parametrize("t, t_prev", [(400, 399), (400, 350), (0, -1)])
def test_tilted_score_step_at_eta_one_is_the_ddpm_mean_derivative(t, t_prev):
    """d(posterior mean)/d(score) for DDPM is beta_i / sqrt(1 - beta_i): the DDIM formula at eta = 1
    (written through eps and x0-hat) must agree, and also the finite difference of ancestral_step."""
    schedule = DDPMSchedule()
    _, _, beta = step_alphas(schedule, t, t_prev)
    assert tilted_score_step_size(schedule, t, t_prev, eta=1.0) == pytest.approx(beta / math.sqrt(1 - beta), rel=1e-9)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    abar = float(schedule.alphas_cumprod_T[t])
    x0_of = lambda s: (x + (1 - abar) * s) / abar**0.5  # noqa: E731  (Tweedie with score s)
    h = 1e-6
    fd = (ancestral_step(schedule, x, x0_of(h), t, t_prev, None) - ancestral_step(schedule, x, x0_of(-h), t, t_prev, None)) / (2 * h)
    assert float(fd) == pytest.approx(tilted_score_step_size(schedule, t, t_prev, eta=1.0), rel=1e-6)


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


def test_ddpm_reproduces_an_asymmetric_mixtures_mean_and_covariance():
    """Monte Carlo mean / covariance of DDPM samples vs the mixture's closed-form moments."""
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]], dtype=torch.float64)
    covs = torch.stack([torch.tensor([[0.3, 0.1], [0.1, 0.2]]), 0.5 * torch.eye(2),
                        torch.tensor([[0.2, -0.05], [-0.05, 0.4]])]).double()
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    prior = gmm_oracle_prior(GaussianMixture(means, covs, w))
    n = 6000
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x0 = sample_ddpm(prior.eps, x_T, prior.schedule, generator=torch.Generator().manual_seed(5),
                     timesteps=spaced_timesteps(prior.schedule, 100), disable=True)
    mean = (w[:, None] * means).sum(0)
    cov = (w[:, None, None] * (covs + torch.einsum("ki,kj->kij", means - mean, means - mean))).sum(0)
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((x0.mean(0) - mean).abs() < 4 * se).all(), (x0.mean(0), mean)
    torch.testing.assert_close(torch.cov(x0.T), cov, atol=0.08, rtol=0.05)


def test_ddim_at_eta_one_is_ddpm_given_the_same_noise():
    """sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z equals the DDPM posterior mean + s z when
    s^2 is the posterior variance (Song et al. 2021, eq. 16): the same samples, same seeds."""
    oracle = GMMOracle(four_mode_gmm(), DDPMSchedule())
    seeds = list(range(10))
    x_T = initial_noise((2,), seeds, dtype=torch.float64)
    steps = spaced_timesteps(oracle.schedule, 30)
    torch.testing.assert_close(sample_ddim(oracle, x_T, oracle.schedule, generator=seeds, timesteps=steps, eta=1.0,
                                           disable=True),
                               sample_ddpm(oracle, x_T, oracle.schedule, generator=seeds, timesteps=steps, disable=True))


def test_per_sample_generators_make_batches_equal_single_runs():
    oracle = GMMOracle(four_mode_gmm(), DDPMSchedule())
    steps = spaced_timesteps(oracle.schedule, 20)
    seeds = [11, 12, 13]
    batch = sample_ddpm(oracle, initial_noise((2,), seeds, dtype=torch.float64), oracle.schedule, generator=seeds,
                        timesteps=steps, disable=True)
    single = torch.cat([sample_ddpm(oracle, initial_noise((2,), [s], dtype=torch.float64), oracle.schedule,
                                    generator=[s], timesteps=steps, disable=True) for s in seeds])
    torch.testing.assert_close(batch, single)
    with pytest.raises(ValueError, match="one per sample"):
        sample_ddpm(oracle, torch.zeros(2, 2, dtype=torch.float64), oracle.schedule, generator=seeds, disable=True)
