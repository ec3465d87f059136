"""Sample metrics on signals with known answers: spectra of cosines and white noise,
pairwise distances against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from klsc_lib.analysis.sample_metrics import diversity, high_frequency_fraction, mean_pairwise_distance


def _cosine_image(cycles: int, side: int = 32) -> torch.Tensor:
    h = torch.arange(side, dtype=torch.float64)
    wave = torch.cos(2 * torch.pi * cycles * h / side)
    return (0.3 + 0.5 * wave[None, :] * wave[:, None]).expand(3, side, side)[None].float()


def test_low_frequency_image_has_no_high_frequency_energy():
    assert high_frequency_fraction(_cosine_image(1), radius=0.1).item() == pytest.approx(0, abs=1e-9)


def test_high_frequency_image_is_all_high_frequency():
    # 12 cycles over 32 pixels in both axes: radius sqrt(2) * 12 / 32 = 0.53 > 0.25
    assert high_frequency_fraction(_cosine_image(12), radius=0.25).item() == pytest.approx(1, abs=1e-9)


def test_white_noise_gives_the_area_fraction():
    side, radius = 32, 0.25
    noise = torch.randn(64, 3, side, side, generator=torch.Generator().manual_seed(0))
    f = np.fft.fftfreq(side)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    area = (r > radius).sum() / (r.size - 1)  # the zero frequency is removed with the mean
    frac = high_frequency_fraction(noise, radius)
    assert frac.mean().item() == pytest.approx(area, abs=3 * frac.std().item() / 8)


def test_constant_image_and_bad_input():
    assert high_frequency_fraction(torch.full((2, 3, 8, 8), 0.4)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="radius"):
        high_frequency_fraction(torch.zeros(1, 3, 8, 8), radius=0.8)


def test_identical_samples_have_zero_diversity():
    x = torch.rand(1, 3, 8, 8).expand(5, -1, -1, -1)
    assert diversity(x).item() == 0
    assert diversity(x, metric="cosine").item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_mean_pairwise_distance_matches_scipy(metric):
    feats = torch.randn(9, 7, generator=torch.Generator().manual_seed(2))
    assert mean_pairwise_distance(feats, metric).item() == pytest.approx(pdist(feats.numpy(), metric).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="two"):
        mean_pairwise_distance(feats[:1])


def test_diversity_in_a_feature_space():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    channel_means = lambda x_BCHW: x_BCHW.mean(dim=(2, 3))
    expected = pdist(x.mean(dim=(2, 3)).numpy()).mean()
    assert diversity(x, channel_means).item() == pytest.approx(expected, rel=1e-5)
