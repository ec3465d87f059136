"""Caps on the guidance objective (paper App J.2, "cap_value control"), per sample c_B:

- ``clip``:   min(psi, c)                      gradient exactly 0 once psi >= c
- ``hinge``:  psi - kappa ReLU(psi - c)^2      pulls back quadratically above c
- ``target``: -(psi - c)^2                     aims at psi = c from both sides

The guided sampler ascends the returned objective instead of psi.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CAP_MODES = ("clip", "hinge", "target")


def capped_objective(psi_B: torch.Tensor, cap_B: torch.Tensor | float | None, mode: str = "clip",
                     kappa: float = 10.0) -> torch.Tensor:
    """The capped guidance objective per sample (``psi_B`` itself when ``cap_B`` is None)."""
    if mode not in CAP_MODES:
        raise ValueError(f"cap mode must be one of {CAP_MODES}, got {mode!r}")
    if cap_B is None:
        return psi_B
    cap_B = torch.as_tensor(cap_B, dtype=psi_B.dtype, device=psi_B.device)
    if cap_B.ndim > 1 or (cap_B.ndim == 1 and cap_B.shape != psi_B.shape):
        raise ValueError(f"cap must be a scalar or one value per sample {tuple(psi_B.shape)}, "
                         f"got shape {tuple(cap_B.shape)}")
    if mode == "clip":
        return torch.minimum(psi_B, cap_B.expand_as(psi_B))
    if mode == "hinge":
        return psi_B - kappa * F.relu(psi_B - cap_B).square()
    return -(psi_B - cap_B).square()
