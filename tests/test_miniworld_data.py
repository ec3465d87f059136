"""The mini-world's images are a deterministic function of the seed, and each
generative factor changes the image exactly as specified (klsc_lib.worlds.miniworld.data)."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.worlds.miniworld import data as d


def glyph_alpha(glyph: int, size: int, position: int) -> torch.Tensor:
    return d.glyph_alphas(torch.tensor([glyph]), torch.tensor([size]), torch.tensor([position]))[0]


def background_crop(background: int, crop_yx: tuple[float, float]) -> torch.Tensor:
    return d.background_crops(torch.tensor([background]), torch.tensor([crop_yx]))[0]


def ink_mask(glyph: int, size: int, position: int) -> torch.Tensor:
    return glyph_alpha(glyph, size, position) > 0


def test_dataset_is_deterministic_in_the_seed():
    a, b, c = d.MiniWorldDataset(64, "train", 3), d.MiniWorldDataset(64, "train", 3), d.MiniWorldDataset(64, "train", 4)
    assert torch.equal(a.images_NCHW, b.images_NCHW)
    assert all(torch.equal(a.factors[k], b.factors[k]) for k in d.FACTOR_NAMES)
    assert not torch.equal(a.images_NCHW, c.images_NCHW)


def test_dataset_images_are_the_rendered_latents():
    ds = d.MiniWorldDataset(30, "train", 2)
    lat, f = ds.latents, ds.factors
    for i in (0, 7, 29):
        image = d.render(int(lat.glyph_N[i]), int(f["colour"][i]), int(f["size"][i]), int(f["position"][i]),
                         int(f["background"][i]), tuple(lat.crop_N2[i].tolist()))
        assert torch.allclose(ds[i][0], image, atol=1e-6)


def test_items_have_the_contract_format():
    ds = d.MiniWorldDataset(40, "test", 0)
    image, factors = ds[5]
    assert image.shape == (3, d.IMAGE_SIZE, d.IMAGE_SIZE) and image.min() >= -1 and image.max() <= 1
    assert tuple(factors) == d.FACTOR_NAMES
    assert all(0 <= factors[k] < d.FACTOR_SIZES[k] for k in d.FACTOR_NAMES)
    assert factors["digit"] == int(ds.labels_N[5])


def test_train_and_test_use_disjoint_writers_with_the_right_digit():
    train, test = set(d.glyph_ids("train").tolist()), set(d.glyph_ids("test").tolist())
    assert not train & test and len(train) + len(test) == len(d.glyphs()[0])
    lat = d.sample_latents(500, "test", 0)
    assert set(lat.glyph_N.tolist()) <= test
    assert torch.equal(d.glyphs()[1][lat.glyph_N], lat.factors["digit"])
    with pytest.raises(ValueError, match="split"):
        d.glyph_ids("val")


def test_factors_are_roughly_uniform():
    lat = d.sample_latents(4000, "train", 1)
    for name, k in d.FACTOR_SIZES.items():
        freq = torch.bincount(lat.factors[name], minlength=k).double() / 4000
        assert (freq - 1 / k).abs().max() < 0.035, name


def test_colour_repaints_only_the_glyph():
    base = d.render(7, 0, 0, 0, 2, (0.5, 0.5))
    other = d.render(7, 2, 0, 0, 2, (0.5, 0.5))
    alpha = glyph_alpha(7, 0, 0)  # size 0 = the 8x8 glyph unresized, whose darkest ink is 16/16
    assert torch.equal((base != other).any(0), alpha > 0)
    # where the ink is solid (alpha = 1) the pixel is exactly the glyph colour
    solid = alpha == 1
    blue = torch.tensor(d.COLOURS["blue"]) * 2 - 1
    assert solid.any() and torch.allclose(other[:, solid], blue[:, None].expand(3, int(solid.sum())))


def test_background_shows_through_where_the_ink_is_not_solid():
    alpha = glyph_alpha(3, 0, 3)
    for bg, crop in [(3, (0.2, 0.2)), (0, (0.8, 0.6))]:
        a, b = d.render(3, 1, 0, 3, 0, (0.2, 0.2)), d.render(3, 1, 0, 3, bg, crop)
        bg_a, bg_b = background_crop(0, (0.2, 0.2)), background_crop(bg, crop)
        changed = (a != b).any(0)
        assert torch.equal(changed, (alpha < 1) & (bg_a != bg_b))
        assert changed.sum() > 100
    # a background crop is a (16, 16) grey image inside the dim range
    crop = background_crop(2, (0.3, 0.9))
    assert crop.shape == (16, 16) and -1 <= crop.min() and crop.max() < 0.5


@pytest.mark.parametrize("size", [0, 1])
def test_position_moves_the_glyph_to_its_corner(size):
    side = d.SIZES[size]
    masks = [ink_mask(12, size, p) for p in range(len(d.POSITIONS))]
    for p, mask in enumerate(masks):
        y0, x0 = d.glyph_offset(side, p)
        box = torch.zeros(16, 16, dtype=torch.bool)
        box[y0:y0 + side, x0:x0 + side] = True
        assert mask.any() and not (mask & ~box).any(), d.POSITIONS[p]
        dy, dx = y0 - d.glyph_offset(side, 0)[0], x0 - d.glyph_offset(side, 0)[1]
        assert torch.equal(torch.roll(masks[0], (dy, dx), (0, 1)), mask)


def test_size_scales_the_ink_box():
    ys, xs = [], []
    for size in range(len(d.SIZES)):
        mask = ink_mask(20, size, 0)
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        ys.append(int(rows.max() - rows.min() + 1))
        xs.append(int(cols.max() - cols.min() + 1))
        assert ys[-1] <= d.SIZES[size] and xs[-1] <= d.SIZES[size]
    assert ys[1] > ys[0] and xs[1] > xs[0]


def test_digit_glyph_changes_the_ink():
    zero, one = (d.glyph_ids("train")[d.glyphs()[1][d.glyph_ids("train")] == k][0] for k in (0, 1))
    assert not torch.equal(ink_mask(int(zero), 1, 0), ink_mask(int(one), 1, 0))
