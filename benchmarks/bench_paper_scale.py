"""Cost of one EnergyDPS sample at paper scale (App L.4, Table 11: 96 s and 14 567 MiB per
sample on one H100), on a CUDA GPU, before and after the fast paths of
:class:`klsc_lib.diffusion.speed.Speed`.

The paper's architectures get random weights, written to files in the published layouts
and read back through the same loaders as profile ``paper``:

- DINOv3 ConvNeXt-L (timm layout) hooked at ``stages.2.blocks.20``, at 256 px;
- the guided-diffusion ImageNet-256 unconditional UNet (552 M parameters), learned variance;
- a transcoder of the paper's size (768 -> 12 288 features, TopK 64, 7x7 encoder).

Cost does not depend on the weights' values, so seconds and memory are those of the real
models (the samples are not). ``GuidanceConfig.paper()`` runs 1000 steps with the gradient through
the denoiser; we time ``num_steps`` of them after a warm-up and scale to 1000. Measured:

- ``GuidanceConfig.paper()`` at batch 1 in float32 (the reference), with TF32, and with
  :meth:`Speed.fast` (bf16 autocast, TF32, channels_last) at batch 1, 4, 8 and 16;
- where one step's time goes (CUDA events per network call, the profiler's top kernels,
  the GPU's busy fraction: the rest is Python and launch overhead);
- what the fast path changes: the same noise through float32 and the fast path,
  mean |x| difference and psi difference;
- notebook 04's fast configuration (50 steps) and MACO (128 steps, 6 crops) per sample.

``python -m benchmarks.bench_paper_scale --out DIR`` writes every number to
``DIR/paper_scale.json`` (and the profiler tables beside it); ``--compile`` adds
``torch.compile``. ``make bench`` runs it with the defaults; without a GPU it is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from klsc_lib.baselines.maco import MacoPrior, maco
from klsc_lib.diffusion.energy_dps import guidance_step, sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.speed import Speed, to_channels_last
from klsc_lib.energies.units import Units
from klsc_lib.paper_values import TABLE11
from klsc_lib.report import to_jsonable
from klsc_lib.runtime import CostMeter
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from klsc_lib.worlds.zoo import (CONVNEXT_LARGE, IMAGENET256_UNCOND, PAPER_HOOK, ConvNeXtArch, GuidedUNetConfig,
                                 dinov3_backbone, guided_diffusion_prior)
from klsc_lib.worlds.zoo.dinov3 import PAPER_IMAGE_SIZE, build_dinov3_convnext
from klsc_lib.worlds.zoo.guided_diffusion import expected_guided_shapes

PAPER_TRANSCODER = TranscoderConfig(d_in=768, d_out=768, d_sae=12_288, k=64, kernel_size=7)  # App J.1
NAME = "Paper scale (random weights): EnergyDPS paper config s/sample, ours (fast path, best batch) / paper's"


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


def _units_B(units: Units, batch_size: int) -> torch.Tensor:
    return torch.arange(batch_size) * 97 % units.count


def _cuda_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def paper_guidance(prior, num_steps: int, speed: Speed = Speed.off(), grad_through_denoiser: bool = True
                   ) -> GuidanceConfig:
    """``GuidanceConfig.paper()`` on ``num_steps`` respaced steps at the paper's 1.0 per step."""
    return replace(GuidanceConfig.paper(), num_steps=num_steps, strength=num_steps / prior.schedule.num_train_timesteps,
                   grad_through_denoiser=grad_through_denoiser, speed=speed)


