"""EnergyDPS (paper Sec 2.3, Algorithm 1 rebuilt in RM §10, App G)."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.diffusion.energy_dps import NonFiniteGuidance, sample_energy_dps
from klsc_lib.diffusion.gmm_oracle import GMMOracle
from klsc_lib.diffusion.samplers import sample_ddpm, spaced_timesteps
from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.worlds.gmm import AngularScore, GaussianMixture, four_mode_gmm


pytestmark = pytest.mark.usefixtures("one_thread")


SCHEDULE = DDPMSchedule()
STEPS = spaced_timesteps(SCHEDULE, 100)


def gaussian_oracle(mean=(0.5, -1.0), std=0.7) -> GMMOracle:
    g = GaussianMixture(torch.tensor([mean], dtype=torch.float64),
                        (std**2 * torch.eye(2, dtype=torch.float64)).unsqueeze(0), torch.ones(1, dtype=torch.float64))
    return GMMOracle(g, SCHEDULE)


def noise(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen, dtype=torch.float64), gen


def test_linear_psi_on_a_gaussian_gives_the_shifted_gaussian_tilt():
    """p = N(mu, s^2 I), psi = a.x: q_lambda = N(mu + lambda s^2 a, s^2 I) (Def 2.2). With the
    tilted-score step and the gradient through the denoiser the plug-in guidance is exact here;
    all 1000 steps, since DDPM's posterior-variance choice shrinks the variance at coarse spacing."""
    mu, s, lam = torch.tensor([0.5, -1.0], dtype=torch.float64), 0.7, 1.5
    a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    n = 4000
    x_T, gen = noise(n, 1)
    x0 = sample_energy_dps(gaussian_oracle(), x_T, SCHEDULE, lambda x: x @ a, lam, generator=gen,
                           step_size="tilted_score", disable=True)
    expected_mean = mu + lam * s**2 * a
    se = s / math.sqrt(n)
    assert (x0.mean(0) - expected_mean).abs().max() < 4 * se + 0.01, (x0.mean(0), expected_mean)
    torch.testing.assert_close(x0.var(0), torch.full((2,), s**2, dtype=torch.float64), rtol=0.06, atol=0)


def test_lambda_zero_is_plain_ddpm():
    oracle = GMMOracle(four_mode_gmm(), SCHEDULE)
    x_T, _ = noise(300, 2)
    guided = sample_energy_dps(oracle, x_T, SCHEDULE, AngularScore(), 0.0, generator=torch.Generator().manual_seed(20),
                               timesteps=STEPS, disable=True)
    plain = sample_ddpm(oracle, x_T, SCHEDULE, generator=torch.Generator().manual_seed(20), timesteps=STEPS,
                        disable=True)
    torch.testing.assert_close(guided, plain)


def test_guidance_raises_the_mean_score_monotonically():
    oracle = GMMOracle(four_mode_gmm(), SCHEDULE)
    psi = AngularScore()
    means = []
    for lam in (0.0, 0.05, 0.2):
        x_T, gen = noise(500, 3)
        means.append(float(psi(sample_energy_dps(oracle, x_T, SCHEDULE, psi, lam, generator=gen, timesteps=STEPS,
                                                 step_size="tilted_score", disable=True)).mean()))
    assert means[0] < means[1] < means[2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_psi_raises_naming_the_step(bad):
    calls = {"n": 0}

    def psi(x):
        calls["n"] += 1
        out = x.sum(-1)
        return out * bad if calls["n"] == 4 else out

    x_T, gen = noise(8, 4)
    with pytest.raises(NonFiniteGuidance, match=r"reverse step 3 \(diffusion timestep t=\d+\)"):
        sample_energy_dps(gaussian_oracle(), x_T, SCHEDULE, psi, 1.0, generator=gen, timesteps=STEPS, disable=True)


def test_psi_must_return_one_value_per_sample():
    x_T, gen = noise(8, 5)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(8,\)"):
        sample_energy_dps(gaussian_oracle(), x_T, SCHEDULE, lambda x: x, 1.0, generator=gen, timesteps=STEPS,
                          disable=True)


def test_cap_zeroes_the_guidance_once_psi_exceeds_it():
    """J.2 'clip': grad min(psi, c) = 0 where psi >= c; a cap below every psi value is
    unguided sampling, a cap above every value is uncapped guidance."""
    oracle = gaussian_oracle()
    psi = lambda x: x[:, 0]  # noqa: E731

    def run(lam, cap):
        x_T, gen = noise(200, 6)
        return sample_energy_dps(oracle, x_T, SCHEDULE, psi, lam, cap=cap, generator=gen, timesteps=STEPS,
                                 disable=True)

    torch.testing.assert_close(run(1.0, -1e9), run(0.0, None))
    torch.testing.assert_close(run(1.0, 1e9), run(1.0, None))
    assert not torch.allclose(run(1.0, 0.5), run(1.0, None))


def test_gradients_are_per_sample():
    """Sample 0's trajectory does not depend on the other members of the batch."""
    oracle = GMMOracle(four_mode_gmm(), SCHEDULE)
    psi = AngularScore()
    x_T, _ = noise(6, 7)
    other = torch.randn(6, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    out = []
    for batch in (x_T, torch.cat([x_T[:1], other[1:]])):
        out.append(sample_energy_dps(oracle, batch, SCHEDULE, psi, 0.3, generator=torch.Generator().manual_seed(8),
                                     timesteps=STEPS, disable=True)[0])
    torch.testing.assert_close(out[0], out[1])


def test_denoiser_gradient_option_agrees_when_eps_ignores_x():
    """With eps independent of x, d x0-hat / d x_t = I / sqrt(abar): both options coincide."""
    const_eps = lambda x, t: torch.full_like(x, 0.1)  # noqa: E731
    psi = lambda x: -(x - 1.0).square().sum(-1)  # noqa: E731
    x_T, _ = noise(16, 9)
    runs = [sample_energy_dps(const_eps, x_T, SCHEDULE, psi, 0.5, grad_through_denoiser=flag,
                              generator=torch.Generator().manual_seed(10), timesteps=STEPS, disable=True)
            for flag in (True, False)]
    torch.testing.assert_close(runs[0], runs[1])


def test_generic_over_image_shapes_with_clipping():
    """(B, C, H, W) with a toy eps model, clip_x0 and a mean-activation psi (notebook 04 shape)."""
    eps_model = lambda x, t: 0.5 * x  # noqa: E731
    psi = lambda x: x.mean(dim=(1, 2, 3))  # noqa: E731
    gen = torch.Generator().manual_seed(11)
    x_T = torch.randn(3, 3, 8, 8, generator=gen)
    seen = []
    out = sample_energy_dps(eps_model, x_T, SCHEDULE, psi, 2.0, generator=gen, timesteps=spaced_timesteps(SCHEDULE, 20),
                            clip_x0=(-1.0, 1.0), callback=lambda d: seen.append(d["denoised"].abs().max()),
                            disable=True)
    assert out.shape == x_T.shape and out.dtype == x_T.dtype and torch.isfinite(out).all()
    assert len(seen) == 20 and max(seen) <= 1.0


def test_unknown_step_size_is_rejected():
    x_T, gen = noise(2, 12)
    with pytest.raises(ValueError, match="step_size"):
        sample_energy_dps(gaussian_oracle(), x_T, SCHEDULE, lambda x: x.sum(-1), 1.0, step_size="dps", disable=True)
