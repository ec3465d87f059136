"""Cost of one EnergyDPS sample at paper scale (App L.4, Table 11: 96 s and 14 567 MiB per
sample on one H100), on a CUDA GPU.

The paper's architectures get random weights, written to files in the published layouts
and read back through the same loaders as profile ``paper``:

- DINOv3 ConvNeXt-L (timm layout) hooked at ``stages.2.blocks.20``, at 256 px;
- the guided-diffusion ImageNet-256 unconditional UNet (552 M parameters), learned variance;
- a transcoder of the paper's size (768 -> 12 288 features, TopK 64, 7x7 encoder).

Cost does not depend on the weights' values, so seconds and memory are those of the real
models (the samples are not). ``paper_config`` runs 1000 steps with the gradient through
the denoiser; we time ``num_steps`` of them after a warm-up and scale to 1000. Ratio: our
seconds per sample over the paper's. Without a GPU the benchmark is skipped.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies.units import Units
from klsc_lib.paper_values import TABLE11
from klsc_lib.runtime import CostMeter
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from klsc_lib.worlds.zoo import (CONVNEXT_LARGE, IMAGENET256_UNCOND, PAPER_HOOK, ConvNeXtArch, GuidedUNetConfig,
                                 dinov3_backbone, guided_diffusion_prior)
from klsc_lib.worlds.zoo.dinov3 import PAPER_IMAGE_SIZE, build_dinov3_convnext
from klsc_lib.worlds.zoo.guided_diffusion import expected_guided_shapes

PAPER_TRANSCODER = TranscoderConfig(d_in=768, d_out=768, d_sae=12_288, k=64, kernel_size=7)  # App J.1


def random_guided_state(cfg: GuidedUNetConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A guided-diffusion state dict of ``cfg`` (original key names) with random weights:
    norm scales 1, biases 0, other weights N(0, 1 / fan_in)."""
    state = {}
    for key, shape in expected_guided_shapes(cfg).items():
        if len(shape) == 1:
            state[key] = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        else:
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    return state


def random_paper_models(folder: Path, device: torch.device, arch: ConvNeXtArch = CONVNEXT_LARGE,
                        hook: str = PAPER_HOOK, unet_cfg: GuidedUNetConfig = IMAGENET256_UNCOND,
                        image_size: int = PAPER_IMAGE_SIZE, transcoder_cfg: TranscoderConfig = PAPER_TRANSCODER,
                        seed: int = 0):
    """(prior, feature units) of the paper's architectures with random weights, loaded
    from files in ``folder`` by the paper-scale loaders."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_file(build_dinov3_convnext(arch).state_dict(), str(folder / "dinov3.safetensors"))
        transcoder = Transcoder(transcoder_cfg)
    torch.save(random_guided_state(unet_cfg, gen), folder / "guided.pt")
    backbone = dinov3_backbone(folder / "dinov3.safetensors", device=device, block=hook, arch=arch,
                               image_size=image_size)
    prior = guided_diffusion_prior(folder / "guided.pt", device=device, cfg=unet_cfg)
    units = Units("Feature", backbone, transcoder.to(device).requires_grad_(False), image_size=image_size)
    return prior, units


def measure(prior, units: Units, num_steps: int, batch_size: int, grad_through_denoiser: bool = True) -> dict:
    """Seconds per sampler step and per 1000-step sample, and the peak memory (CUDA; CPU: RSS growth), of
    ``GuidanceConfig.paper()`` (or its Jacobian-free variant; the paper's 1.0 per step) at ``batch_size`` (after a
    warm-up)."""
    cfg = replace(GuidanceConfig.paper(), num_steps=num_steps, strength=num_steps / prior.schedule.num_train_timesteps,
                  grad_through_denoiser=grad_through_denoiser)
    units_B = torch.arange(batch_size) * 97 % units.count
    seeds = list(range(batch_size))
    sample_units(prior, units.energy, units_B, replace(cfg, num_steps=2), seeds, batch_size=batch_size,
                 device=units.device)
    with CostMeter() as meter:  # the warm-up returned CPU tensors, so the GPU is idle here
        _, psi_B = sample_units(prior, units.energy, units_B, cfg, seeds, batch_size=batch_size, device=units.device)
    per_step = meter.seconds / num_steps
    return {"batch_size": batch_size, "grad_through_denoiser": grad_through_denoiser, "seconds_per_step": per_step,
            "seconds_per_sample_1000_steps": per_step * 1000 / batch_size, "peak_mib": meter.peak_bytes / 2**20,
            "psi_finite": bool(torch.isfinite(psi_B).all())}


def run(num_steps: int = 20) -> dict:
    name = "Paper scale (random weights): EnergyDPS paper_config s/sample, ours / paper's (H100)"
    if not torch.cuda.is_available():
        return {"name": name, "ratio": float("nan"), "detail": "skipped: needs a CUDA GPU"}
    device = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        prior, units = random_paper_models(Path(tmp), device)
    runs = [measure(prior, units, num_steps, 1), measure(prior, units, num_steps, 8),
            measure(prior, units, num_steps, 1, grad_through_denoiser=False)]
    one, eight, free = runs
    paper = TABLE11["EnergyDPS"]
    return {"name": name, "ratio": one["seconds_per_sample_1000_steps"] / paper["seconds_per_sample"],
            "detail": (f"{torch.cuda.get_device_name()}, float32: batch 1 {one['seconds_per_sample_1000_steps']:.0f} s "
                       f"and {one['peak_mib']:.0f} MiB per sample (paper {paper['seconds_per_sample']:.0f} s, "
                       f"{paper['gpu_mib']:.0f} MiB); batch 8 {eight['seconds_per_sample_1000_steps']:.0f} s per "
                       f"sample, {eight['peak_mib']:.0f} MiB; Jacobian-free {free['seconds_per_step'] / one['seconds_per_step']:.2f}x "
                       f"the step time, {free['peak_mib']:.0f} MiB"),
            "runs": runs}
