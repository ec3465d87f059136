"""Reductions of a spatial activation map a_BHW to one score per sample (paper App J.2
eq. 213 and the development alternatives of the authors' configs):

- ``max``:  max_C a
- ``mean``: mean_C ReLU(a)
- ``mix``:  alpha max_C a + (1 - alpha) mean_C ReLU(a)         (eq. 213, alpha = 0.7)
- ``lse``:  T log sum_C exp(ReLU(a) / T)                        (soft max, T = 0.2)

over the central window C: the central ``center_frac`` of each side (8x8 of 16x16
at ``center_frac = 0.5``, as in the released code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("max", "mean", "mix", "lse")


def central_window(map_BHW: torch.Tensor, center_frac: float = 0.5) -> torch.Tensor:
    """The central round(center_frac * side) cells of each side (at least one),
    centred: 16 -> rows 4..11, 8 -> 2..5, 4 -> 1..2."""
    if map_BHW.ndim != 3:
        raise ValueError(f"expected activation maps (B, H, W), got {tuple(map_BHW.shape)}")
    if not 0 < center_frac <= 1:
        raise ValueError(f"center_frac must be in (0, 1], got {center_frac}")
    _, h, w = map_BHW.shape
    mh, mw = max(1, round(h * center_frac)), max(1, round(w * center_frac))
    top, left = (h - mh) // 2, (w - mw) // 2
    return map_BHW[:, top: top + mh, left: left + mw]


def check_reduction(reduction: str, alpha: float, temperature: float) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"mix weight alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"lse temperature must be positive, got {temperature}")


def reduce_map(map_BHW: torch.Tensor, reduction: str = "mix", center_frac: float = 0.5, alpha: float = 0.7,
               temperature: float = 0.2) -> torch.Tensor:
    """psi_B from activation maps (see the module docstring)."""
    check_reduction(reduction, alpha, temperature)
    window_BP = central_window(map_BHW, center_frac).flatten(1)
    if reduction == "max":
        return window_BP.amax(1)
    if reduction == "mean":
        return F.relu(window_BP).mean(1)
    if reduction == "mix":
        return alpha * window_BP.amax(1) + (1 - alpha) * F.relu(window_BP).mean(1)
    return temperature * torch.logsumexp(F.relu(window_BP) / temperature, dim=1)
