"""Cost of explaining images (paper App L.4, Table 11), ratios measured in one process on
a tiny random-weight world (conv eps-model, two-conv backbone, random transcoder):

- EnergyDPS at batch 64 mixing 64 features vs a batch-1 loop of the same sampler;
- ``GuidanceConfig.fast()`` (50 respaced steps) vs ``GuidanceConfig.paper()``
  (every step, the gradient through the denoiser) per sample at matched activation
  (:func:`klsc_lib.explain.matched_cost`: the fast one calibrated, calibration included,
  to the mean psi the paper configuration reached with its cap at t);
- EnergyDPS (fast, one pass) vs MACO (128 steps) per sample, batched alike;
- peak memory per sample of each (growth of the peak RSS on CPU, CUDA peak on a GPU).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmarks.bench_energydps import _Net
from klsc_lib.baselines.maco import MacoPrior
from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies.units import Units
from klsc_lib.explain import MacoConfig, run_maco
from klsc_lib.interfaces import DDPMSchedule, HookedBackbone, Prior
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from klsc_lib.studies.nb04_energydps import matched_cost

BATCH = 64


def _world():
    torch.manual_seed(0)
    eps_net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))
    prior = Prior(lambda x, t_B: eps_net(x), DDPMSchedule(), (3, 16, 16), "tiny")
    backbone = HookedBackbone(_Net(), "block", preprocess=lambda x: x)
    tc = Transcoder(TranscoderConfig(d_in=16, d_out=16, d_sae=256, k=8, kernel_size=3))
    for m in (eps_net, backbone, tc):
        m.requires_grad_(False)
    return prior, Units("Feature", backbone, tc)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: one thread (and no oversubscription on a shared machine)
    try:
        return _run()
    finally:
        torch.set_num_threads(threads)


def _run() -> dict:
    prior, units = _world()
    units_B = (37 * torch.arange(BATCH)) % 256
    seeds = list(range(BATCH))
    fast = GuidanceConfig.fast()
    cap = torch.full((BATCH,), 0.5)

    def samples(part: slice) -> None:
        sample_units(prior, units.energy, units_B[part], fast, seeds[part], cap[part], batch_size=BATCH)

    samples(slice(0, 2))  # warm-up
    batched = _timed(lambda: samples(slice(None)))
    loop = _timed(lambda: [samples(slice(b, b + 1)) for b in range(BATCH)])
    few = 2  # units x 2 samples: paper_config is 20x the steps with a backward pass through the denoiser
    matched = matched_cost(prior, units, units_B[:few], cap[:few], 2, fast, GuidanceConfig.paper())
    paper, fast_few, calib = (matched[k].seconds_per_sample for k in ("paper_config", "fast", "fast_calibration"))
    psi_gap = float((matched["fast"].psi_UN.mean(1) / matched["paper_config"].psi_UN.mean(1) - 1).abs().max())
    images = torch.rand(64, 3, 16, 16) * 2 - 1
    maco = run_maco(MacoPrior.from_images(images), units, units_B, cap, 1, 16, MacoConfig(max_steps=128), disable=True)
    per_batched, per_loop = batched / BATCH, loop / BATCH
    return {"name": f"EnergyDPS images: batch {BATCH} mixed features vs batch-1 loop (samples/s)",
            "ratio": per_loop / per_batched,
            "detail": (f"{per_batched * 1e3:.1f} vs {per_loop * 1e3:.1f} ms/sample; fast vs paper_config "
                       f"{paper / fast_few:.1f}x cheaper per sample at matched psi (largest gap {psi_gap:.1%}; "
                       f"{paper / calib:.1f}x with the calibration passes counted); EnergyDPS/MACO cost "
                       f"{per_batched / maco.seconds_per_sample:.2f}"
                       f"; MACO peak {maco.peak_bytes / BATCH / 2**20:.2f} MiB/sample"),
            "fast_vs_paper": paper / fast_few, "fast_vs_paper_with_calibration": paper / calib, "energydps_over_maco": per_batched / maco.seconds_per_sample}
