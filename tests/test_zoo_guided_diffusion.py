"""The guided-diffusion ImageNet-256 prior loader (App J.4): checkpoint key set,
conversion into a diffusers UNet2DModel, numerical equivalence, learned variance.

The reference network below, ``GDUNet``, is written in this test from the
architecture of OpenAI's guided-diffusion ``UNetModel`` (scale-shift res-blocks,
res-block down/up sampling, legacy fused-qkv attention, [cos, sin] time embedding)
and uses its original parameter names, so a state dict of ``GDUNet`` is a
checkpoint in the real layout. It is independent of the loader's key mapping.

- Full paper config (256 channels, 552.8 M parameters): built on the meta device, so
  only its key set and parameter shapes are compared with the loader's, and its
  meta-state dict is converted and loaded strictly into the meta UNet2DModel. No
  forward pass (2.2 GB of weights).
- Slim config of the same structure (six levels, two res-blocks, attention on the
  three deepest levels, scale-shift norm, res-block up/down, learned sigma; 32
  channels, 64 px): saved with torch.save, loaded through our loader, outputs
  compared with the reference at several timesteps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.worlds.zoo import WeightsFileError
from klsc_lib.worlds.zoo.guided_diffusion import (IMAGENET256_UNCOND, GuidedUNetConfig, convert_guided_state_dict,
                                           diffusers_unet_kwargs, expected_guided_shapes, guided_diffusion_prior,
                                           learned_range_log_variance, load_guided_unet)

SLIM = GuidedUNetConfig(image_size=64, model_channels=32, attention_resolutions=(8, 4, 2), num_head_channels=16)


# ---------------------------------------------------------------- reference network (original key names)
def gd_timestep_embedding(t_B: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t_B.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GDResBlock(nn.Module):
    def __init__(self, ch: int, emb_ch: int, out_ch: int, up: bool = False, down: bool = False):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_ch), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)
        self.up, self.down = up, down

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return nn.functional.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[:-1](x)
        h, x = self._resample(h), self._resample(x)
        h = self.in_layers[-1](h)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class GDAttention(nn.Module):
    def __init__(self, ch: int, head_ch: int):
        super().__init__()
        self.heads = ch // head_ch
        self.norm = nn.GroupNorm(32, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        ch = c // self.heads
        q, k, v = qkv.reshape(b * self.heads, 3 * ch, -1).split(ch, dim=1)  # legacy order: per head [q, k, v]
        scale = ch ** -0.25
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).softmax(dim=-1)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class GDSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, GDResBlock) else layer(x)
        return x


class GDUNet(nn.Module):
    def __init__(self, cfg: GuidedUNetConfig):
        super().__init__()
        mc, emb = cfg.model_channels, 4 * cfg.model_channels
        attention_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([GDSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [GDResBlock(ch, emb, mult * mc)]
                ch = mult * mc
                if ds in attention_ds:
                    layers.append(GDAttention(ch, cfg.num_head_channels))
                self.input_blocks.append(GDSequential(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(GDSequential(GDResBlock(ch, emb, ch, down=True)))
                chans.append(ch)
                ds *= 2
        self.middle_block = GDSequential(GDResBlock(ch, emb, ch), GDAttention(ch, cfg.num_head_channels),
                                         GDResBlock(ch, emb, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [GDResBlock(ch + chans.pop(), emb, mult * mc)]
                ch = mult * mc
                if ds in attention_ds:
                    layers.append(GDAttention(ch, cfg.num_head_channels))
                if level and i == cfg.num_res_blocks:
                    layers.append(GDResBlock(ch, emb, ch, up=True))
                    ds //= 2
                self.output_blocks.append(GDSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(gd_timestep_embedding(t_B, self.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def slim_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ref = GDUNet(SLIM).eval()
    path = tmp_path_factory.mktemp("gd") / "slim_uncond.pt"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_full_config_key_set_and_shapes_match_the_original_layout():
    """Paper config (no forward): the guided-diffusion key set / shapes we expect equal
    those of the reference network, and the converted state dict loads strictly
    (assign, meta device) into the diffusers UNet2DModel."""
    from diffusers import UNet2DModel

    with torch.device("meta"):
        ref = GDUNet(IMAGENET256_UNCOND)
    ref_state = ref.state_dict()
    assert {k: tuple(v.shape) for k, v in ref_state.items()} == expected_guided_shapes(IMAGENET256_UNCOND)
    n_params = sum(v.numel() for v in ref_state.values())
    assert 550e6 < n_params < 556e6  # ~2.2 GB in fp32
    assert ref_state["out.2.weight"].shape == (6, 256, 3, 3)  # learned sigma: eps + v
    assert ref_state["middle_block.1.qkv.weight"].shape == (3 * 1024, 1024, 1)
    with torch.device("meta"):
        unet = UNet2DModel(**diffusers_unet_kwargs(IMAGENET256_UNCOND))
    result = unet.load_state_dict(convert_guided_state_dict(ref_state, IMAGENET256_UNCOND), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_slim_config_loads_and_matches_the_reference_outputs(slim_checkpoint):
    """Slim config: our converted UNet2DModel reproduces the original-layout network's
    6-channel output (eps and v) at small, middle and large t."""
    ref, path = slim_checkpoint
    unet = load_guided_unet(path, SLIM)
    x = torch.randn(2, 3, SLIM.image_size, SLIM.image_size, generator=torch.Generator().manual_seed(1))
    for t in (0, 437, 999):
        t_B = torch.tensor([t, max(t - 5, 0)])
        with torch.no_grad():
            expected, ours = ref(x, t_B), unet(x, t_B).sample
        assert ours.shape == (2, 6, SLIM.image_size, SLIM.image_size)
        torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)


def test_prior_wraps_eps_schedule_and_learned_variance(slim_checkpoint):
    """The Prior returns the first 3 channels as eps, uses the 1000-step linear schedule,
    and its learned variance is the learned-range interpolation of those channels."""
    ref, path = slim_checkpoint
    prior = guided_diffusion_prior(path, device="cpu", cfg=SLIM)
    assert prior.schedule == DDPMSchedule() and prior.sample_shape == (3, 64, 64) and prior.clip_x0 == (-1.0, 1.0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    t_B = torch.tensor([300])
    with torch.no_grad():
        out = ref(x, t_B)
        eps = prior.eps(x, t_B)
        eps2, log_var = prior.eps.eps_and_log_variance(x, t_B)
    torch.testing.assert_close(eps, out[:, :3], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(eps2, eps)
    torch.testing.assert_close(log_var, learned_range_log_variance(out[:, 3:], t_B, prior.schedule),
                               atol=1e-4, rtol=1e-4)


def test_learned_range_endpoints_are_beta_and_clipped_posterior_variance():
    """v = +1 gives log beta_t, v = -1 gives log beta-tilde_t (t = 0 uses beta-tilde_1)."""
    sched = DDPMSchedule()
    t_B = torch.tensor([0, 1, 500, 999])
    ones = torch.ones(4, 1, 2, 2, dtype=torch.float64)
    abar = sched.alphas_cumprod_T
    post = sched.betas_T[1:] * (1 - abar[:-1]) / (1 - abar[1:])  # beta-tilde_t for t >= 1
    expected_min = torch.log(torch.stack([post[0], post[0], post[499], post[998]]))
    hi = learned_range_log_variance(ones, t_B, sched)[:, 0, 0, 0]
    lo = learned_range_log_variance(-ones, t_B, sched)[:, 0, 0, 0]
    torch.testing.assert_close(hi, torch.log(sched.betas_T[t_B]))
    torch.testing.assert_close(lo, expected_min)
    mid = learned_range_log_variance(0 * ones, t_B, sched)[:, 0, 0, 0]
    torch.testing.assert_close(mid, (hi + lo) / 2)


def test_truncated_and_wrongly_keyed_checkpoints_raise_the_clear_error(slim_checkpoint, tmp_path):
    """A truncated file and a file with one renamed key each raise WeightsFileError
    naming the file, the env var and the guided-diffusion release."""
    ref, path = slim_checkpoint
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsFileError) as err:
        load_guided_unet(truncated, SLIM)
    assert "truncated" in str(err.value) and str(truncated) in str(err.value)
    assert "KLSC_GUIDED_DIFFUSION_WEIGHTS" in str(err.value) and "256x256_diffusion_uncond.pt" in str(err.value)

    state = ref.state_dict()
    state["label_emb.weight"] = torch.zeros(1000, 128)  # a class-conditional checkpoint has this extra key
    del state["middle_block.1.qkv.bias"]
    wrong = tmp_path / "wrong_keys.pt"
    torch.save(state, wrong)
    with pytest.raises(WeightsFileError) as err:
        load_guided_unet(wrong, SLIM)
    message = str(err.value)
    assert "middle_block.1.qkv.bias" in message and "label_emb.weight" in message and str(wrong) in message
    assert "imagenet256.pt" in message


# ---------------------------------------------------------------- diffusers folders (App L.2.2 alternative prior)
def tiny_ddpm_unet(out_channels: int = 3):
    from diffusers import UNet2DModel

    torch.manual_seed(7)
    return UNet2DModel(sample_size=16, block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=8, out_channels=out_channels).eval()


def test_diffusers_pipeline_folder_becomes_a_prior(tmp_path):
    """A DDPMPipeline-layout folder (unet/ + scheduler/) loads as a Prior whose eps is
    the UNet's output and whose schedule is the folder's scheduler config."""
    from diffusers import DDPMScheduler

    from klsc_lib.worlds.zoo import diffusers_prior

    unet = tiny_ddpm_unet()
    unet.save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03).save_pretrained(tmp_path / "ddpm" / "scheduler")
    prior = diffusers_prior(tmp_path / "ddpm", device="cpu")
    assert prior.schedule == DDPMSchedule(num_train_timesteps=500, beta_start=2e-4, beta_end=0.03)
    assert prior.sample_shape == (3, 16, 16)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    t_B = torch.tensor([3, 400])
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, t_B), unet(x, t_B).sample)


def test_diffusers_unet_folder_with_legacy_attention_names_and_learned_variance(tmp_path):
    """A UNet folder with a torch-pickled .bin using the old attention names
    (query / key / value / proj_attn) and 6 output channels: eps is the first half."""
    from klsc_lib.worlds.zoo import diffusers_prior

    unet = tiny_ddpm_unet(out_channels=6)
    folder = tmp_path / "old_unet"
    unet.save_pretrained(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    legacy = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
              .replace(".to_out.0.", ".proj_attn."): v for k, v in unet.state_dict().items()}
    assert any(".query." in k for k in legacy)
    torch.save(legacy, folder / "diffusion_pytorch_model.bin")
    prior = diffusers_prior(folder, device="cpu", schedule=DDPMSchedule())
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, torch.tensor([10])), unet(x, torch.tensor([10])).sample[:, :3])
