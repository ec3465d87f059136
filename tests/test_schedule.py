"""DDPMSchedule against independent facts: the float64 product of (1 - beta), the
forward process's moments by Monte Carlo, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klsc_lib.interfaces import DDPMSchedule


def test_alpha_bar_is_the_float64_product_of_one_minus_beta():
    s = DDPMSchedule()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    np.testing.assert_allclose(s.alphas_cumprod_T.numpy(), np.cumprod(1.0 - betas), rtol=1e-12)
    assert s.alphas_cumprod_T[-1] < 1e-4  # x_T is (almost) pure noise


@pytest.mark.parametrize("t", [10, 300, 900])
def test_add_noise_has_the_forward_marginal_moments(t):
    """x_t | x0 ~ N(sqrt(abar_t) x0, (1 - abar_t) I), by Monte Carlo."""
    s = DDPMSchedule()
    n, g = 200_000, torch.Generator().manual_seed(t)
    x0 = torch.full((n, 1), -1.3, dtype=torch.float64)
    xt = s.add_noise(x0, torch.randn(n, 1, generator=g, dtype=torch.float64), torch.full((n,), t))
    abar = float(np.prod(1 - np.linspace(1e-4, 0.02, 1000)[: t + 1]))
    assert abs(float(xt.mean()) + 1.3 * abar**0.5) < 4 / n**0.5
    assert float(xt.var()) == pytest.approx(1 - abar, rel=0.01, abs=1e-4)


def test_predict_x0_inverts_add_noise_and_score_eps_round_trip():
    s = DDPMSchedule()
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.randint(0, 1000, (8,), generator=g)
    xt = s.add_noise(x0, eps, t)
    assert torch.allclose(s.predict_x0(xt, eps, t), x0, atol=1e-8)
    assert torch.allclose(s.eps_from_score(s.score_from_eps(eps, t), t), eps)


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        DDPMSchedule(beta_start=0.1, beta_end=0.01)
