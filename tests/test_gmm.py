"""The App H / I.3 Gaussian mixture: oracle score, noising, sampling, angular score."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.diffusion.gmm_oracle import GaussianMixture
from klsc_lib.energies.toy import AngularScore
from klsc_lib.worlds.gmm import four_mode_gmm


def test_score_is_gradient_of_log_density_at_every_noise_level():
    gmm = four_mode_gmm()
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    for abar in (1.0, 0.5, 0.01):
        noised = gmm.noised(abar)
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(noised.log_prob(xr).sum(), xr)
        assert torch.allclose(grad, noised.score(x), atol=1e-10)


def test_noised_mixture_matches_sampled_moments():
    gmm = four_mode_gmm()
    g = torch.Generator().manual_seed(1)
    x0 = gmm.sample(200_000, generator=g)
    abar = 0.3
    xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    noised = gmm.noised(abar)
    mean = (noised.weights_K[:, None] * noised.means_KD).sum(0)
    second = sum(w * (c + m[:, None] * m[None, :]) for w, m, c in zip(noised.weights_K, noised.means_KD, noised.covs_KDD))
    assert torch.allclose(xt.mean(0), mean, atol=0.02)
    assert torch.allclose(xt.T @ xt / len(xt), second, atol=0.05)


def test_mode_frequencies_are_uniform():
    gmm = four_mode_gmm()
    x = gmm.sample(40_000, generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(gmm.responsibilities(x).argmax(-1), minlength=4).double() / len(x)
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)


def test_angular_score_range_and_symmetry():
    psi = AngularScore(theta0=math.pi / 4, scale=3.0)
    diag = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert torch.allclose(psi(diag), torch.zeros(2), atol=1e-6)
    assert psi(torch.tensor([[-1.0, -1.0]])).item() == pytest.approx(psi.max_value, rel=1e-6)
    # reflection about the diagonal leaves the deviation unchanged
    x = torch.randn(100, 2)
    assert torch.allclose(psi(x), psi(x.flip(-1)), atol=1e-5)


def test_bad_shapes_and_weights_rejected():
    with pytest.raises(ValueError, match="shapes"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2).expand(3, 2, 2), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2), torch.full((2,), 0.3))
