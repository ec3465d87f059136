"""The toy world of App H / I: the four-mode 2-D Gaussian mixture prior (its density,
noised form and oracle score live in :mod:`klsc_lib.diffusion.gmm_oracle`; its angular
intrinsic score in :mod:`klsc_lib.energies.toy`).

Defaults are App H's suggestions (the paper's constants were stripped): four
modes at (+-2, +-2), isotropic std 0.6, uniform weights. Every constant is a
constructor argument.
"""

from __future__ import annotations

import math

import torch

from klsc_lib.diffusion.gmm_oracle import GaussianMixture


def four_mode_gmm(radius: float = 2.0, std: float = 0.6, angle0: float = math.pi / 4,
                  dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Symmetric four-mode mixture with modes at angles angle0 + k pi/2 and distance
    radius * sqrt(2) from the origin (the default puts them at (+-2, +-2))."""
    angles_K = angle0 + torch.arange(4, dtype=dtype) * (math.pi / 2)
    r = radius * math.sqrt(2.0)
    means_KD = torch.stack([r * torch.cos(angles_K), r * torch.sin(angles_K)], dim=-1)
    covs_KDD = (std**2) * torch.eye(2, dtype=dtype).expand(4, 2, 2).clone()
    return GaussianMixture(means_KD, covs_KDD, torch.full((4,), 0.25, dtype=dtype))
