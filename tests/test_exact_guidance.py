"""Exact tilt guidance grad log h_t for a Gaussian-mixture prior (paper Theorem G.3)."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.diffusion.exact_guidance import ExactTiltGuidance, gauss_hermite_grid
from klsc_lib.diffusion.gmm_oracle import GMMOracle, GaussianMixture
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.energies import Energy, angular_energy
from klsc_lib.worlds.gmm import four_mode_gmm

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def test_gauss_hermite_grid_integrates_gaussian_moments():
    z, log_w = gauss_hermite_grid(2, 6)
    w = log_w.exp()
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
    assert float((w * z[:, 0] ** 4).sum()) == pytest.approx(3.0, rel=1e-10)  # E Z^4 = 3
    assert float((w * z[:, 0] ** 2 * z[:, 1] ** 2).sum()) == pytest.approx(1.0, rel=1e-10)


def test_linear_psi_on_a_gaussian_matches_the_closed_form():
    """p = N(mu, Sigma), psi = c.x: h_t ∝ exp(lambda c.m(x_t)), so grad log h_t = lambda (a / s^2) S c."""
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.8]], dtype=F64)
    g = GaussianMixture(torch.tensor([[1.0, -0.5]], dtype=F64), cov[None], torch.ones(1, dtype=F64))
    schedule = DDPMSchedule()
    c, lam = torch.tensor([1.0, -2.0], dtype=F64), 0.7
    exact = ExactTiltGuidance(GMMOracle(g, schedule), Energy(lambda x: x @ c, "linear"), lam, order=12)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for t in (50, 400, 900):
        abar = schedule.alphas_cumprod_T[t]
        a, s2 = abar.sqrt(), 1 - abar
        S = torch.linalg.inv(torch.linalg.inv(cov) + a**2 / s2 * torch.eye(2, dtype=F64))
        expected = (lam * a / s2 * S @ c).expand(5, 2)
        torch.testing.assert_close(exact.grad_log_h(x, torch.full((5,), t)), expected, rtol=1e-8, atol=1e-10)


def test_log_h_matches_a_monte_carlo_posterior_expectation():
    """log E[e^{lambda psi(X0)} | X_t = x] by importance weighting prior draws with the
    likelihood N(x; a x0, s^2 I), for the four-mode mixture and the angular score."""
    gmm, schedule, psi, lam = four_mode_gmm(), DDPMSchedule(), angular_energy(), 0.3
    exact = ExactTiltGuidance(GMMOracle(gmm, schedule), psi, lam, order=32)
    x0 = gmm.sample(400_000, generator=torch.Generator().manual_seed(1))
    t = 300
    abar = float(schedule.alphas_cumprod_T[t])
    x = torch.tensor([[1.0, 2.0], [-2.0, 0.5], [0.3, -0.2]], dtype=F64)
    log_lik = -0.5 * torch.cdist(x, abar**0.5 * x0).square() / (1 - abar)
    mc = torch.logsumexp(log_lik + lam * psi(x0), 1) - torch.logsumexp(log_lik, 1)
    torch.testing.assert_close(exact.log_h(x, torch.full((3,), t)), mc, atol=0.02, rtol=0)
