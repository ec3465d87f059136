"""MACO (paper App J.3.1): phase-only optimisation with a magnitude spectrum estimated
from the world's images, batched over samples with per-sample energies and seeds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from klsc_lib.baselines.maco import (MacoPrior, crop_resize, decorrelate, estimate_magnitude_spectrum, maco,
                                     recorrelate, resize_spectrum)

SIDE = 16


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def prior() -> MacoPrior:
    """Smooth images with strongly correlated colour channels."""
    g = torch.Generator().manual_seed(0)
    grey = F.interpolate(torch.randn(64, 1, 8, 8, generator=g), size=SIDE, mode="bilinear")
    images = torch.cat([grey, 0.8 * grey, 0.5 * grey], dim=1) + 0.2 * torch.randn(64, 3, SIDE, SIDE, generator=g)
    return MacoPrior.from_images(images.clamp(-1, 1))


def channel_mean(channel_B: list[int]):
    """Per-sample energy: mean of colour channel channel_B[i] of image i."""
    idx = torch.tensor(channel_B)
    return lambda x_BCHW: x_BCHW[torch.arange(len(idx)), idx].mean(dim=(1, 2))


def test_colour_basis_decorrelates_the_images():
    g = torch.Generator().manual_seed(1)
    mix = torch.tensor([[1.0, 0.2, 0.1], [0.9, 0.5, 0.0], [0.7, 0.1, 0.4]])
    images = torch.einsum("ij,njhw->nihw", mix, torch.randn(200, 3, 8, 8, generator=g))
    colour = MacoPrior.from_images(images).colour_CC
    dec = decorrelate(images, colour).permute(0, 2, 3, 1).reshape(-1, 3)
    cov = torch.cov(dec.T.double())
    assert torch.allclose(cov - torch.diag(cov.diag()), torch.zeros(3, 3, dtype=torch.double), atol=1e-4)
    assert torch.allclose(recorrelate(decorrelate(images, colour), colour), images, atol=1e-4)


def test_spectrum_peaks_at_the_images_frequency():
    h = torch.arange(SIDE).float()
    wave = torch.cos(2 * torch.pi * 3 * h / SIDE)[None, None, None, :].expand(5, 3, SIDE, SIDE)
    mag = estimate_magnitude_spectrum(wave, torch.eye(3))
    assert mag.shape == (3, SIDE, SIDE // 2 + 1)
    assert int(mag[0].argmax()) == 3  # row 0 (no vertical frequency), column 3
    assert torch.allclose(mag[0, 0, 3], torch.tensor(SIDE * SIDE / 2.0))
    # resizing keeps the frequency in cycles per pixel: 3 / 16 -> 12 / 64
    assert int(resize_spectrum(mag, 4 * SIDE)[0, 0].argmax()) == 12


def test_centre_crop_of_quarter_side_is_an_exact_copy():
    x = torch.randn(2, 3, 4 * SIDE, 4 * SIDE)
    crop = crop_resize(x, torch.full((2, 1, 2), 0.5), torch.full((2, 1), 0.25), SIDE)[:, 0]
    lo = 3 * SIDE // 2
    assert torch.allclose(crop, x[:, :, lo:lo + SIDE, lo:lo + SIDE], atol=1e-5)


def test_buffer_keeps_its_magnitude_spectrum(prior):
    res = maco(channel_mean([0, 1]), prior, 2, SIDE, steps=30, seeds=[0, 1], disable=True)
    start = maco(channel_mean([0, 1]), prior, 2, SIDE, steps=0, seeds=[0, 1], disable=True)
    assert (res.buffer_BCHW - start.buffer_BCHW).abs().max() > 0.5  # the phase did move
    mag = resize_spectrum(prior.magnitude_CHF, 4 * SIDE)[..., 1:-1]
    # columns 1 .. W/2-1 of an rFFT2 are free of the Hermitian constraint: |spectrum| = mag * scale
    ratio_B = torch.fft.rfft2(res.buffer_BCHW)[..., 1:-1].abs() / mag
    ratio_B = ratio_B.flatten(1)
    spread = (ratio_B.std(dim=1) / ratio_B.mean(dim=1)).max()
    assert spread < 1e-4


def test_psi_rises_with_steps(prior):
    history = []
    energy = channel_mean([0, 0, 2])
    before = maco(energy, prior, 3, SIDE, steps=0, seeds=[0, 1, 2], disable=True).psi_B
    after = maco(energy, prior, 3, SIDE, steps=60, seeds=[0, 1, 2], disable=True,
                 callback=lambda d: history.append(d["psi_B"])).psi_B
    assert (after > before + 0.1).all()
    crops = torch.stack(history)
    assert (crops[-10:].mean(dim=0) > crops[0] + 0.05).all()  # crops are noisier than the centre


def test_batch_equals_single_runs(prior):
    seeds, channels = [3, 4, 5], [0, 1, 2]
    batch = maco(channel_mean(channels), prior, 3, SIDE, steps=8, seeds=seeds, disable=True)
    for i, (s, c) in enumerate(zip(seeds, channels)):
        single = maco(channel_mean([c]), prior, 1, SIDE, steps=8, seeds=[s], disable=True)
        assert torch.allclose(batch.x_BCHW[i], single.x_BCHW[0], atol=1e-5)
        assert torch.allclose(batch.psi_B[i], single.psi_B[0], atol=1e-5)


def test_cap_below_psi_freezes_the_image(prior):
    energy = channel_mean([0, 1])
    start = maco(energy, prior, 2, SIDE, steps=0, seeds=[0, 1], disable=True)
    capped = maco(energy, prior, 2, SIDE, steps=5, cap_B=torch.tensor([-2.0, -2.0]), seeds=[0, 1], disable=True)
    assert torch.equal(capped.x_BCHW, start.x_BCHW)  # min(psi, c) = c: zero gradient, zero NAdam step


def test_output_shape_and_range(prior):
    res = maco(channel_mean([0, 1]), prior, 2, SIDE, steps=3, disable=True)
    assert res.x_BCHW.shape == (2, 3, SIDE, SIDE) and res.psi_B.shape == (2,)
    assert res.x_BCHW.min() >= -1 and res.x_BCHW.max() <= 1


def test_nan_psi_names_the_step(prior):
    calls = {"n": 0}
    crops_per_step = 2

    def energy(x_BCHW):
        calls["n"] += 1
        psi = x_BCHW.mean(dim=(1, 2, 3))
        return psi * torch.nan if calls["n"] > 3 * crops_per_step else psi

    with pytest.raises(FloatingPointError, match="step 3"):
        maco(energy, prior, 2, SIDE, steps=10, crops_per_step=crops_per_step, disable=True)
