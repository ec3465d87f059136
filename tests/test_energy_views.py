"""psi read on shifted copies of an image (klsc_lib.energies.views)."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.energies import Energy
from klsc_lib.energies.views import shift_image, shifted_views, view_offsets


@pytest.mark.parametrize("dy, dx", [(2, -1), (-3, 0), (0, 0)])
def test_a_shift_moves_the_content_and_reflects_the_border(dy, dx):
    """Away from the border a shift is torch.roll; the border rows come from reflection, so
    nothing from the far side wraps in (checked on a ramp, whose reflection differs from its wrap)."""
    x = torch.arange(2 * 3 * 12 * 12, dtype=torch.float64).reshape(2, 3, 12, 12)
    moved = shift_image(x, dy, dx)
    rolled = torch.roll(x, (dy, dx), dims=(-2, -1))
    m = max(abs(dy), abs(dx))
    assert torch.equal(moved[..., m:12 - m, m:12 - m], rolled[..., m:12 - m, m:12 - m])
    if dy > 0:  # row 0 of the moved image is row dy of the original reflected: original row dy
        assert torch.equal(moved[..., 0, m:12 - m], x[..., dy, m - dx:12 - m - dx])


def test_offsets_are_seeded_bounded_and_views_average_psi():
    offs = view_offsets(64, 2, seed=3)
    assert offs == view_offsets(64, 2, seed=3) and offs != view_offsets(64, 2, seed=4)
    assert {o for pair in offs for o in pair} == {-2, -1, 0, 1, 2}
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    centre = Energy(lambda im: im[:, 1, 8, 8], "centre")
    psi = shifted_views(centre, 6, 2, seed=0)(x)
    by_hand = torch.stack([x[:, 1, 8 - dy, 8 - dx] for dy, dx in view_offsets(6, 2, 0)]).mean(0)
    torch.testing.assert_close(psi, by_hand)
    (grad,) = torch.autograd.grad(psi.sum(), x)
    assert float(grad.sum()) == pytest.approx(4.0) and int((grad != 0).sum()) <= 4 * 6
    assert torch.equal(shifted_views(centre, 1, 0, seed=0)(x), centre(x))
    with pytest.raises(ValueError, match="n_views >= 1"):
        view_offsets(0, 2, 0)
