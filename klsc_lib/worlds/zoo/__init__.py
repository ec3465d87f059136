"""The paper's models behind the World interface (profile ``paper``; issue 4, Sec 3, App J, and the authors' release).

- :mod:`~klsc_lib.worlds.zoo.dinov3`: DINOv3 ConvNeXt-Large (timm ``convnext_large.dinov3_lvd1689m``)
  from Meta's ``.pth``, timm or Hugging Face weights, hooked at ``stages.2.blocks.20``.
- :mod:`~klsc_lib.worlds.zoo.guided_diffusion`: the guided-diffusion ImageNet-256 unconditional
  UNet (DPS ``imagenet256.pt``) converted into a diffusers ``UNet2DModel``, as a Prior.
- :mod:`~klsc_lib.worlds.zoo.diffusers_prior`: any diffusers DDPM folder as a Prior (App L.2.2).
- :mod:`~klsc_lib.worlds.zoo.paper_world`: :class:`PaperWorldConfig` and :func:`load_paper_world`.
- :mod:`~klsc_lib.weights`: :class:`WeightsFileError`, the one error for a missing,
  corrupt or wrongly keyed weights file.
"""

from klsc_lib.worlds.zoo.diffusers_prior import diffusers_prior, load_diffusers_unet
from klsc_lib.interfaces import ImageNetPreprocess
from klsc_lib.worlds.zoo.dinov3 import (CONVNEXT_LARGE, PAPER_HOOK, ConvNeXtArch, dinov3_backbone,
                                 load_dinov3_convnext)
from klsc_lib.weights import WeightsFileError
from klsc_lib.worlds.zoo.guided_diffusion import (IMAGENET256_UNCOND, GuidedUNetConfig, LearnedSigmaEps, guided_diffusion_prior,
                                           load_guided_unet)
from klsc_lib.worlds.zoo.paper_world import PaperWorldConfig, load_paper_world

__all__ = [
    "CONVNEXT_LARGE", "IMAGENET256_UNCOND", "PAPER_HOOK", "ConvNeXtArch", "GuidedUNetConfig", "ImageNetPreprocess",
    "LearnedSigmaEps", "PaperWorldConfig", "WeightsFileError", "diffusers_prior", "dinov3_backbone",
    "guided_diffusion_prior", "load_diffusers_unet", "load_dinov3_convnext", "load_guided_unet", "load_paper_world",
]
