"""An all-factor reader of world images: a small CNN, separate from the explained
backbone, that predicts every generative factor (digit, colour, size, position,
background; :mod:`.data`) of a 16x16 image.

It scores generated images against the world's ground truth: the factor marginals of
prior samples, whether a conditional sample shows the asked factors (concept accuracy
of explanations, paper Sec 3.3, where the paper could only ask raters).

- :class:`FactorClassifier`: ``forward(x_BCHW) -> {factor: logits_BK}``;
- :func:`factor_probabilities` / :func:`read_factors`: batched, no-grad reads of images
  in [-1, 1] (probabilities / argmax ids per factor);
- :func:`factor_loss`: the training loss (sum of the per-factor cross-entropies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from klsc_lib.worlds.miniworld.config import FactorClassifierConfig
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES, IMAGE_SIZE, MiniWorldDataset


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.SiLU())


class FactorClassifier(nn.Module):
    """Three conv stages (16 -> 8 -> 4 px) and one linear head per factor on the
    flattened 4x4 map (flattened, not pooled, so position stays readable)."""

    def __init__(self, cfg: FactorClassifierConfig):
        super().__init__()
        c1, c2, c3 = cfg.channels
        self.features = nn.Sequential(_conv_block(3, c1, 1), _conv_block(c1, c2, 2), _conv_block(c2, c3, 2),
                                      nn.Flatten())
        width = c3 * (IMAGE_SIZE // 4) ** 2
        self.heads = nn.ModuleDict({name: nn.Linear(width, k) for name, k in FACTOR_SIZES.items()})

    def forward(self, x_BCHW: torch.Tensor) -> dict[str, torch.Tensor]:
        if x_BCHW.ndim != 4 or x_BCHW.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected world images (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [-1, 1], "
                             f"got {tuple(x_BCHW.shape)}")
        h = self.features(x_BCHW)
        return {name: head(h) for name, head in self.heads.items()}


@torch.no_grad()
def factor_probabilities(classifier: FactorClassifier, images_BCHW: torch.Tensor,
                         batch_size: int = 512) -> dict[str, torch.Tensor]:
    """{factor: (B, K) probabilities} of images in [-1, 1] (the classifier in eval mode)."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    chunks = [classifier(x.to(device)) for x in images_BCHW.split(batch_size)]
    classifier.train(was_training)
    return {name: torch.cat([c[name] for c in chunks]).softmax(-1).cpu() for name in FACTOR_SIZES}


def read_factors(classifier: FactorClassifier, images_BCHW: torch.Tensor,
                 batch_size: int = 512) -> dict[str, torch.Tensor]:
    """{factor: (B,) long ids}: the most probable value of each factor."""
    return {name: p.argmax(-1) for name, p in factor_probabilities(classifier, images_BCHW, batch_size).items()}


def factor_accuracy(read: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of images whose read factor equals ``truth``, per factor present in both."""
    return {name: (read[name] == truth[name].to(read[name].device)).float().mean().item()
            for name in FACTOR_SIZES if name in read and name in truth}


def factor_loss(train: MiniWorldDataset, batch_size: int, device: torch.device):
    """Training loss for :func:`klsc_lib.worlds.miniworld.training.train_resumable`:
    the summed cross-entropy of all factor heads on a random batch of ``train``."""
    def loss(model: nn.Module, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        logits = model(train.images_NCHW[idx].to(device))
        return sum(F.cross_entropy(logits[name], train.factors[name][idx].to(device)) for name in FACTOR_SIZES)
    return loss
