"""The feature gallery shows exactly the index's top images with the unit's maps,
and the browser turns an unknown id into a message instead of an exception."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from klsc_lib.viz.gallery import FeatureBrowser, FeatureGallery
from klsc_lib.sae.topk_index import index_maps

N, U, H = 12, 5, 4


def _gallery() -> tuple[FeatureGallery, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images_NCHW = torch.rand(N, 3, 8, 8, generator=g) * 2 - 1
    maps_NUHW = torch.rand(N, U, H, H, generator=g)
    index = index_maps(((torch.arange(i, i + 4), maps_NUHW[i:i + 4]) for i in range(0, N, 4)), lambda x: x, U, 6)
    gallery = FeatureGallery(index, image=lambda i: images_NCHW[i],
                             activation_maps=lambda ids, u: maps_NUHW[ids, u])
    return gallery, maps_NUHW


def test_top_returns_the_brute_force_top_images_and_their_maps():
    gallery, maps_NUHW = _gallery()
    ids, images_KCHW, maps_KHW = gallery.top(2, 3)
    assert ids == maps_NUHW[:, 2].flatten(1).amax(1).topk(3).indices.tolist()
    assert images_KCHW.shape == (3, 3, 8, 8)
    assert torch.equal(maps_KHW, maps_NUHW[ids, 2])


def test_plot_has_two_rows_per_unit_and_k_columns():
    gallery, _ = _gallery()
    fig = gallery.plot([0, 4], k=5, labels={4: "digit 0.9"}, title="t")
    axes = fig.get_axes()
    assert len(axes) == 2 * 2 * 5
    assert "feature 4\ndigit 0.9" in [ax.get_ylabel() for ax in axes]
    plt.close(fig)


def test_unknown_feature_is_a_clear_key_error():
    gallery, _ = _gallery()
    with pytest.raises(KeyError, match="units 0..4"):
        gallery.top(U + 3, 2)


def test_wrong_map_shape_is_rejected():
    gallery, maps_NUHW = _gallery()
    gallery.activation_maps = lambda ids, u: maps_NUHW[ids]  # (k, U, H, W): forgot to pick the unit
    with pytest.raises(ValueError, match=r"\(k, H, W\)"):
        gallery.top(1, 2)


def test_browser_shows_a_figure_then_a_message_for_an_unknown_id():
    gallery, _ = _gallery()
    browser = FeatureBrowser(gallery, k=3, initial=1)
    assert browser.message == ""
    assert isinstance(browser.render(2), plt.Figure)
    browser.show(U + 10)
    assert "unknown unit id" in browser.message
    browser.unit.value = 3  # the widget's observer re-renders
    assert browser.message == ""
    assert browser.unit.max == U - 1
