"""A tiny random timm ConvNeXt behind the HookedBackbone interface, and a random
image dataset with factor labels: the stand-in world of the transcoder tests."""

from __future__ import annotations

import torch
from timm.models.convnext import ConvNeXt

from klsc_lib.interfaces import HookedBackbone


def tiny_backbone(block: str = "stages.2.blocks.1", seed: int = 0) -> HookedBackbone:
    torch.manual_seed(seed)
    model = ConvNeXt(in_chans=3, num_classes=5, depths=(1, 1, 2, 1), dims=(8, 16, 32, 64)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return HookedBackbone(model, block, preprocess=lambda x: x, name="tiny-convnext")


class RandomImages(torch.utils.data.Dataset):
    """``n`` fixed random images in [-1, 1] with a 'label' factor."""

    def __init__(self, n: int, size: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        self.labels = torch.randint(0, 5, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], {"label": int(self.labels[i])}
