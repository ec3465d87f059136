"""Per-method sample statistics for the image comparison (paper Sec 3.3, Fig. 4, App L):

- :func:`high_frequency_fraction`: the share of an image's spectral energy above a
  radial frequency, MACO's signature high-frequency artefacts (Sec 3.3: "activation
  maximisation often exhibits high-frequency artifacts").
- :func:`diversity`: mean pairwise distance of a sample set in a feature space (pixels,
  or backbone features), to tell a collapsed set from a spread one.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F


def radial_frequency(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) radius sqrt(fy^2 + fx^2) in cycles per pixel of the ``fft2`` grid (Nyquist 0.5)."""
    fy = torch.fft.fftfreq(height, device=device)
    fx = torch.fft.fftfreq(width, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


@torch.no_grad()
def high_frequency_fraction(x_BCHW: torch.Tensor, radius: float = 0.25) -> torch.Tensor:
    """(B,) fraction of spectral energy (power summed over channels, each channel's mean
    removed) at radial frequency > ``radius`` cycles/pixel; 0 for a constant image."""
    if x_BCHW.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got {tuple(x_BCHW.shape)}")
    if not 0 <= radius < 0.5 * 2**0.5:
        raise ValueError(f"radius must be in [0, sqrt(2)/2) cycles per pixel, got {radius}")
    x = x_BCHW.double()
    power_BHW = torch.fft.fft2(x - x.mean(dim=(2, 3), keepdim=True)).abs().square().sum(dim=1)
    high = radial_frequency(*x.shape[-2:], device=x.device) > radius
    total_B = power_BHW.sum(dim=(1, 2))
    frac_B = power_BHW[:, high].sum(dim=1) / total_B.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(total_B > 0, frac_B, torch.zeros_like(frac_B)).float()


def mean_pairwise_distance(features_BD: torch.Tensor,
                           metric: Literal["euclidean", "cosine"] = "euclidean") -> torch.Tensor:
    """Mean over the B(B-1)/2 unordered pairs of the distance between rows."""
    if features_BD.ndim != 2 or features_BD.shape[0] < 2:
        raise ValueError(f"need at least two feature vectors (B >= 2, D), got {tuple(features_BD.shape)}")
    f = features_BD.double()
    if metric == "cosine":
        f = F.normalize(f, dim=1)
        dist_BB = 1 - f @ f.T
    elif metric == "euclidean":
        dist_BB = torch.cdist(f, f)
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    i, j = torch.triu_indices(f.shape[0], f.shape[0], offset=1)
    return dist_BB[i, j].mean().float()


@torch.no_grad()
def diversity(x_BCHW: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor] | None = None,
              metric: Literal["euclidean", "cosine"] = "euclidean") -> torch.Tensor:
    """Mean pairwise distance of a sample set in ``features`` space (flattened pixels if None;
    e.g. ``klsc_lib.worlds.miniworld.models.backbone_features``); 0 for identical samples."""
    feats = x_BCHW.flatten(1) if features is None else features(x_BCHW).flatten(1)
    return mean_pairwise_distance(feats, metric)
