"""The DINOv3 ConvNeXt-Large loader (App J.1): Meta, timm and Hugging Face
layouts, the hook at the input of ``stages.2.blocks.20`` and the preprocessing.

``MetaConvNeXt`` below is written in this test from the architecture of Meta's
DINOv3 ``ConvNeXt`` (``downsample_layers``, ``stages.i.j.dwconv / pwconv1 / pwconv2 /
gamma``, final ``norm`` registered a second time as ``norms.3``), so its state dict is
a checkpoint in Meta's released layout, independent of the loader's key mapping.

- Full ConvNeXt-Large (196 M parameters, random weights): saved in Meta's layout,
  loaded through ``dinov3_backbone``; the hook tensor (1 x 768 x 16 x 16 at 256 px) and
  the block output equal the reference network's. The loaded model's timm state dict,
  saved as safetensors (timm / HF hub layout), loads back to identical weights.
- A slim ConvNeXt of the same structure (one forward pass of ConvNeXt-L is seconds on
  2 shared cores, so full outputs are compared here): Meta layout through the final
  normalised pooled feature, and the Hugging Face transformers layout.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from klsc_lib.interfaces import IMAGENET_MEAN, IMAGENET_STD, ImageNetPreprocess
from klsc_lib.worlds.zoo.dinov3 import (CONVNEXT_LARGE, ConvNeXtArch,
                                 dinov3_backbone, load_dinov3_convnext)

SLIM = ConvNeXtArch(depths=(1, 1, 3, 1), dims=(32, 64, 96, 128))


# ---------------------------------------------------------------- reference network (Meta key names)
class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-6) * self.weight[:, None, None] + self.bias[:, None, None]


class MetaBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.permute(0, 3, 1, 2)


class MetaConvNeXt(nn.Module):
    def __init__(self, arch: ConvNeXtArch):
        super().__init__()
        d = arch.dims
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, d[0], 4, stride=4), ChannelsFirstLayerNorm(d[0]))])
        self.downsample_layers.extend(nn.Sequential(ChannelsFirstLayerNorm(d[i]), nn.Conv2d(d[i], d[i + 1], 2, stride=2))
                                      for i in range(3))
        self.stages = nn.ModuleList(nn.Sequential(*[MetaBlock(d[i]) for _ in range(n)]) for i, n in enumerate(arch.depths))
        self.norm = nn.LayerNorm(d[-1], eps=1e-6)
        self.norms = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(), self.norm])

    def forward(self, x: torch.Tensor, stage: int = 2, block: int = 20, stop: bool = False) -> dict[str, torch.Tensor]:
        """Input and output of block ``block`` of stage ``stage`` and, unless ``stop``,
        the normalised pooled feature (DINOv3's x_norm_clstoken)."""
        out = {}
        for i in range(4):
            x = self.downsample_layers[i](x)
            for j, blk in enumerate(self.stages[i]):
                if (i, j) == (stage, block):
                    out["block_in"] = x
                x = blk(x)
                if (i, j) == (stage, block):
                    out["block_out"] = x
                    if stop:
                        return out
        out["cls"] = self.norm(x.mean((-2, -1)))
        return out


def random_meta_convnext(arch: ConvNeXtArch, seed: int) -> MetaConvNeXt:
    """Reference network with random weights of a sane scale (built on the meta device
    and filled in place, which is much faster than nn.init for 196 M parameters).
    Layer scales and norm affines are random too, so every tensor matters."""
    with torch.device("meta"):
        model = MetaConvNeXt(arch)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:  # biases and norm affines
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
    return model.eval()


def reference_preprocess(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
    return (((x + 1) / 2).clamp(0, 1) - mean) / std


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def large_meta_checkpoint(tmp_path_factory):
    ref = random_meta_convnext(CONVNEXT_LARGE, seed=0)
    path = tmp_path_factory.mktemp("dinov3") / "dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


@pytest.mark.slow
def test_large_meta_layout_hook_matches_the_reference_and_timm_layout_round_trips(large_meta_checkpoint, tmp_path):
    """Meta .pth -> hooked timm ConvNeXt-L: the hook tensors (input and output of
    stages.2.blocks.20, 1 x 768 x 16 x 16 at 256 px) equal the reference network's; the
    loaded model's timm state dict saved as safetensors (timm / HF hub layout) loads
    back to identical weights. The pooled output is compared on the slim arch below."""
    ref, path = large_meta_checkpoint
    ref_state = ref.state_dict()
    assert "norms.3.weight" in ref_state and "downsample_layers.0.0.weight" in ref_state  # really Meta's layout
    backbone = dinov3_backbone(path, device="cpu")
    assert backbone.block_name == "stages.2.blocks.20"
    n_params = sum(p.numel() for p in backbone.model.parameters())
    assert n_params == sum(v.numel() for k, v in ref_state.items() if not k.startswith("norms.")) and n_params > 195e6
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1  # a bit out of range
    with torch.no_grad():
        expected = ref(reference_preprocess(x), stop=True)
        block_in, block_out = backbone.hook_io(x)
    assert block_in.shape == (1, 768, 16, 16) and block_out.shape == (1, 768, 16, 16)
    torch.testing.assert_close(block_in, expected["block_in"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(block_out, expected["block_out"], rtol=1e-4, atol=1e-4)

    timm_path = tmp_path / "model.safetensors"
    timm_state = backbone.model.state_dict()
    assert "stem.0.weight" in timm_state and "head.norm.weight" in timm_state  # timm's layout
    save_file({k: v.contiguous() for k, v in timm_state.items()}, str(timm_path))
    again = load_dinov3_convnext(timm_path)
    assert all(torch.equal(v, timm_state[k]) for k, v in again.state_dict().items())


def to_transformers_layout(meta_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Meta keys to the Hugging Face transformers DINOv3ConvNext names."""
    rules = [(r"^downsample_layers\.(\d)\.", r"stages.\1.downsample_layers."),
             (r"^stages\.(\d)\.(\d+)\.dwconv\.", r"stages.\1.layers.\2.depthwise_conv."),
             (r"^stages\.(\d)\.(\d+)\.norm\.", r"stages.\1.layers.\2.layer_norm."),
             (r"^stages\.(\d)\.(\d+)\.pwconv1\.", r"stages.\1.layers.\2.pointwise_conv1."),
             (r"^stages\.(\d)\.(\d+)\.pwconv2\.", r"stages.\1.layers.\2.pointwise_conv2."),
             (r"^stages\.(\d)\.(\d+)\.gamma$", r"stages.\1.layers.\2.gamma"),
             (r"^norm\.", "layer_norm.")]
    out = {}
    for key, value in meta_state.items():
        if key.startswith("norms."):
            continue
        for pattern, repl in rules:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        out[key] = value.contiguous()
    return out


def test_slim_transformers_layout_matches_the_reference(tmp_path):
    """HF transformers safetensors (slim arch, 128 px): hook at stages.2.blocks.1 and the
    pooled feature equal the reference network's."""
    ref = random_meta_convnext(SLIM, seed=3)
    path = tmp_path / "model.safetensors"
    save_file(to_transformers_layout(ref.state_dict()), str(path))
    backbone = dinov3_backbone(path, device="cpu", block="stages.2.blocks.1", arch=SLIM, image_size=128)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        expected = ref(reference_preprocess(x), stage=2, block=1)
        block_in, block_out = backbone.hook_io(x)
        cls = backbone(x)
    assert block_in.shape == (2, 96, 8, 8)
    torch.testing.assert_close(block_in, expected["block_in"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block_out, expected["block_out"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls, expected["cls"], rtol=1e-5, atol=1e-5)


def test_slim_meta_layout_outputs_match_and_gradients_reach_the_image(tmp_path):
    """Meta .pth (slim arch): hook tensors and the pooled feature equal the reference;
    parameters are frozen and the input gets a gradient (guidance needs d hook / d image)."""
    ref = random_meta_convnext(SLIM, seed=5)
    path = tmp_path / "slim.pth"
    torch.save(ref.state_dict(), path)
    model = load_dinov3_convnext(path, arch=SLIM)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    backbone = dinov3_backbone(path, device="cpu", block="stages.2.blocks.2", arch=SLIM, image_size=64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.no_grad():
        expected = ref(reference_preprocess(x), stage=2, block=2)
        torch.testing.assert_close(backbone(x), expected["cls"], rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    block_in, block_out = backbone.hook_io(x)
    torch.testing.assert_close(block_out, expected["block_out"], rtol=1e-5, atol=1e-5)
    block_in.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_preprocess_maps_range_clamps_and_resizes():
    """[-1, 1] -> [0, 1] -> clamp -> ImageNet mean/std; other sizes are resized to 256."""
    pre = ImageNetPreprocess()
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    lo = pre(torch.full((1, 3, 256, 256), -1.0))[0, :, 0, 0]
    hi = pre(torch.full((1, 3, 256, 256), 1.0))[0, :, 0, 0]
    torch.testing.assert_close(lo, -mean / std)
    torch.testing.assert_close(hi, (1 - mean) / std)
    torch.testing.assert_close(pre(torch.full((1, 3, 256, 256), 3.0))[0, :, 0, 0], hi)  # clamped
    assert pre(torch.zeros(2, 3, 128, 128)).shape == (2, 3, 256, 256)
    with pytest.raises(ValueError, match="expected images"):
        pre(torch.zeros(3, 256, 256))


@pytest.mark.slow
def test_paper_world_end_to_end_with_local_files(large_meta_checkpoint, tmp_path, monkeypatch):
    """load_world(PaperWorldConfig) from local files only: DINOv3-L (Meta .pth), a
    diffusers DDPM folder as the prior (App L.2.2 path) and an ImageNet-layout image
    folder; the World items, the hook shape on world images and record_world's output."""
    import json

    from diffusers import DDPMScheduler, UNet2DModel
    from PIL import Image

    from klsc_lib.report import Report
    from klsc_lib.viz.world import record_world
    from klsc_lib.worlds import load_world
    from klsc_lib.worlds.zoo import PaperWorldConfig

    _, path = large_meta_checkpoint
    for var in ("KLSC_DINOV3_WEIGHTS", "KLSC_DIFFUSERS_PRIOR", "KLSC_IMAGENET_DIR"):
        monkeypatch.delenv(var, raising=False)
    UNet2DModel(sample_size=16, block_out_channels=(32,), layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",)).save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler().save_pretrained(tmp_path / "ddpm" / "scheduler")
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / "imagenet" / split / wnid).mkdir(parents=True)
            pixels = (torch.rand(40, 60, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "imagenet" / split / wnid / "a.JPEG")
    cfg = PaperWorldConfig(dinov3_weights=str(path), diffusers_prior=str(tmp_path / "ddpm"), prior_kind="diffusers",
                           image_folder=str(tmp_path / "imagenet"))
    world = load_world(cfg, device="cpu")
    assert world.cond_prior is None and world.factor_names == ("label",) and world.image_size == 16
    assert len(world.train) == 2 and len(world.test) == 2
    image_CHW, factors = world.test[1]
    assert image_CHW.shape == (3, 16, 16) and -1 <= image_CHW.min() and image_CHW.max() <= 1 and factors == {"label": 1}
    with torch.no_grad():
        block_in, _ = world.backbone.hook_io(image_CHW[None])
    assert block_in.shape == (1, 768, 16, 16)
    report = Report("zoo_test", tmp_path / "fig", "paper", 0, "cpu")
    record_world(report, world)
    report.write()
    metrics = json.loads((tmp_path / "fig" / "metrics.json").read_text())
    assert "world/backbone_params_M" in json.dumps(metrics) and (tmp_path / "fig" / "world.png").is_file()
