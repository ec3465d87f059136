"""DINOv3 ConvNeXt-Large, the paper's vision backbone (paper Sec 3.1, App J.1; App J.1).

The architecture is timm's ``convnext_large.dinov3_lvd1689m`` (depths [3, 3, 27, 3],
dims [192, 384, 768, 1536], layer scale, LayerNorm eps 1e-6, no classifier: the
forward pass returns the final-LayerNorm'd average-pooled feature, which is
DINOv3's ``x_norm_clstoken``). Weights come from a local file in one of three layouts:

- ``meta``: Meta's released ``dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth``
  (``downsample_layers.*``, ``stages.i.j.dwconv`` / ``pwconv1`` / ``pwconv2`` / ``gamma``,
  ``norm``; the alias ``norms.3`` of ``norm`` is accepted and ignored);
- ``timm``: timm's own state dict (``stem``, ``stages.i.blocks.j.conv_dw`` / ``mlp.fc1`` ...,
  ``head.norm``), e.g. ``model.safetensors`` of hub id ``timm/convnext_large.dinov3_lvd1689m``;
- ``transformers``: the Hugging Face ``facebook/dinov3-convnext-large-pretrain-lvd1689m``
  ``model.safetensors`` (``stages.i.downsample_layers``, ``stages.i.layers.j.depthwise_conv`` ...,
  ``layer_norm``).

Every layout maps one-to-one onto timm's names; a file must match the architecture's
key set exactly (paper App J: never a silent random-weight fallback). The hook is the
input of ``stages.2.blocks.20`` (block 20 of the third stage; 768 x 16 x 16 at
256 px), and images in [-1, 1] are mapped to [0, 1], clamped, resized to 256 px if
needed and normalised with the ImageNet mean / std (App J.1, "Preprocessing at
guidance time").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from klsc_lib.interfaces import PAPER_IMAGE_SIZE, HookedBackbone, ImageNetPreprocess
from klsc_lib.runtime import resolve_device
from klsc_lib.weights import WeightsFileError, WeightsSource, check_key_set, read_state_dict

DINOV3_FILENAME = "dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth"
DINOV3_SOURCE = WeightsSource(
    what="DINOv3 ConvNeXt-Large backbone weights (App J.1)",
    env_var="KLSC_DINOV3_WEIGHTS",
    published=(f"Meta's DINOv3 release (github.com/facebookresearch/dinov3, file {DINOV3_FILENAME}), "
               "Hugging Face facebook/dinov3-convnext-large-pretrain-lvd1689m (model.safetensors), "
               "or timm convnext_large.dinov3_lvd1689m (hub id timm/convnext_large.dinov3_lvd1689m)"),
)
PAPER_HOOK = "stages.2.blocks.20"  # App J.1: stages.2.20.hook_resid_pre = input of block 20 of stage 2


@dataclass(frozen=True)
class ConvNeXtArch:
    """Stage depths and widths of a ConvNeXt; the default is ConvNeXt-Large."""

    depths: tuple[int, ...] = (3, 3, 27, 3)
    dims: tuple[int, ...] = (192, 384, 768, 1536)


CONVNEXT_LARGE = ConvNeXtArch()

# timm name -> name in each released layout (regex on the module path; the
# parameter name .weight / .bias / gamma is kept).
_TIMM_TO_LAYOUT: dict[str, list[tuple[str, str]]] = {
    "meta": [
        (r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
        (r"^stages\.(\d)\.downsample\.(\d)\.", r"downsample_layers.\1.\2."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.norm\.", r"stages.\1.\2.norm."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.\2.pwconv1."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.\2.pwconv2."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.gamma$", r"stages.\1.\2.gamma"),
        (r"^head\.norm\.", r"norm."),
    ],
    "transformers": [
        (r"^stem\.(\d)\.", r"stages.0.downsample_layers.\1."),
        (r"^stages\.(\d)\.downsample\.(\d)\.", r"stages.\1.downsample_layers.\2."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.layers.\2.depthwise_conv."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.norm\.", r"stages.\1.layers.\2.layer_norm."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.layers.\2.pointwise_conv1."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.layers.\2.pointwise_conv2."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.gamma$", r"stages.\1.layers.\2.gamma"),
        (r"^head\.norm\.", r"layer_norm."),
    ],
    "timm": [],
}
_LAYOUT_SENTINELS = {  # a key only that layout has
    "meta": "downsample_layers.0.0.weight",
    "timm": "stem.0.weight",
    "transformers": "stages.0.downsample_layers.0.weight",
}
_IGNORED_PREFIX = {"meta": "norms.3."}  # Meta registers the final norm twice (as norm and norms.3)


def timm_key_to_layout(key: str, layout: str) -> str:
    """Name of timm parameter ``key`` in the released ``layout`` (one of meta / timm / transformers)."""
    for pattern, repl in _TIMM_TO_LAYOUT[layout]:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    if layout != "timm":
        raise KeyError(f"no {layout} name for timm parameter {key!r}")
    return key


def detect_layout(state: dict[str, torch.Tensor]) -> str | None:
    """``"meta"``, ``"timm"`` or ``"transformers"`` from a sentinel key; None if unknown."""
    for layout, sentinel in _LAYOUT_SENTINELS.items():
        if sentinel in state:
            return layout
    return None


def build_dinov3_convnext(arch: ConvNeXtArch = CONVNEXT_LARGE) -> nn.Module:
    """timm ``convnext_large.dinov3_lvd1689m`` (no classifier) with the given depths /
    dims, random weights. Used by the loader (on the meta device) and by tests."""
    return timm.create_model("convnext_large.dinov3_lvd1689m", pretrained=False, num_classes=0,
                             depths=list(arch.depths), dims=list(arch.dims))


def load_dinov3_convnext(path: str | Path, arch: ConvNeXtArch = CONVNEXT_LARGE,
                         device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The DINOv3 ConvNeXt from a local weights file in the Meta, timm or transformers
    layout, in eval mode with frozen parameters. Raises :class:`WeightsFileError` if the
    file is missing, unreadable, of unknown layout or not exactly the architecture's key set."""
    state = read_state_dict(path, DINOV3_SOURCE)
    layout = detect_layout(state)
    if layout is None:
        raise WeightsFileError(path, DINOV3_SOURCE, "unrecognised key layout (expected Meta's DINOv3 .pth, timm or "
                               f"Hugging Face transformers; first keys: {sorted(state)[:3]})")
    with torch.device("meta"):
        model = build_dinov3_convnext(arch)
    timm_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    to_timm = {timm_key_to_layout(k, layout): k for k in timm_shapes}
    check_key_set(state, {name: timm_shapes[k] for name, k in to_timm.items()}, path, DINOV3_SOURCE,
                  f"the {layout} layout (ConvNeXt depths {list(arch.depths)}, dims {list(arch.dims)})",
                  ignore=[k for k in state if layout in _IGNORED_PREFIX and k.startswith(_IGNORED_PREFIX[layout])])
    timm_state = {to_timm[name]: state[name].to(dtype) for name in to_timm}
    model.load_state_dict(timm_state, strict=True, assign=True)
    return model.to(resolve_device(device)).eval().requires_grad_(False)


def dinov3_backbone(path: str | Path, device: str | torch.device = "auto", block: str = PAPER_HOOK,
                    arch: ConvNeXtArch = CONVNEXT_LARGE, image_size: int = PAPER_IMAGE_SIZE) -> HookedBackbone:
    """The paper's hooked backbone: DINOv3 ConvNeXt-L from ``path``, hooked at the input
    (and output) of ``block`` (App J.1), taking images in [-1, 1]."""
    device = resolve_device(device)
    model = load_dinov3_convnext(path, arch=arch, device=device)
    preprocess = ImageNetPreprocess(image_size).to(device)
    return HookedBackbone(model, block, preprocess, name=f"dinov3-convnext-large@{block}")
