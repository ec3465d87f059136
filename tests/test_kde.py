"""KDE-KL estimator (paper App I.4, eq. 212) and the two-sample distances."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.analysis import kde
from klsc_lib.diffusion.gmm_oracle import GaussianMixture
from klsc_lib.worlds.gmm import four_mode_gmm


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(mean=(0.3, -0.4), std=0.8) -> GaussianMixture:
    return GaussianMixture(torch.tensor([mean], dtype=torch.float64),
                           (std**2 * torch.eye(2, dtype=torch.float64)).unsqueeze(0), torch.ones(1, dtype=torch.float64))


def test_grid_cells_tile_the_domain():
    grid = kde.Grid2D(-2.0, 2.0, 40)
    assert grid.points_GD.shape == (1600, 2)
    assert grid.cell_area * 1600 == pytest.approx(16.0)
    assert float(grid.points_GD.min()) == pytest.approx(-2.0 + 0.05)


def test_kde_density_integrates_to_one():
    samples = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = kde.Grid2D(-7.0, 7.0, 200)
    mass = kde.kde_log_density(samples, grid.points_GD, 0.3).exp().sum() * grid.cell_area
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_one_sample_kde_kl_is_the_gaussian_closed_form():
    """A single sample at mu gives q_h = N(mu, h^2 I); the smoothed prior N(mu, (s^2 + h^2) I):
    KL = D/2 (r - 1 - log r), r = h^2 / (s^2 + h^2)."""
    prior, h = gaussian(), 0.2
    r = h**2 / (0.8**2 + h**2)
    expected = 2 / 2 * (r - 1 - math.log(r))
    got = kde.kde_kl_to_prior(prior.means_KD, prior, h, kde.Grid2D(-5.0, 5.0, 300))
    assert got == pytest.approx(expected, rel=1e-3)


def test_kde_kl_is_small_for_prior_samples_and_grows_with_a_shift():
    gmm = four_mode_gmm()
    samples = gmm.sample(3000, generator=torch.Generator().manual_seed(1))
    grid = kde.Grid2D(-5.0, 5.0, 100)
    own = kde.kde_kl_to_prior(samples, gmm, 0.2, grid)
    shifted = kde.kde_kl_to_prior(samples + torch.tensor([0.5, 0.0], dtype=torch.float64), gmm, 0.2, grid)
    assert 0 <= own < 0.05 < shifted
    assert kde.kde_kl_between(samples, samples, 0.2, grid) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_of_point_masses_and_of_equal_laws():
    a = torch.zeros(5, 2, dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0]], dtype=torch.float64).expand(7, 2)
    assert kde.energy_distance(a, b) == pytest.approx(2 * 5.0)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, 2, generator=gen, dtype=torch.float64), torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    assert abs(kde.energy_distance(x, y)) < 0.01 < kde.energy_distance(x, y + 0.5)


def test_sliced_wasserstein_of_a_translation():
    """Shift by v: every projection moves by u.v, so SW2^2 = E_u (u.v)^2 = |v|^2 / D."""
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    sw = kde.sliced_wasserstein(x, x + v, num_projections=2000, generator=torch.Generator().manual_seed(4))
    assert sw == pytest.approx(5.0 / math.sqrt(2), rel=0.03)
    assert kde.sliced_wasserstein(x, x, generator=torch.Generator().manual_seed(4)) == pytest.approx(0.0, abs=1e-12)


def test_bad_inputs_are_rejected():
    nan = torch.tensor([[0.0, float("nan")], [1.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN"):
        kde.energy_distance(nan, nan)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        kde.kde_log_density(torch.zeros(3), torch.zeros(4, 2), 0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        kde.kde_log_density(torch.zeros(3, 2), torch.zeros(4, 2), 0.0)
