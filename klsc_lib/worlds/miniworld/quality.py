"""Quality of a mini-world (issue 4): is the backbone accurate, and do prior samples
look like world images to it?

- backbone accuracy on held-out images (unseen handwriting, :mod:`.data`);
- recognition of unconditional prior samples: the backbone's mean max-probability
  and the class histogram against uniform (total variation, normalised entropy);
- agreement of class-conditional samples with the requested digit;
- KID (Binkowski et al. 2018: unbiased MMD^2 with the kernel (x.y/d + 1)^3) of prior
  samples vs held-out world images, in the backbone's penultimate feature space. No
  Inception network can be downloaded here; the backbone is the network trained on this
  world, so its features are the ones that separate the world's content. For scale,
  the same KID between two disjoint sets of real world images is reported too.
"""

from __future__ import annotations

import math

import torch

from klsc_lib.interfaces import HookedBackbone
from klsc_lib.worlds.miniworld.models import backbone_features


def kid(feats_a_ND: torch.Tensor, feats_b_ND: torch.Tensor, num_subsets: int = 50,
        subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over random subsets) with the unbiased
    polynomial-kernel MMD^2 estimator."""
    if feats_a_ND.ndim != 2 or feats_a_ND.shape[1] != feats_b_ND.shape[1]:
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


def histogram_stats(pred_B: torch.Tensor, num_classes: int) -> dict[str, float | list[int]]:
    """Class histogram, its total-variation distance to uniform and its entropy / log K."""
    counts_K = torch.bincount(pred_B, minlength=num_classes).double()
    p_K = counts_K / counts_K.sum()
    entropy = -(p_K[p_K > 0] * p_K[p_K > 0].log()).sum().item()
    return {"histogram": counts_K.long().tolist(), "tv_to_uniform": 0.5 * (p_K - 1 / num_classes).abs().sum().item(),
            "normalised_entropy": entropy / math.log(num_classes)}


@torch.no_grad()
def classify(backbone: HookedBackbone, x_BCHW: torch.Tensor,
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities_BK, penultimate features_BD) of images in [-1, 1]."""
    probs, feats = [], []
    for chunk in x_BCHW.split(batch_size):
        f = backbone_features(backbone, chunk)
        probs.append(backbone.model.head.fc(f).softmax(-1))
        feats.append(f)
    return torch.cat(probs), torch.cat(feats)


def recognition(probs_BK: torch.Tensor) -> dict:
    pred_B = probs_BK.argmax(-1)
    return {"mean_max_prob": probs_BK.max(-1).values.mean().item(), **histogram_stats(pred_B, probs_BK.shape[1])}
