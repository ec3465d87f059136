"""psi read on shifted copies of an image: the robustness MACO buys with jittered crops
(App J.3), offered to guidance so that the cheapest way to raise psi(x0-hat) is not a
texture that only works at one exact pixel offset."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from klsc_lib.energies.base import Energy, as_energy


def view_offsets(n_views: int, max_shift: int, seed: int) -> list[tuple[int, int]]:
    """``n_views`` (dy, dx) offsets, each coordinate uniform on [-max_shift, max_shift], from a
    generator seeded ``seed`` (the same offsets for every sample of a batch)."""
    if n_views < 1 or max_shift < 0:
        raise ValueError(f"need n_views >= 1 and max_shift >= 0, got {n_views}, {max_shift}")
    g = torch.Generator().manual_seed(seed)
    return [tuple(v) for v in torch.randint(-max_shift, max_shift + 1, (n_views, 2), generator=g).tolist()]


def shift_image(x_BCHW: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) pixels (content goes down / right for positive offsets), the
    border filled by reflection (nothing wraps around to the far side)."""
    m = max(abs(dy), abs(dx))
    if m == 0:
        return x_BCHW
    h, w = x_BCHW.shape[-2:]
    padded = F.pad(x_BCHW, (m, m, m, m), mode="reflect")
    return padded[..., m - dy:m - dy + h, m - dx:m - dx + w]


def shifted_views(energy: Energy, n_views: int, max_shift: int, seed: int) -> Energy:
    """psi averaged over ``n_views`` shifted copies of x (:func:`view_offsets`,
    :func:`shift_image`); differentiable, one value per sample."""
    energy, offsets = as_energy(energy), view_offsets(n_views, max_shift, seed)
    return Energy(lambda x: torch.stack([energy(shift_image(x, dy, dx)) for dy, dx in offsets]).mean(0),
                  f"views{n_views}({energy.name})")
