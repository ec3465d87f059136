"""The paper's diffusion prior: OpenAI guided-diffusion's 256x256 unconditional ImageNet
UNet, the file DPS calls ``imagenet256.pt`` (paper Sec 3.1, App J.4; App J.4).

Architecture (``256x256_diffusion_uncond.pt``): 256 base channels, channel multipliers
(1, 1, 2, 2, 4, 4), 2 res-blocks per level, self-attention at resolutions 32 / 16 / 8
with 64 channels per head ("legacy" q/k/v order), scale-shift norm (FiLM from the
time embedding), res-blocks for down / up sampling, learned sigma: 6 output channels,
eps and the interpolation v of the learned-range variance. Schedule: 1000 steps,
linear beta 1e-4 .. 0.02, i.e. ``DDPMSchedule()``.

We convert the checkpoint into a diffusers :class:`~diffusers.UNet2DModel`, which
represents it exactly: ``ResnetDownsampleBlock2D`` / ``ResnetUpsampleBlock2D`` and
``AttnDownBlock2D`` / ``AttnUpBlock2D`` with ``downsample_type = upsample_type =
"resnet"`` are guided-diffusion's res-block down / up sampling (average pool / nearest
upsampling between GroupNorm-SiLU and the first conv), ``resnet_time_scale_shift =
"scale_shift"`` is its ``norm(h) * (1 + scale) + shift``, positional time embedding
with ``flip_sin_to_cos=True, freq_shift=0`` is its ``[cos, sin]`` embedding, and the
fused ``qkv`` 1x1 conv splits head by head into ``to_q / to_k / to_v`` (attention
scale ch^-1/2 on both sides). The checkpoint's key set is checked exactly before the
conversion: no missing or unexpected keys, never a random-weight fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch import nn

from klsc_lib.interfaces import DDPMSchedule, Prior
from klsc_lib.runtime import resolve_device
from klsc_lib.weights import WeightsSource, check_key_set, read_state_dict

GUIDED_DIFFUSION_FILENAME = "256x256_diffusion_uncond.pt"
GUIDED_DIFFUSION_SOURCE = WeightsSource(
    what="guided-diffusion ImageNet-256 unconditional prior (App J.4)",
    env_var="KLSC_GUIDED_DIFFUSION_WEIGHTS",
    published=("the OpenAI guided-diffusion release (github.com/openai/guided-diffusion, file "
               f"{GUIDED_DIFFUSION_FILENAME}); the DPS repository (github.com/DPS2022/diffusion-posterior-sampling) "
               "links the same file as imagenet256.pt"),
)


@dataclass(frozen=True)
class GuidedUNetConfig:
    """Hyper-parameters of a guided-diffusion ``UNetModel`` with scale-shift norm,
    res-block up/down, no class conditioning and legacy attention order."""

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    out_channels: int = 6  # learn_sigma: eps (3) + variance interpolation v (3)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # image resolutions with self-attention
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_head_channels: int = 64

    def __post_init__(self) -> None:
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^{len(self.channel_mult) - 1}")
        if any(self.model_channels * m % self.num_head_channels for m in self.channel_mult):
            raise ValueError("every level's channel count must be a multiple of num_head_channels")

    def has_attention(self, level: int) -> bool:
        return self.image_size // 2 ** level in self.attention_resolutions


IMAGENET256_UNCOND = GuidedUNetConfig()


def diffusers_unet_kwargs(cfg: GuidedUNetConfig) -> dict:
    """``UNet2DModel`` arguments that reproduce the guided-diffusion UNet ``cfg``."""
    levels = range(len(cfg.channel_mult))
    return dict(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=tuple(cfg.model_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if cfg.has_attention(l) else "ResnetDownsampleBlock2D" for l in levels),
        up_block_types=tuple("AttnUpBlock2D" if cfg.has_attention(l) else "ResnetUpsampleBlock2D"
                             for l in reversed(levels)),
        downsample_type="resnet", upsample_type="resnet", attention_head_dim=cfg.num_head_channels,
        norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5, resnet_time_scale_shift="scale_shift",
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0, act_fn="silu", dropout=0.0,
        add_attention=True,
    )


_RESBLOCK = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
             "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "proj_out": "to_out.0"}  # qkv -> to_q / to_k / to_v, see _split_qkv


def _module_pairs(cfg: GuidedUNetConfig) -> list[tuple[str, str, str]]:
    """(guided-diffusion module, diffusers module, kind) for every module with weights,
    in the order both networks run them; kind is "resnet", "attention" or "plain"."""
    pairs = [("time_embed.0", "time_embedding.linear_1", "plain"), ("time_embed.2", "time_embedding.linear_2", "plain"),
             ("input_blocks.0.0", "conv_in", "plain")]
    n_levels = len(cfg.channel_mult)
    block = 0
    for level in range(n_levels):
        for r in range(cfg.num_res_blocks):
            block += 1
            pairs.append((f"input_blocks.{block}.0", f"down_blocks.{level}.resnets.{r}", "resnet"))
            if cfg.has_attention(level):
                pairs.append((f"input_blocks.{block}.1", f"down_blocks.{level}.attentions.{r}", "attention"))
        if level != n_levels - 1:
            block += 1
            pairs.append((f"input_blocks.{block}.0", f"down_blocks.{level}.downsamplers.0", "resnet"))
    pairs += [("middle_block.0", "mid_block.resnets.0", "resnet"), ("middle_block.1", "mid_block.attentions.0", "attention"),
              ("middle_block.2", "mid_block.resnets.1", "resnet")]
    block = 0
    for up, level in enumerate(reversed(range(n_levels))):
        for r in range(cfg.num_res_blocks + 1):
            pairs.append((f"output_blocks.{block}.0", f"up_blocks.{up}.resnets.{r}", "resnet"))
            sub = 1
            if cfg.has_attention(level):
                pairs.append((f"output_blocks.{block}.1", f"up_blocks.{up}.attentions.{r}", "attention"))
                sub = 2
            if level != 0 and r == cfg.num_res_blocks:
                pairs.append((f"output_blocks.{block}.{sub}", f"up_blocks.{up}.upsamplers.0", "resnet"))
            block += 1
    pairs += [("out.0", "conv_norm_out", "plain"), ("out.2", "conv_out", "plain")]
    return pairs


@lru_cache(maxsize=4)
def _diffusers_shapes(cfg: GuidedUNetConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the equivalent ``UNet2DModel`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        unet = UNet2DModel(**diffusers_unet_kwargs(cfg))
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


def _param_pairs(cfg: GuidedUNetConfig) -> list[tuple[str, str, str]]:
    """(guided-diffusion key, diffusers key, kind) per tensor; for the fused ``qkv`` the
    diffusers key is that of ``to_q`` and kind is "qkv"."""
    have = _diffusers_shapes(cfg)
    out = []
    for gd, df, kind in _module_pairs(cfg):
        names = {"resnet": _RESBLOCK, "attention": {**_ATTENTION, "qkv": "to_q"}, "plain": {"": ""}}[kind]
        for gd_sub, df_sub in names.items():
            for p in ("weight", "bias"):
                gd_key = ".".join(filter(None, (gd, gd_sub, p)))
                df_key = ".".join(filter(None, (df, df_sub, p)))
                if df_key in have:  # skip_connection only where the channel count changes
                    out.append((gd_key, df_key, "qkv" if gd_sub == "qkv" else kind))
    return out


def expected_guided_shapes(cfg: GuidedUNetConfig = IMAGENET256_UNCOND) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the guided-diffusion state dict of ``cfg`` (the checkpoint's exact key set)."""
    have = _diffusers_shapes(cfg)
    shapes = {}
    for gd_key, df_key, kind in _param_pairs(cfg):
        shape = have[df_key]
        if kind == "qkv":  # conv1d(C, 3C, 1)
            shape = (3 * shape[0], shape[1], 1) if gd_key.endswith("weight") else (3 * shape[0],)
        elif gd_key.endswith("proj_out.weight"):  # conv1d(C, C, 1)
            shape = (*shape, 1)
        shapes[gd_key] = shape
    return shapes


