"""Which world a pipeline stage runs in (``--world``): the embedded mini-world, built
in code (``--profile smoke|default``), or the paper's DINOv3 ConvNeXt-L and
guided-diffusion prior from local files, with images from an ImageNet-layout folder
or from file lists (paper Sec 3.1, App J.1, J.4)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from klsc_lib.interfaces import PAPER_IMAGE_SIZE, HookedBackbone, Prior, World
from klsc_lib.runtime import world_key

WORLDS = ("miniworld", "paper")


@dataclass(frozen=True)
class WorldSpec:
    """The ``--world`` options of every stage."""

    world: Literal["miniworld", "paper"] = "miniworld"
    profile: str = "smoke"  # mini-world size (klsc_lib.worlds.miniworld.MINIWORLD)
    dinov3_weights: str | None = None
    prior_weights: str | None = None
    image_folder: str | None = None  # <root>/train/<class>/*, <root>/val/<class>/*
    file_list: str | None = None  # training images, one path a line (relative to the list's folder)
    eval_file_list: str | None = None  # held-out images (top-k index, caps)
    hook: str | None = None  # default: the paper's stages.2.blocks.20 / the mini-world's hook

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"--world must be one of {WORLDS}, got {self.world!r}")
        if self.world == "paper" and self.file_list is not None and self.eval_file_list is None:
            raise ValueError("--file-list needs --eval-file-list too (the held-out images of the index)")

    def paper_config(self):
        from klsc_lib.worlds.zoo import PaperWorldConfig

        kw = {"hook": self.hook} if self.hook else {}
        return PaperWorldConfig(dinov3_weights=self.dinov3_weights, prior_weights=self.prior_weights,
                                image_folder=self.image_folder, **kw)

    def miniworld_config(self):
        from klsc_lib.worlds.miniworld.config import MINIWORLD

        if self.profile not in MINIWORLD:
            raise ValueError(f"unknown mini-world profile {self.profile!r}; expected one of {sorted(MINIWORLD)}")
        return MINIWORLD[self.profile]

    def key(self) -> dict:
        """What identifies the activations of this world (hashed into cache manifests)."""
        if self.world == "miniworld":
            return {"world": "miniworld", **world_key(self.miniworld_config()), "hook": self.hook}
        cfg = self.paper_config()
        images = self.file_list or str(cfg.image_root())
        return {"world": "paper", "dinov3": str(cfg.dinov3_path()), "hook": cfg.hook, "image_size": cfg.image_size,
                "images": images, "eval_images": self.eval_file_list}


class FileListImages(Dataset):
    """Images named in a text file (one path a line, relative to the file's folder; blank
    lines and ``#`` comments skipped) as World items ``(image_CHW in [-1, 1], {"label": -1})``,
    resized and centre-cropped to ``image_size``."""

    def __init__(self, list_file: str | Path, image_size: int = PAPER_IMAGE_SIZE):
        from torchvision import transforms

        list_file = Path(list_file)
        if not list_file.is_file():
            raise FileNotFoundError(f"image list {list_file} does not exist; write one image path per line")
        lines = [ln.strip() for ln in list_file.read_text().splitlines()]
        self.paths = [(list_file.parent / ln) for ln in lines if ln and not ln.startswith("#")]
        if not self.paths:
            raise ValueError(f"image list {list_file} names no images")
        self.transform = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size),
                                             transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, int]]:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image_CHW = self.transform(image.convert("RGB"))
        except OSError as err:
            raise OSError(f"cannot read image {index} of the list ({path}): {err}") from err
        return image_CHW * 2 - 1, {"label": -1}


@lru_cache(maxsize=4)
def _miniworld(spec: WorldSpec, device: str) -> World:
    from klsc_lib.worlds import load_world

    return load_world(spec.miniworld_config(), device=device, progress=False)


def _with_hook(backbone: HookedBackbone, hook: str | None) -> HookedBackbone:
    if hook is None or hook == backbone.block_name:
        return backbone
    return HookedBackbone(backbone.model, hook, backbone.preprocess, backbone.name)


def backbone(spec: WorldSpec, device: torch.device) -> HookedBackbone:
    """The hooked backbone (frozen, eval mode) on ``device``."""
    if spec.world == "miniworld":
        return _with_hook(_miniworld(spec, str(device)).backbone, spec.hook)
    from klsc_lib.worlds.zoo import dinov3_backbone

    cfg = spec.paper_config()
    return dinov3_backbone(cfg.dinov3_path(), device=device, block=cfg.hook, image_size=cfg.image_size)


def rank_backbone(spec: WorldSpec, ranks) -> HookedBackbone:
    """:func:`backbone` on every rank: the mini-world on rank 0 first (it may build the world
    into the shared cache on first use), the paper world on all ranks at once (its files are
    only read, so loading in turn would serialise the start of every rank)."""
    from klsc_lib.pipeline import distributed as D

    if spec.world == "miniworld":
        return D.primary_first(ranks, lambda: backbone(spec, ranks.device))
    return backbone(spec, ranks.device)


def prior(spec: WorldSpec, device: torch.device) -> Prior:
    """The unconditional diffusion prior on ``device``."""
    if spec.world == "miniworld":
        return _miniworld(spec, str(device)).prior
    from klsc_lib.worlds.zoo import guided_diffusion_prior

    return guided_diffusion_prior(spec.paper_config().prior_path(), device=device)


def images(spec: WorldSpec, split: Literal["train", "test"]) -> Dataset:
    """The ``train`` (transcoder data) or ``test`` (held-out: index, caps) image set."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if spec.world == "miniworld":
        world = _miniworld(spec, "cpu")
        return world.train if split == "train" else world.test
    cfg = spec.paper_config()
    if spec.file_list is not None:
        return FileListImages(spec.file_list if split == "train" else spec.eval_file_list, cfg.image_size)
    root = cfg.image_root()
    if root is None:
        raise FileNotFoundError("the paper world needs images: pass --image-folder (ImageNet layout with train/ and "
                                "val/) or --file-list/--eval-file-list, or set $KLSC_IMAGENET_DIR")
    from klsc_lib.worlds.zoo.paper_world import LabelledImageFolder

    sub = root / ("train" if split == "train" else "val")
    if not sub.is_dir():
        raise FileNotFoundError(f"{root} has no {sub.name}/ sub-folder; the image folder must have the ImageNet "
                                "layout <root>/train/<class>/* and <root>/val/<class>/*")
    return LabelledImageFolder(sub, cfg.image_size)
