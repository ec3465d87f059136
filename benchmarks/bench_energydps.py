"""Samples/s of batched EnergyDPS (Algorithm 1) vs a batch-1 loop of the same sampler,
measured in one process: a batch of 64 with per-sample seeds and mixed lambdas (the
GMM oracle, App I.3) or mixed transcoder features (a tiny random conv prior and
backbone), against 64 single runs with the same seeds. The outputs agree to float
tolerance (tests/test_energy_dps.py); the ratio is what batching buys."""

from __future__ import annotations

import time

import torch
from torch import nn

from klsc_lib.diffusion.energy_dps import sample_energy_dps
from klsc_lib.diffusion.gmm_oracle import gmm_oracle_prior
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies import angular_energy, feature_score
from klsc_lib.interfaces import DDPMSchedule, HookedBackbone, Prior
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from klsc_lib.worlds.gmm import four_mode_gmm

BATCH = 64


def _rate(run, per_sample: list[dict]) -> tuple[float, float]:
    """(batched, batch-1 loop) samples/s of ``run(**kwargs_of_a_batch)``, after a warm-up call."""
    run(**{k: [v] for k, v in per_sample[0].items()})
    start = time.perf_counter()
    run(**{k: [d[k] for d in per_sample] for k in per_sample[0]})
    batched = len(per_sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    for d in per_sample:
        run(**{k: [v] for k, v in d.items()})
    return batched, len(per_sample) / (time.perf_counter() - start)


def gmm_case() -> tuple[float, float]:
    schedule = DDPMSchedule()
    prior, psi, guidance = gmm_oracle_prior(four_mode_gmm(), schedule), angular_energy(), GuidanceConfig(
        num_steps=100, cap_rule="none")

    def run(seed, lam):
        return sample_energy_dps(prior, psi, guidance, lam_B=torch.tensor(lam, dtype=torch.float64), generators=seed,
                                 dtype=torch.float64, disable=True)

    return _rate(run, [{"seed": b, "lam": 0.05 * (b % 5)} for b in range(BATCH)])


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.block(torch.relu(self.stem(x)))


def image_case() -> tuple[float, float]:
    torch.manual_seed(0)
    schedule = DDPMSchedule()
    eps_net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 3, 3, padding=1))
    prior = Prior(lambda x, t_B: eps_net(x), schedule, (3, 16, 16), "tiny")
    backbone = HookedBackbone(_Net(), "block", preprocess=lambda x: x)
    tc = Transcoder(TranscoderConfig(d_in=16, d_out=16, d_sae=256, k=8, kernel_size=3))
    for p in (*eps_net.parameters(), *backbone.parameters(), *tc.parameters()):
        p.requires_grad_(False)
    guidance = GuidanceConfig(num_steps=20, cap_rule="none")

    def run(seed, unit):
        return sample_energy_dps(prior, feature_score(backbone, tc, torch.tensor(unit)), guidance, lam_B=1.0,
                                 generators=seed, disable=True)

    return _rate(run, [{"seed": b, "unit": (37 * b) % 256} for b in range(BATCH)])


def run() -> dict:
    gmm_b, gmm_1 = gmm_case()
    img_b, img_1 = image_case()
    return {"name": f"EnergyDPS samples/s, batch {BATCH} (per-sample seeds, mixed lambda / features) vs batch-1 loop",
            "ratio": gmm_b / gmm_1,
            "detail": f"GMM oracle 100 steps: {gmm_b:.1f} vs {gmm_1:.1f} samples/s (x{gmm_b / gmm_1:.1f}); "
                      f"tiny conv prior + transcoder features 16x16, 20 steps: {img_b:.1f} vs {img_1:.1f} samples/s "
                      f"(x{img_b / img_1:.1f}); {torch.get_num_threads()} torch threads"}


if __name__ == "__main__":
    print(run())