def _split_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """guided-diffusion's legacy fused qkv (3C output channels laid out head by head,
    each head [q, k, v] of ``C / num_heads`` channels) -> q, k, v with heads contiguous."""
    width = qkv.shape[0] // 3
    per_head = qkv.reshape(num_heads, 3, width // num_heads, *qkv.shape[1:])
    return tuple(per_head[:, i].reshape(width, *qkv.shape[1:]).squeeze(-1) for i in range(3))


def convert_guided_state_dict(state: dict[str, torch.Tensor], cfg: GuidedUNetConfig = IMAGENET256_UNCOND,
                              path: str | Path = "<state dict>") -> dict[str, torch.Tensor]:
    """guided-diffusion state dict -> ``UNet2DModel`` state dict; checks the key set first."""
    check_key_set(state, expected_guided_shapes(cfg), path, GUIDED_DIFFUSION_SOURCE,
                  f"the guided-diffusion UNet layout ({cfg.model_channels} channels, mult {list(cfg.channel_mult)})")
    out = {}
    for gd_key, df_key, kind in _param_pairs(cfg):
        value = state[gd_key]
        if kind == "qkv":
            heads = value.shape[0] // 3 // cfg.num_head_channels
            stem = df_key.rsplit(".to_q.", 1)[0]
            param = gd_key.rsplit(".", 1)[1]
            for name, part in zip(("to_q", "to_k", "to_v"), _split_qkv(value, heads)):
                out[f"{stem}.{name}.{param}"] = part
        else:
            out[df_key] = value.squeeze(-1) if gd_key.endswith("proj_out.weight") else value
    return out


def load_guided_unet(path: str | Path, cfg: GuidedUNetConfig = IMAGENET256_UNCOND, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> UNet2DModel:
    """The guided-diffusion checkpoint at ``path`` as a ``UNet2DModel`` (eval mode,
    frozen). Raises :class:`~klsc_lib.weights.WeightsFileError` for a missing,
    unreadable or wrongly keyed file."""
    state = read_state_dict(path, GUIDED_DIFFUSION_SOURCE)
    converted = convert_guided_state_dict(state, cfg, path)
    with torch.device("meta"):
        unet = UNet2DModel(**diffusers_unet_kwargs(cfg))
    unet.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True, assign=True)
    return unet.to(resolve_device(device)).eval().requires_grad_(False)


def learned_range_log_variance(v_BCHW: torch.Tensor, t_B: torch.Tensor, schedule: DDPMSchedule) -> torch.Tensor:
    """guided-diffusion's learned-range variance (``model_var_type=LEARNED_RANGE``):
    log sigma_t^2 = f log beta_t + (1 - f) log beta-tilde_t with f = (v + 1) / 2, where
    beta-tilde_t is the posterior variance with its t = 0 value replaced by t = 1's."""
    betas_T = schedule.on_device(schedule.betas_T, v_BCHW.device)
    abar_T = schedule.on_device(schedule.alphas_cumprod_T, v_BCHW.device)
    abar_prev_T = torch.cat([abar_T.new_ones(1), abar_T[:-1]])
    post_var_T = betas_T * (1 - abar_prev_T) / (1 - abar_T)
    min_log_T = torch.log(torch.cat([post_var_T[1:2], post_var_T[1:]]))
    max_log_T = torch.log(betas_T)
    t = t_B.long().to(betas_T.device)
    shape = (-1, *([1] * (v_BCHW.ndim - 1)))
    min_log = min_log_T[t].reshape(shape).to(v_BCHW)
    max_log = max_log_T[t].reshape(shape).to(v_BCHW)
    frac = (v_BCHW + 1) / 2
    return frac * max_log + (1 - frac) * min_log


class LearnedSigmaEps(nn.Module):
    """A learned-sigma UNet (2C output channels) as the eps-model of a :class:`Prior`:
    calling it returns eps (the first C channels); :meth:`eps_and_log_variance` also
    returns the learned-range log variance for samplers that use it."""

    def __init__(self, unet: UNet2DModel, schedule: DDPMSchedule):
        super().__init__()
        self.unet = unet
        self.schedule = schedule
        self.channels = unet.config.out_channels // 2

    def _out(self, x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        if x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ValueError(f"expected x_t of shape (B, {self.channels}, H, W), got {tuple(x_t.shape)}")
        t_B = torch.as_tensor(t_B, device=x_t.device).expand(x_t.shape[0])
        return self.unet(x_t, t_B).sample

    def forward(self, x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        return self._out(x_t, t_B)[:, : self.channels]

    def eps_and_log_variance(self, x_t: torch.Tensor, t_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._out(x_t, t_B)
        # in float32 even under autocast: respacing divides by log beta_t - log beta-tilde_t, ~1e-5 at
        # large t, which would turn bf16 rounding of the log variance into an exploding variance
        v = out[:, self.channels:].float()
        return out[:, : self.channels], learned_range_log_variance(v, torch.as_tensor(t_B).expand(x_t.shape[0]),
                                                                   self.schedule)


def guided_diffusion_prior(path: str | Path, device: str | torch.device = "auto",
                           cfg: GuidedUNetConfig = IMAGENET256_UNCOND) -> Prior:
    """The DPS ImageNet-256 prior (App J.4) from ``path``: eps-model, the 1000-step
    linear schedule, samples of shape (3, 256, 256), x0-hat clipped to [-1, 1]
    (``clip_denoised=True``). ``prior.eps.eps_and_log_variance`` gives the learned variance."""
    schedule = DDPMSchedule()
    unet = load_guided_unet(path, cfg, device=resolve_device(device))
    return Prior(eps=LearnedSigmaEps(unet, schedule), schedule=schedule,
                 sample_shape=(cfg.in_channels, cfg.image_size, cfg.image_size),
                 name="guided-diffusion-imagenet256-uncond", clip_x0=(-1.0, 1.0))
