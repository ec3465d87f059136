"""DDPMSchedule against the closed forms of the forward and posterior processes."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.diffusion.schedule import DDPMSchedule


def test_linear_betas_and_cumprod():
    s = DDPMSchedule()
    assert s.betas_T[0] == pytest.approx(1e-4) and s.betas_T[-1] == pytest.approx(0.02)
    assert torch.allclose(s.alphas_cumprod_T[1:] / s.alphas_cumprod_T[:-1], 1 - s.betas_T[1:])
    assert s.alphas_cumprod_T[-1] < 1e-4  # x_T is (almost) pure noise


def test_predict_x0_inverts_add_noise_and_score_eps_round_trip():
    s = DDPMSchedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,), generator=g)
    xt = s.add_noise(x0, eps, t)
    assert torch.allclose(s.predict_x0(xt, eps, t), x0, atol=1e-8)
    assert torch.allclose(s.eps_from_score(s.score_from_eps(eps, t), t), eps)


def test_step_with_true_noise_is_the_gaussian_posterior_mean():
    """With the exact eps, the noiseless step equals E[x_{t-1} | x_t, x_0] in closed form."""
    s = DDPMSchedule(num_train_timesteps=50)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(16, 2, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.full((16,), 30)
    xt = s.add_noise(x0, eps, t)
    out = s.step(eps, t, xt)
    ab, ab_prev, b = s.alphas_cumprod_T[30], s.alphas_cumprod_T[29], s.betas_T[30]
    mean = (ab_prev.sqrt() * b / (1 - ab)) * x0 + ((1 - b).sqrt() * (1 - ab_prev) / (1 - ab)) * xt
    assert torch.allclose(out.prev_sample, mean) and torch.allclose(out.pred_original_sample, x0)


def test_last_step_adds_no_noise_and_clip_applies():
    s = DDPMSchedule(num_train_timesteps=10)
    xt = torch.full((2, 1), 5.0, dtype=torch.float64)
    t = torch.zeros(2, dtype=torch.long)
    out = s.step(torch.zeros_like(xt), t, xt, noise=torch.ones_like(xt), clip_x0=(-1.0, 1.0))
    assert torch.all(out.pred_original_sample == 1.0)
    assert torch.allclose(out.prev_sample, out.pred_original_sample)


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        DDPMSchedule(beta_start=0.1, beta_end=0.01)
