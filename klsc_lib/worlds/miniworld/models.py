"""The mini-world's networks: a slim timm ConvNeXt backbone and a small
factor-conditioned diffusers UNet prior, wrapped in the project's interfaces (:mod:`klsc_lib.interfaces`)."""

from __future__ import annotations

import torch
from torch import nn
from diffusers import UNet2DModel
from timm.models.convnext import ConvNeXt

from klsc_lib.interfaces import DDPMSchedule, HookedBackbone, Prior
from klsc_lib.worlds.miniworld.config import BackboneConfig, PriorConfig
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES, IMAGE_SIZE
from klsc_lib.interfaces import ConditionalPrior, FactorConditionalPrior, ImageNetPreprocess

NUM_DIGITS = 10


def build_convnext(cfg: BackboneConfig) -> ConvNeXt:
    """Randomly initialised backbone (digit classifier with a 10-way head)."""
    return ConvNeXt(in_chans=3, num_classes=NUM_DIGITS, depths=cfg.depths, dims=cfg.dims,
                    patch_size=cfg.patch_size)


def hooked_backbone(model: ConvNeXt, cfg: BackboneConfig, name: str) -> HookedBackbone:
    """``model`` hooked at ``cfg.hook_block``, fed exactly as the paper feeds DINOv3
    (App J.1: [-1, 1] -> [0, 1] -> clamp -> resize, here a differentiable bilinear
    upsampling to ``cfg.input_size`` -> ImageNet mean / std)."""
    return HookedBackbone(model, cfg.hook_block, ImageNetPreprocess(cfg.input_size), name=name)


def backbone_features(backbone: HookedBackbone, x_BCHW: torch.Tensor) -> torch.Tensor:
    """Penultimate (pooled, normalised, pre-logit) features of images in [-1, 1]."""
    model = backbone.model
    return model.forward_head(model.forward_features(backbone.preprocess(x_BCHW)), pre_logits=True)


class FactorEmbedding(nn.Module):
    """Sum over the generative factors of one learned vector per factor value; id
    ``FACTOR_SIZES[name]`` (one past the last value), or a factor left out of the
    dict, means "not given" (see :class:`~.config.PriorConfig`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleDict({name: nn.Embedding(k + 1, dim) for name, k in FACTOR_SIZES.items()})

    def forward(self, factors: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        unknown = set(factors) - set(FACTOR_SIZES)
        if unknown:
            raise ValueError(f"unknown factors {sorted(unknown)}; the factors are {list(FACTOR_SIZES)}")
        device = self.tables["digit"].weight.device
        emb_BD = torch.zeros(batch, self.dim, device=device)
        for name, k in FACTOR_SIZES.items():
            ids_B = torch.as_tensor(factors.get(name, k), device=device).long().reshape(-1).expand(batch)
            if ids_B.min() < 0 or ids_B.max() > k:
                raise ValueError(f"factor {name!r} takes ids in [0, {k}) (or {k} for 'not given'), got {ids_B}")
            emb_BD = emb_BD + self.tables[name](ids_B)
        return emb_BD


class FactorUNet(nn.Module):
    """A diffusers ``UNet2DModel`` eps-predictor whose timestep embedding is shifted by
    a factor embedding (``class_embed_type="identity"``): ``forward(x_t, t_B,
    embedding_BD)``, with ``embed(factors, batch)`` giving the embedding of a (partial)
    factor setting."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        n = len(cfg.channels)
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if cfg.attention:
            down[1], up[n - 2] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(sample_size=IMAGE_SIZE, in_channels=3, out_channels=3,
                                block_out_channels=cfg.channels, layers_per_block=cfg.layers_per_block,
                                down_block_types=tuple(down), up_block_types=tuple(up),
                                norm_num_groups=cfg.norm_groups, attention_head_dim=cfg.channels[1] // 2,
                                class_embed_type="identity")
        self.embed = FactorEmbedding(4 * cfg.channels[0])  # UNet2DModel's time embedding width

    def forward(self, x_t: torch.Tensor, t_B: torch.Tensor, embedding_BD: torch.Tensor) -> torch.Tensor:
        t_B = torch.as_tensor(t_B, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        if embedding_BD.shape != (x_t.shape[0], self.embed.dim):
            raise ValueError(f"embedding must be ({x_t.shape[0]}, {self.embed.dim}), got {tuple(embedding_BD.shape)}")
        return self.unet(x_t, t_B, class_labels=embedding_BD.to(x_t)).sample


def build_unet(cfg: PriorConfig) -> FactorUNet:
    """Randomly initialised factor-conditioned eps-predictor."""
    return FactorUNet(cfg)


def schedule_of(cfg: PriorConfig) -> DDPMSchedule:
    return DDPMSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)


def guided_eps(unet: FactorUNet, x_t: torch.Tensor, t_B: torch.Tensor, embedding_BD: torch.Tensor,
               scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): ``eps_u + scale (eps_c - eps_u)``,
    eps_u with no factor given; ``scale = 1`` is the plain conditional prediction."""
    if scale == 1.0:
        return unet(x_t, t_B, embedding_BD)
    b = x_t.shape[0]
    t_B = torch.as_tensor(t_B, device=x_t.device).reshape(-1).expand(b)
    both = unet(torch.cat([x_t, x_t]), torch.cat([t_B, t_B]),
                torch.cat([unet.embed({}, b).to(embedding_BD), embedding_BD]))
    eps_u, eps_c = both.chunk(2)
    return eps_u + scale * (eps_c - eps_u)


def priors(unet: FactorUNet, cfg: PriorConfig, name: str) -> tuple[Prior, ConditionalPrior, FactorConditionalPrior]:
    """The unconditional prior (no factor given), the digit-conditional prior and the
    factor-conditional prior of one factor-dropout-trained UNet (see :class:`PriorConfig`);
    the two conditional priors sample with classifier-free guidance at
    ``cfg.cond_guidance_scale`` (a soft prompt, ``given_embedding``, is not guided)."""
    schedule = schedule_of(cfg)
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)

    def eps(x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        return unet(x_t, t_B, unet.embed({}, x_t.shape[0]))

    def cond_eps(x_t: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor) -> torch.Tensor:
        return guided_eps(unet, x_t, t_B, unet.embed({"digit": y_B}, x_t.shape[0]), cfg.cond_guidance_scale)

    return (Prior(eps, schedule, shape, name=f"{name}-prior"),
            ConditionalPrior(cond_eps, schedule, shape, NUM_DIGITS, name=f"{name}-cond-prior"),
            FactorConditionalPrior(unet, unet.embed, schedule, shape, dict(FACTOR_SIZES), name=f"{name}-factor-prior",
                                   guided_eps=lambda x_t, t_B, emb_BD: guided_eps(unet, x_t, t_B, emb_BD,
                                                                                 cfg.cond_guidance_scale)))
