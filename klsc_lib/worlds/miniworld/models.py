"""The mini-world's networks: a slim timm ConvNeXt backbone and a small diffusers
UNet prior, wrapped in the project's interfaces (:mod:`klsc_lib.interfaces`)."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from timm.models.convnext import ConvNeXt

from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.interfaces import HookedBackbone, Prior
from klsc_lib.worlds.miniworld.config import BackboneConfig, PriorConfig
from klsc_lib.worlds.miniworld.data import IMAGE_SIZE
from klsc_lib.interfaces import ConditionalPrior, ImageNetPreprocess

NUM_DIGITS = 10
NULL_LABEL = NUM_DIGITS  # class id that means "no label" (unconditional prior)


def build_convnext(cfg: BackboneConfig) -> ConvNeXt:
    """Randomly initialised backbone (digit classifier with a 10-way head)."""
    return ConvNeXt(in_chans=3, num_classes=NUM_DIGITS, depths=cfg.depths, dims=cfg.dims,
                    patch_size=cfg.patch_size)


def hooked_backbone(model: ConvNeXt, cfg: BackboneConfig, name: str) -> HookedBackbone:
    """``model`` hooked at ``cfg.hook_block``, fed exactly as the paper feeds DINOv3
    (RM §13 J.1: [-1, 1] -> [0, 1] -> clamp -> resize, here a differentiable bilinear
    upsampling to ``cfg.input_size`` -> ImageNet mean / std)."""
    return HookedBackbone(model, cfg.hook_block, ImageNetPreprocess(cfg.input_size), name=name)


def backbone_features(backbone: HookedBackbone, x_BCHW: torch.Tensor) -> torch.Tensor:
    """Penultimate (pooled, normalised, pre-logit) features of images in [-1, 1]."""
    model = backbone.model
    return model.forward_head(model.forward_features(backbone.preprocess(x_BCHW)), pre_logits=True)


def build_unet(cfg: PriorConfig) -> UNet2DModel:
    """Randomly initialised eps-predictor with NUM_DIGITS + 1 class embeddings (the last
    is the null label of the unconditional prior)."""
    n = len(cfg.channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if cfg.attention:
        down[1], up[n - 2] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, block_out_channels=cfg.channels,
                       layers_per_block=cfg.layers_per_block, down_block_types=tuple(down),
                       up_block_types=tuple(up), norm_num_groups=cfg.norm_groups,
                       attention_head_dim=cfg.channels[1] // 2, num_class_embeds=NUM_DIGITS + 1)


def schedule_of(cfg: PriorConfig) -> DDPMSchedule:
    return DDPMSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)


def unet_eps(unet: UNet2DModel, x_t: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
    t_B = torch.as_tensor(t_B, device=x_t.device).reshape(-1).expand(x_t.shape[0])
    return unet(x_t, t_B, class_labels=y_B.to(x_t.device)).sample


def priors(unet: UNet2DModel, cfg: PriorConfig, name: str) -> tuple[Prior, ConditionalPrior]:
    """The unconditional prior (null label) and the class-conditional prior of one
    class-dropout-trained UNet (see :class:`PriorConfig`)."""
    schedule = schedule_of(cfg)
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    def eps(x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        null_B = torch.full((x_t.shape[0],), NULL_LABEL, dtype=torch.long, device=x_t.device)
        return unet_eps(unet, x_t, t_B, null_B)

    def cond_eps(x_t: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
        return unet_eps(unet, x_t, t_B, y_B)

    return (Prior(eps, schedule, shape, name=f"{name}-prior"),
            ConditionalPrior(cond_eps, schedule, shape, NUM_DIGITS, name=f"{name}-cond-prior"))