def _sample(prior, units: Units, cfg: GuidanceConfig, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.speed.channels_last:
        to_channels_last(units.backbone)
    return sample_units(prior, units.energy, _units_B(units, batch_size), cfg, list(range(batch_size)),
                        batch_size=batch_size, device=units.device)


def measure(prior, units: Units, num_steps: int, batch_size: int, grad_through_denoiser: bool = True,
            speed: Speed = Speed.off()) -> dict:
    """Seconds per sampler step and per 1000-step sample, and the peak memory (CUDA; CPU: RSS
    growth), of ``GuidanceConfig.paper()`` (or its Jacobian-free variant) at ``batch_size`` with ``speed``
    (after a 2-step warm-up)."""
    cfg = paper_guidance(prior, num_steps, speed, grad_through_denoiser)
    _sample(prior, units, replace(cfg, num_steps=2), batch_size)
    with CostMeter() as meter:  # the warm-up returned CPU tensors, so the GPU is idle here
        _, psi_B = _sample(prior, units, cfg, batch_size)
    per_step = meter.seconds / num_steps
    return {"batch_size": batch_size, "grad_through_denoiser": grad_through_denoiser, "speed": asdict(speed),
            "seconds_per_step": per_step, "seconds_per_sample_1000_steps": per_step * 1000 / batch_size,
            "peak_mib": meter.peak_bytes / 2**20, "psi_finite": bool(torch.isfinite(psi_B).all())}


def fidelity(prior, units: Units, speed: Speed, num_steps: int = 20, batch_size: int = 4) -> dict:
    """The same noise through ``GuidanceConfig.paper()`` (``num_steps`` respaced steps) in float32 and
    with ``speed``: mean and max |x difference| (images in [-1, 1]) and psi difference."""
    x_ref, psi_ref = _sample(prior, units, paper_guidance(prior, num_steps), batch_size)
    x_fast, psi_fast = _sample(prior, units, paper_guidance(prior, num_steps, speed), batch_size)
    dx = (x_fast - x_ref).abs()
    return {"num_steps": num_steps, "batch_size": batch_size, "mean_abs_x_diff": float(dx.mean()),
            "max_abs_x_diff": float(dx.max()), "mean_abs_psi_diff": float((psi_fast - psi_ref).abs().mean()),
            "psi_ref_mean": float(psi_ref.mean()), "psi_ref_sd": float(psi_ref.std())}


def breakdown(prior, units: Units, batch_size: int, speed: Speed, t: int = 500) -> dict:
    """Milliseconds of each network call in one ``GuidanceConfig.paper()`` step (synchronised wall time,
    after a warm-up): UNet forward alone, UNet forward + backward, backbone-to-hook + transcoder
    forward + backward on an image batch, and the whole guidance step."""
    device = next(units.backbone.parameters()).device
    if speed.channels_last:
        to_channels_last(units.backbone, prior.eps)
    fast_prior, energy = speed.prior(prior), speed.energy(units.energy(_units_B(units, batch_size)))
    x_BCHW = torch.randn(batch_size, *prior.sample_shape, device=device)
    t_B = torch.full((batch_size,), t, device=device)

    def unet_forward():
        with torch.no_grad():
            fast_prior.eps.eps_and_log_variance(x_BCHW, t_B)

    def unet_backward():
        x = x_BCHW.detach().requires_grad_(True)
        torch.autograd.grad(fast_prior.eps(x, t_B).sum(), x)

    def energy_backward():
        x = x_BCHW.clamp(-1, 1).requires_grad_(True)
        torch.autograd.grad(energy(x).sum(), x)

    def whole_step():
        guidance_step(fast_prior, energy, x_BCHW, t, check=False, cap_B=15.0)

    out = {}
    with speed.math():
        for name, fn in [("unet_forward", unet_forward), ("unet_forward_backward", unet_backward),
                         ("backbone_transcoder_forward_backward", energy_backward), ("guidance_step", whole_step)]:
            fn()
            _cuda_sync(device)
            start = time.perf_counter()
            for _ in range(3):
                fn()
            _cuda_sync(device)
            out[f"{name}_ms"] = 1e3 * (time.perf_counter() - start) / 3
    return out


def profile(prior, units: Units, batch_size: int, speed: Speed, folder: Path, num_steps: int = 3) -> dict:
    """``torch.profiler`` over ``num_steps`` sampler steps: the top kernels by CUDA time
    (written to ``folder``) and the GPU's busy fraction of the wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg = paper_guidance(prior, num_steps, speed)
    _sample(prior, units, replace(cfg, num_steps=2), batch_size)
    device = next(units.backbone.parameters()).device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        _sample(prior, units, cfg, batch_size)
        _cuda_sync(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events)  # 0 on CPU
    tag = "fast" if not speed.is_off else "float32"
    (folder / f"profile_{tag}_b{batch_size}.txt").write_text(
        events.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60))
    return {"wall_ms_per_step": 1e3 * wall / num_steps, "gpu_busy_ms_per_step": gpu_us / 1e3 / num_steps,
            "gpu_busy_fraction": gpu_us / 1e6 / wall}


def maco_cost(units: Units, batch_size: int, steps: int, speed: Speed, total_steps: int = 128) -> dict:
    """Seconds per MACO sample (App J.3.1: 6 jittered crops a step) for ``total_steps``
    steps at paper scale, timed over ``steps``."""
    device = next(units.backbone.parameters()).device
    size = units.image_size
    maco_prior = MacoPrior.from_images(torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    energy = speed.energy(units.energy(_units_B(units, batch_size)))
    with speed.math():
        maco(energy, maco_prior, batch_size, size, 1, seeds=list(range(batch_size)), device=device, disable=True)
        _cuda_sync(device)
        with CostMeter() as meter:
            maco(energy, maco_prior, batch_size, size, steps, seeds=list(range(batch_size)), device=device,
                 disable=True)
            _cuda_sync(device)
    per_step = meter.seconds / steps
    return {"batch_size": batch_size, "seconds_per_sample": per_step * total_steps / batch_size,
            "steps": total_steps, "peak_mib": meter.peak_bytes / 2**20}


def fast_cost(prior, units: Units, batch_size: int, speed: Speed, num_steps: int = 10) -> dict:
    """Seconds per sample of notebook 04's fast configuration (50 respaced steps through the
    denoiser; a step costs what a ``GuidanceConfig.paper()`` step costs) for one pass, and with its cap
    calibration (2 + ``calib_iters`` passes)."""
    fast = replace(GuidanceConfig.fast(), speed=speed)
    step = measure(prior, units, num_steps, batch_size, speed=speed)["seconds_per_step"]
    one_pass = step * fast.num_steps / batch_size
    return {"batch_size": batch_size, "num_steps": fast.num_steps, "seconds_per_sample_one_pass": one_pass,
            "seconds_per_sample_calibrated": one_pass * (2 + fast.calib_iters)}


def bench(folder: Path, prior, units: Units, fast: Speed, num_steps: int = 10, batches: tuple[int, ...] = (1, 4, 8, 16),
          maco_steps: int = 4) -> dict:
    """Every measurement above on ``prior`` and ``units``, ``fast`` against float32; writes
    ``folder/paper_scale.json`` after each group (a run cut short keeps what it measured)."""
    device = next(units.backbone.parameters()).device
    folder.mkdir(parents=True, exist_ok=True)
    res: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "num_steps": num_steps, "fast_path": asdict(fast)}

    def save() -> None:
        (folder / "paper_scale.json").write_text(json.dumps(to_jsonable(res), indent=2) + "\n")

    res["float32_b1"] = measure(prior, units, num_steps, 1)
    save()
    res["tf32_b1"] = measure(prior, units, num_steps, 1, speed=Speed(tf32=True))
    res["fast"] = {b: measure(prior, units, num_steps, b, speed=fast) for b in batches}
    save()
    res["fast_jacobian_free"] = measure(prior, units, num_steps, batches[-1], grad_through_denoiser=False, speed=fast)
    res["fidelity"] = fidelity(prior, units, fast.without_compile())
    save()
    res["breakdown_float32_b1"] = breakdown(prior, units, 1, Speed.off())
    res["breakdown_fast_b1"] = breakdown(prior, units, 1, fast.without_compile())
    res["profile_float32_b1"] = profile(prior, units, 1, Speed.off(), folder)
    res["profile_fast_b1"] = profile(prior, units, 1, fast.without_compile(), folder)
    save()
    best = min(res["fast"].values(), key=lambda r: r["seconds_per_sample_1000_steps"])
    res["fast_config"] = fast_cost(prior, units, best["batch_size"], fast, num_steps)
    res["maco"] = maco_cost(units, batches[-1], maco_steps, fast)
    res["maco_float32"] = maco_cost(units, batches[-1], maco_steps, Speed.off())
    save()
    return res


def _paper_bench(folder: Path, num_steps: int = 10, compile_: bool = False) -> dict:
    device = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        prior, units = random_paper_models(Path(tmp), device)
    return bench(folder, prior, units, Speed.fast(compile_), num_steps)


def summary(res: dict) -> dict:
    """The ratios to the paper's Table 11 as ``make bench`` prints them."""
    paper = TABLE11["EnergyDPS"]
    one, fast1 = res["float32_b1"], res["fast"][1]
    best = min(res["fast"].values(), key=lambda r: r["seconds_per_sample_1000_steps"])
    detail = (f"{res['device']}: float32 batch 1 {one['seconds_per_sample_1000_steps']:.0f} s, "
              f"{one['peak_mib']:.0f} MiB; fast path batch 1 {fast1['seconds_per_sample_1000_steps']:.1f} s, "
              f"{fast1['peak_mib']:.0f} MiB; best batch {best['batch_size']} "
              f"{best['seconds_per_sample_1000_steps']:.1f} s per sample (paper {paper['seconds_per_sample']:.0f} s, "
              f"{paper['gpu_mib']:.0f} MiB); fast config {res['fast_config']['seconds_per_sample_one_pass']:.2f} s "
              f"per sample, MACO {res['maco']['seconds_per_sample']:.2f} s")
    return {"name": NAME, "ratio": fast1["seconds_per_sample_1000_steps"] / paper["seconds_per_sample"],
            "detail": detail, "runs": res}


def run() -> dict:
    if not torch.cuda.is_available():
        return {"name": NAME, "ratio": float("nan"), "detail": "skipped: needs a CUDA GPU"}
    with tempfile.TemporaryDirectory() as tmp:
        return summary(_paper_bench(Path(tmp)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/paper_scale", help="folder for paper_scale.json and the profiles")
    parser.add_argument("--steps", type=int, default=10, help="timed sampler steps per measurement")
    parser.add_argument("--compile", action="store_true", help="add torch.compile to the fast path")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: needs a CUDA GPU")
        return
    result = summary(_paper_bench(Path(args.out), args.steps, args.compile))
    print(f"{result['name']}\n  ratio {result['ratio']:.3f}\n  {result['detail']}")


if __name__ == "__main__":
    main()
