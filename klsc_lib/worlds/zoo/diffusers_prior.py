"""Any diffusers ``UNet2DModel`` / ``DDPMPipeline`` folder on disk as a :class:`Prior`,
e.g. the FFHQ / CelebA-HQ DDPMs of the prior ablation (paper App L.2.2, Table 9;
App J.4 "FFHQ ablation").

Accepted folders: a pipeline folder (``unet/`` + ``scheduler/``), or a UNet folder
(``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``) with an
optional ``scheduler_config.json`` next to it. The weights are read by us (safetensors
or ``torch.load(weights_only=True)``) and must match the UNet's key set exactly:
diffusers' own ``from_pretrained`` only warns about missing keys and keeps them
random, which is the silent fallback the project rules out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from diffusers import UNet2DModel

from klsc_lib.interfaces import DDPMSchedule, Prior
from klsc_lib.runtime import resolve_device
from klsc_lib.weights import WeightsFileError, WeightsSource, check_key_set, read_state_dict
from klsc_lib.worlds.zoo.guided_diffusion import LearnedSigmaEps

DIFFUSERS_PRIOR_SOURCE = WeightsSource(
    what="diffusers DDPM prior folder (App L.2.2 ablation)",
    env_var="KLSC_DIFFUSERS_PRIOR",
    published=("any diffusers UNet2DModel / DDPMPipeline folder, e.g. Hugging Face google/ddpm-celebahq-256 or "
               "google/ddpm-ema-celebahq-256 (download it with huggingface_hub.snapshot_download)"),
)
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# very old diffusers checkpoints name the attention projections query/key/value/proj_attn
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _unet_and_scheduler_dirs(folder: Path) -> tuple[Path, Path | None]:
    if (folder / "unet" / "config.json").is_file():
        sched = folder / "scheduler" / "scheduler_config.json"
        return folder / "unet", sched if sched.is_file() else None
    if (folder / "config.json").is_file():
        sched = folder / "scheduler_config.json"
        return folder, sched if sched.is_file() else None
    raise WeightsFileError(folder, DIFFUSERS_PRIOR_SOURCE,
                           "not a diffusers UNet2DModel folder (no config.json) nor a pipeline folder (no unet/config.json)")


def schedule_from_scheduler_config(path: Path) -> DDPMSchedule:
    """Our :class:`DDPMSchedule` from a diffusers ``scheduler_config.json``; only the
    linear-beta, epsilon-prediction DDPM family is accepted."""
    config = json.loads(path.read_text())
    if config.get("beta_schedule", "linear") != "linear" or config.get("trained_betas") is not None:
        raise ValueError(f"{path}: beta_schedule {config.get('beta_schedule')!r} is not supported; DDPMSchedule is "
                         "linear only. Pass schedule=... explicitly if you know an equivalent linear schedule.")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"{path}: prediction_type {config['prediction_type']!r} is not supported; Prior.eps must "
                         "predict epsilon")
    return DDPMSchedule(num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                        beta_start=float(config.get("beta_start", 1e-4)), beta_end=float(config.get("beta_end", 0.02)))


def load_diffusers_unet(folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> UNet2DModel:
    """The ``UNet2DModel`` of a diffusers folder with every weight checked (eval, frozen)."""
    unet_dir, _ = _unet_and_scheduler_dirs(Path(folder).expanduser())
    weights = next((unet_dir / n for n in _WEIGHT_NAMES if (unet_dir / n).is_file()), None)
    if weights is None:
        raise WeightsFileError(unet_dir / _WEIGHT_NAMES[0], DIFFUSERS_PRIOR_SOURCE,
                               f"no weights file ({' or '.join(_WEIGHT_NAMES)}; sharded weights are not supported)")
    try:
        config = UNet2DModel.load_config(unet_dir)
        with torch.device("meta"):
            unet = UNet2DModel.from_config(config)
    except Exception as err:
        raise WeightsFileError(unet_dir / "config.json", DIFFUSERS_PRIOR_SOURCE,
                               f"config.json does not describe a UNet2DModel: {type(err).__name__}: {err}") from err
    state = read_state_dict(weights, DIFFUSERS_PRIOR_SOURCE)
    pattern = re.compile(r"\.(" + "|".join(_DEPRECATED_ATTENTION) + r")\.(weight|bias)$")
    state = {pattern.sub(lambda m: f".{_DEPRECATED_ATTENTION[m.group(1)]}.{m.group(2)}", k): v for k, v in state.items()}
    check_key_set(state, {k: tuple(v.shape) for k, v in unet.state_dict().items()}, weights, DIFFUSERS_PRIOR_SOURCE,
                  f"the UNet2DModel of {unet_dir / 'config.json'}")
    unet.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return unet.to(resolve_device(device)).eval().requires_grad_(False)


class DiffusersEps(torch.nn.Module):
    """``UNet2DModel`` (epsilon prediction, C output channels) as ``eps(x_t, t_B)``."""

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        t_B = torch.as_tensor(t_B, device=x_t.device).expand(x_t.shape[0])
        return self.unet(x_t, t_B).sample


def diffusers_prior(folder: str | Path, device: str | torch.device = "auto", schedule: DDPMSchedule | None = None,
                    name: str | None = None) -> Prior:
    """A diffusers DDPM folder as a :class:`Prior`. The schedule comes from the folder's
    scheduler config unless ``schedule`` is given; a UNet with twice the input
    channels (learned variance) contributes its first half as eps."""
    folder = Path(folder).expanduser()
    unet = load_diffusers_unet(folder, device=resolve_device(device))
    _, sched_path = _unet_and_scheduler_dirs(folder)
    if schedule is None:
        if sched_path is None:
            raise ValueError(f"{folder} has no scheduler config (scheduler/scheduler_config.json or "
                             "scheduler_config.json); pass schedule=DDPMSchedule(...) explicitly")
        schedule = schedule_from_scheduler_config(sched_path)
    c_in, c_out = unet.config.in_channels, unet.config.out_channels
    if c_out == 2 * c_in:
        eps = LearnedSigmaEps(unet, schedule)
    elif c_out == c_in:
        eps = DiffusersEps(unet)
    else:
        raise ValueError(f"{folder}: UNet maps {c_in} to {c_out} channels; expected {c_in} (eps) or {2 * c_in} (eps + v)")
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return Prior(eps=eps, schedule=schedule, sample_shape=(c_in, h, w), name=name or f"diffusers:{folder.name}",
                 clip_x0=(-1.0, 1.0))
