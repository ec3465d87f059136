"""The paper's world (profile ``paper``): DINOv3 ConvNeXt-L hooked at the input of
``stages.2.blocks.20``, the guided-diffusion ImageNet-256 unconditional prior (or a
diffusers DDPM folder for the App L.2.2 ablation) and, optionally, ImageNet images
(paper Sec 3.1, App J.1, J.4; App J).

Every path is resolved as: environment variable if set, else the config field, else
``cache_dir()/weights/<published file name>``. Nothing is downloaded; a missing file
raises :class:`~klsc_lib.weights.WeightsFileError` saying where to put it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from klsc_lib.runtime import cache_dir, resolve_device, world_key
from klsc_lib.worlds.zoo.diffusers_prior import DIFFUSERS_PRIOR_SOURCE, diffusers_prior
from klsc_lib.worlds.zoo.dinov3 import DINOV3_FILENAME, DINOV3_SOURCE, PAPER_HOOK, PAPER_IMAGE_SIZE, dinov3_backbone
from klsc_lib.worlds.zoo.guided_diffusion import GUIDED_DIFFUSION_FILENAME, GUIDED_DIFFUSION_SOURCE, guided_diffusion_prior

IMAGENET_ENV_VAR = "KLSC_IMAGENET_DIR"


@dataclass(frozen=True)
class PaperWorldConfig:
    """Where the paper's models and data live (each overridable by its env var)."""

    dinov3_weights: str | None = None  # $KLSC_DINOV3_WEIGHTS; Meta .pth, timm or HF safetensors
    prior_weights: str | None = None  # $KLSC_GUIDED_DIFFUSION_WEIGHTS; 256x256_diffusion_uncond.pt (= DPS imagenet256.pt)
    diffusers_prior: str | None = None  # $KLSC_DIFFUSERS_PRIOR; a diffusers DDPM folder, used when prior_kind="diffusers"
    image_folder: str | None = None  # $KLSC_IMAGENET_DIR; ImageNet layout: <root>/train/<class>/*, <root>/val/<class>/*
    prior_kind: Literal["guided-diffusion", "diffusers"] = "guided-diffusion"
    hook: str = PAPER_HOOK  # App J.1 (ablations: stages.2.blocks.5 / .25, Table 8)
    image_size: int = PAPER_IMAGE_SIZE
    name: str = "paper"

    def __post_init__(self) -> None:
        if self.prior_kind not in ("guided-diffusion", "diffusers"):
            raise ValueError(f"prior_kind must be 'guided-diffusion' or 'diffusers', got {self.prior_kind!r}")

    def dinov3_path(self) -> Path:
        return _resolve(DINOV3_SOURCE.env_var, self.dinov3_weights, DINOV3_FILENAME)

    def prior_path(self) -> Path:
        if self.prior_kind == "diffusers":
            return _resolve(DIFFUSERS_PRIOR_SOURCE.env_var, self.diffusers_prior, "diffusers-prior")
        return _resolve(GUIDED_DIFFUSION_SOURCE.env_var, self.prior_weights, GUIDED_DIFFUSION_FILENAME)

    def image_root(self) -> Path | None:
        value = os.environ.get(IMAGENET_ENV_VAR) or self.image_folder
        return Path(value).expanduser() if value else None


def _resolve(env_var: str, configured: str | None, default_name: str) -> Path:
    value = os.environ.get(env_var) or configured
    return Path(value).expanduser() if value else cache_dir() / "weights" / default_name


class LabelledImageFolder(Dataset):
    """An ImageNet-layout folder (one sub-folder per class) as World items:
    (image_CHW in [-1, 1], {"label": class index}); resize + centre crop to
    ``image_size`` (the backbone's CenterCrop(256), App J.1)."""

    def __init__(self, root: str | Path, image_size: int = PAPER_IMAGE_SIZE):
        from torchvision import datasets, transforms

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist; set ${IMAGENET_ENV_VAR} to an "
                                    "ImageNet-layout folder (<root>/train/<class>/*, <root>/val/<class>/*)")
        self.images = datasets.ImageFolder(str(self.root), transform=transforms.Compose(
            [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()]))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        image_CHW, label = self.images[index]
        return image_CHW * 2 - 1, {"label": int(label)}


class NoImages(Dataset):
    """Placeholder when no image folder is configured: empty, and says how to add one."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int):
        raise IndexError(f"the paper world has no images: set ${IMAGENET_ENV_VAR} (or PaperWorldConfig.image_folder) "
                         "to an ImageNet-layout folder with train/ and val/")


def _split(root: Path | None, split: str, image_size: int) -> Dataset:
    if root is None:
        return NoImages()
    if not (root / split).is_dir():
        raise FileNotFoundError(f"{root} has no {split}/ sub-folder; the image folder must have the ImageNet layout "
                                "<root>/train/<class>/* and <root>/val/<class>/*")
    return LabelledImageFolder(root / split, image_size)


def load_paper_world(cfg: PaperWorldConfig, device: str | torch.device = "auto"):
    """Build the paper's :class:`~klsc_lib.interfaces.World` from local files (no downloads)."""
    from klsc_lib.interfaces import World

    device = resolve_device(device)
    backbone = dinov3_backbone(cfg.dinov3_path(), device=device, block=cfg.hook, image_size=cfg.image_size)
    if cfg.prior_kind == "diffusers":
        prior = diffusers_prior(cfg.prior_path(), device=device)
    else:
        prior = guided_diffusion_prior(cfg.prior_path(), device=device)
    root = cfg.image_root()
    side = prior.sample_shape[-1]  # world images live at the prior's resolution; the backbone resizes to image_size
    train, test = _split(root, "train", side), _split(root, "val", side)
    quality = {
        "backbone_params_M": sum(p.numel() for p in backbone.model.parameters()) / 1e6,
        "prior_params_M": sum(p.numel() for p in prior.eps.parameters()) / 1e6,
        "backbone_hook": cfg.hook,
        "prior": prior.name,
        "num_train_images": len(train),
        "num_test_images": len(test),
    }
    return World(name=cfg.name, backbone=backbone, prior=prior, cond_prior=None, train=train, test=test,
                 factor_names=("label",),
                 num_classes=0,  # DINOv3 is self-supervised: no classifier head (timm num_classes=0)
                 quality=quality, key=world_key(cfg))
