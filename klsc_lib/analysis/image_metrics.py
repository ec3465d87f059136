"""Distances between image sets in a feature space, and between label histograms.

- :func:`kid`: Kernel Inception Distance (Binkowski et al. 2018), the unbiased MMD^2
  with the cubic polynomial kernel ``(x.y / d + 1)^3``, in float64, averaged over random
  subsets (the estimator of ``torchmetrics``' ``KernelInceptionDistance``, tested equal);
- :func:`histogram_stats`: a label histogram's total variation to uniform and its
  normalised entropy;
- :func:`total_variation`: TV distance between two histograms / distributions.
"""

from __future__ import annotations

import math

import torch


def kid(feats_a_ND: torch.Tensor, feats_b_ND: torch.Tensor, num_subsets: int = 50,
        subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over ``num_subsets`` random subsets of ``subset_size`` rows of
    each set; default the smaller set's size). With subsets smaller than the sets, the
    std is the spread of a KID estimate from ``subset_size`` samples: an error bar."""
    if feats_a_ND.ndim != 2 or feats_b_ND.ndim != 2 or feats_a_ND.shape[1] != feats_b_ND.shape[1]:
        raise ValueError(f"need two (N, D) feature sets, got {tuple(feats_a_ND.shape)}, {tuple(feats_b_ND.shape)}")
    m = subset_size or min(len(feats_a_ND), len(feats_b_ND))
    if m < 2 or m > min(len(feats_a_ND), len(feats_b_ND)):
        raise ValueError(f"subset size {m} must be in [2, min(N_a, N_b)]")
    a, b = feats_a_ND.double(), feats_b_ND.double()
    d = a.shape[1]
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        x = a[torch.randperm(len(a), generator=gen)[:m]]
        y = b[torch.randperm(len(b), generator=gen)[:m]]
        k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = m * (m - 1)
        mmd = ((k_xx.sum() - k_xx.diagonal().sum()) / off + (k_yy.sum() - k_yy.diagonal().sum()) / off
               - 2 * k_xy.mean())
        values.append(mmd.item())
    v = torch.tensor(values, dtype=torch.float64)
    return v.mean().item(), v.std().item() if len(v) > 1 else 0.0


def total_variation(p_K: torch.Tensor, q_K: torch.Tensor) -> float:
    """TV distance 0.5 * sum |p - q| of two non-negative histograms, each normalised first."""
    if p_K.shape != q_K.shape or p_K.ndim != 1:
        raise ValueError(f"need two histograms of the same length, got {tuple(p_K.shape)}, {tuple(q_K.shape)}")
    p, q = p_K.double(), q_K.double()
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive total")
    return 0.5 * (p / p.sum() - q / q.sum()).abs().sum().item()


def histogram_stats(pred_B: torch.Tensor, num_classes: int) -> dict[str, float | list[int]]:
    """Class histogram, its total-variation distance to uniform and its entropy / log K."""
    counts_K = torch.bincount(pred_B, minlength=num_classes).double()
    p_K = counts_K / counts_K.sum()
    entropy = -(p_K[p_K > 0] * p_K[p_K > 0].log()).sum().item()
    return {"histogram": counts_K.long().tolist(), "tv_to_uniform": total_variation(p_K, torch.ones(num_classes)),
            "normalised_entropy": entropy / math.log(num_classes)}
