"""One clear error for every bad weights file (issue 4; App J): missing, truncated,
not a pure-tensor file, unknown layout, wrong key set or wrong shapes. Each message
names the file, the environment variable that points to it and where it is
published; nothing ever falls back to random weights. Also: how PaperWorldConfig
resolves paths (env var > config field > cache default). All on slim networks.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from klsc_lib.worlds.zoo import (ConvNeXtArch, PaperWorldConfig, WeightsFileError, diffusers_prior, dinov3_backbone,
                          guided_diffusion_prior, load_dinov3_convnext, load_paper_world)
from klsc_lib.worlds.zoo.dinov3 import build_dinov3_convnext, timm_key_to_layout

SLIM = ConvNeXtArch(depths=(1, 1, 2, 1), dims=(32, 64, 96, 128))
DINOV3_PUBLISHED = ("dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth", "facebook/dinov3-convnext-large-pretrain-lvd1689m",
                    "convnext_large.dinov3_lvd1689m")


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""


@pytest.fixture(scope="module")
def slim_meta_state():
    torch.manual_seed(0)
    timm_state = build_dinov3_convnext(SLIM).state_dict()
    return {timm_key_to_layout(k, "meta"): v for k, v in timm_state.items()}


def assert_names_everything(err: WeightsFileError, path, problem: str) -> None:
    message = str(err)
    assert problem in message and str(path) in message and "KLSC_DINOV3_WEIGHTS" in message
    assert all(source in message for source in DINOV3_PUBLISHED)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "dinov3.pth"
    with pytest.raises(WeightsFileError) as err:
        dinov3_backbone(path, device="cpu")
    assert_names_everything(err.value, path, "file not found")
    with pytest.raises(WeightsFileError, match="KLSC_GUIDED_DIFFUSION_WEIGHTS"):
        guided_diffusion_prior(tmp_path / "imagenet256.pt", device="cpu")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(slim_meta_state, tmp_path, suffix):
    """Half a file (an interrupted download) in either container format."""
    path = tmp_path / f"dinov3{suffix}"
    if suffix == ".pth":
        torch.save(slim_meta_state, path)
    else:
        save_file({k: v.contiguous() for k, v in slim_meta_state.items()}, str(path))
    load_dinov3_convnext(path, arch=SLIM)  # the complete file loads
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsFileError) as err:
        load_dinov3_convnext(path, arch=SLIM)
    assert_names_everything(err.value, path, "truncated or corrupt")


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is never unpickled."""
    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": NotATensor()}, path)
    with pytest.raises(WeightsFileError) as err:
        load_dinov3_convnext(path, arch=SLIM)
    assert_names_everything(err.value, path, "cannot be read")


def test_wrong_key_set_names_the_keys_in_the_files_layout(slim_meta_state, tmp_path):
    """A Meta-layout file with a key missing and an extra one: both are named, in Meta's names."""
    state = dict(slim_meta_state)
    del state["stages.2.1.gamma"]
    state["head.weight"] = torch.zeros(10, 128)
    path = tmp_path / "wrong_keys.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFileError) as err:
        load_dinov3_convnext(path, arch=SLIM)
    assert_names_everything(err.value, path, "wrong key set for the meta layout")
    assert "stages.2.1.gamma" in str(err.value) and "head.weight" in str(err.value)


def test_wrong_shapes_from_another_convnext_size(slim_meta_state, tmp_path):
    """Weights of a narrower ConvNeXt (same key set, other widths) are rejected, not resized."""
    path = tmp_path / "narrow.pth"
    torch.save(slim_meta_state, path)
    with pytest.raises(WeightsFileError) as err:
        load_dinov3_convnext(path, arch=ConvNeXtArch(depths=SLIM.depths, dims=(48, 96, 144, 192)))
    assert_names_everything(err.value, path, "wrong shapes")


def test_unknown_layout(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsFileError) as err:
        load_dinov3_convnext(path, arch=SLIM)
    assert_names_everything(err.value, path, "unrecognised key layout")


def test_diffusers_folder_errors(tmp_path):
    """Not a diffusers folder; a folder whose weights file is absent; weights with a missing key."""
    from diffusers import UNet2DModel

    with pytest.raises(WeightsFileError, match="KLSC_DIFFUSERS_PRIOR"):
        diffusers_prior(tmp_path, device="cpu")
    unet = UNet2DModel(sample_size=8, block_out_channels=(32,), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",))
    folder = tmp_path / "unet"
    unet.save_pretrained(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = {k: v.contiguous() for k, v in unet.state_dict().items()}
    weights.unlink()
    with pytest.raises(WeightsFileError, match="no weights file"):
        diffusers_prior(folder, device="cpu")
    del state["conv_out.bias"]
    save_file(state, str(weights))
    with pytest.raises(WeightsFileError, match="conv_out.bias"):
        diffusers_prior(folder, device="cpu")


def test_paper_world_paths_env_var_then_field_then_cache(tmp_path, monkeypatch):
    """$KLSC_DINOV3_WEIGHTS beats the config field, which beats <KLSC_CACHE>/weights/<file>."""
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "cache"))
    for var in ("KLSC_DINOV3_WEIGHTS", "KLSC_GUIDED_DIFFUSION_WEIGHTS", "KLSC_IMAGENET_DIR"):
        monkeypatch.delenv(var, raising=False)
    cfg = PaperWorldConfig()
    assert cfg.dinov3_path() == tmp_path / "cache" / "weights" / DINOV3_PUBLISHED[0]
    assert cfg.prior_path() == tmp_path / "cache" / "weights" / "256x256_diffusion_uncond.pt"
    assert cfg.image_root() is None
    cfg = PaperWorldConfig(dinov3_weights=str(tmp_path / "field.pth"))
    assert cfg.dinov3_path() == tmp_path / "field.pth"
    monkeypatch.setenv("KLSC_DINOV3_WEIGHTS", str(tmp_path / "env.pth"))
    assert cfg.dinov3_path() == tmp_path / "env.pth"
    with pytest.raises(ValueError, match="prior_kind"):
        PaperWorldConfig(prior_kind="ddim")


def test_paper_world_without_weights_raises_the_clear_error(tmp_path, monkeypatch):
    """No weights anywhere: load_paper_world stops at the first file with the clear error."""
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("KLSC_DINOV3_WEIGHTS", raising=False)
    with pytest.raises(WeightsFileError) as err:
        load_paper_world(PaperWorldConfig(), device="cpu")
    assert_names_everything(err.value, tmp_path / "empty-cache" / "weights" / DINOV3_PUBLISHED[0], "file not found")
