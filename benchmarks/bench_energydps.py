"""Samples/s of EnergyDPS (Algorithm 1, RM §10) with the oracle GMM score (App I.3):
batch 1024 vs batch 1, measured in one process on the same 100-step schedule. The
ratio shows what batching the per-sample guidance gradient buys."""

from __future__ import annotations

import time

import torch

from klsc_lib.diffusion.energy_dps import sample_energy_dps
from klsc_lib.diffusion.gmm_oracle import GMMOracle
from klsc_lib.diffusion.samplers import spaced_timesteps
from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.worlds.gmm import AngularScore, four_mode_gmm

NUM_STEPS = 100
LAM = 0.1


def samples_per_second(batch: int, repeats: int) -> float:
    schedule = DDPMSchedule()
    oracle, psi = GMMOracle(four_mode_gmm(), schedule), AngularScore()
    timesteps = spaced_timesteps(schedule, NUM_STEPS)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    sample_energy_dps(oracle, x_T, schedule, psi, LAM, generator=gen, timesteps=timesteps, disable=True)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        sample_energy_dps(oracle, x_T, schedule, psi, LAM, generator=gen, timesteps=timesteps, disable=True)
    return batch * repeats / (time.perf_counter() - start)


def run() -> dict:
    single = samples_per_second(1, repeats=5)
    batched = samples_per_second(1024, repeats=3)
    return {"name": "EnergyDPS on the GMM: samples/s, batch 1024 vs batch 1", "ratio": batched / single,
            "detail": f"{batched:.0f} vs {single:.1f} samples/s ({NUM_STEPS} steps, float64, "
                      f"{torch.get_num_threads()} torch threads)"}


if __name__ == "__main__":
    print(run())
