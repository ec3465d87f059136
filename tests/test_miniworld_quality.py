"""The recognition statistics of klsc_lib.worlds.miniworld.quality."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.worlds.miniworld import quality as q


def test_recognition_mean_max_prob():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    rec = q.recognition(probs)
    assert rec["mean_max_prob"] == pytest.approx(0.75)
    assert rec["histogram"] == [1, 0, 1]


def test_targets_met_reads_each_threshold():
    good = {"kid_prior_vs_test": 0.01, "prior_mean_max_prob": 0.97, "cond_prior_digit_accuracy": 0.99,
            "prior_factor_tv_to_test": {"digit": 0.02, "colour": 0.05}}
    assert all(q.targets_met(good).values())
    bad = {**good, "kid_prior_vs_test": 0.2, "prior_factor_tv_to_test": {"digit": 0.02, "colour": 0.3}}
    met = q.targets_met(bad)
    assert not met["kid_prior_vs_test"] and not met["prior_factor_tv"] and met["prior_mean_max_prob"]


def test_the_max_prob_standard_error_is_the_spread_of_means_over_fresh_batches():
    gen = torch.Generator().manual_seed(0)
    n = 400

    def batch() -> torch.Tensor:  # probabilities of 3 classes, a random softmax per sample
        return (2 * torch.randn(n, 3, generator=gen)).softmax(-1)

    se = q.recognition(batch())["mean_max_prob_se"]
    means = torch.tensor([q.recognition(batch())["mean_max_prob"] for _ in range(300)])
    assert se == pytest.approx(means.std().item(), rel=0.15)


def test_the_tv_bootstrap_sd_is_the_spread_of_tv_over_fresh_draws():
    # away from TV = 0 (p != q) the bootstrap SD of one draw estimates the sampling SD
    p, r = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.25, 0.25, 0.25, 0.25])
    gen = torch.Generator().manual_seed(1)

    def draw(probs: torch.Tensor, n: int) -> torch.Tensor:
        return torch.multinomial(probs, n, replacement=True, generator=gen)

    def tv(a: torch.Tensor, b: torch.Tensor) -> float:
        p_a, p_b = torch.bincount(a, minlength=4) / len(a), torch.bincount(b, minlength=4) / len(b)
        return 0.5 * (p_a - p_b).abs().sum().item()

    fresh = torch.tensor([tv(draw(p, 1000), draw(r, 1000)) for _ in range(400)])
    sd = q.marginal_tv_sd(draw(p, 1000), draw(r, 1000), 4, num_resamples=400)
    assert sd == pytest.approx(fresh.std().item(), rel=0.15)  # both samples resampled: one alone gives 0.71x


def test_off_palette_share_is_zero_on_world_images_and_high_on_noise():
    from klsc_lib.worlds.miniworld.data import COLOURS, render_batch, sample_latents
    from klsc_lib.worlds.miniworld.quality import off_palette_fraction, palette_distance

    real = render_batch(sample_latents(512, "test", 3))
    assert float(off_palette_fraction(real).max()) == 0.0
    noise = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert float(off_palette_fraction(noise).mean()) > 0.5
    red = torch.tensor(COLOURS["red"]) * 2 - 1
    blend = 0.3 * red + 0.7 * -0.4  # 30 % red glyph coverage over grey level -0.4: on the palette
    magenta = torch.tensor([1.0, -1.0, 1.0])  # no colour blended with grey gives it
    img = torch.stack([blend, magenta]).T.reshape(1, 3, 1, 2)
    d = palette_distance(img)[0, 0]
    assert float(d[0]) < 0.02 and float(d[1]) > 0.5
    with pytest.raises(ValueError, match="RGB"):
        off_palette_fraction(torch.zeros(2, 1, 4, 4))
