"""The fast paths of guided sampling (klsc_lib.diffusion.speed and the sync-free checks of
klsc_lib.diffusion.energy_dps): what must not change anything changes nothing, bit for
bit; bf16 autocast stays within the tolerance we accept; compilation falls back to eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import klsc_lib.diffusion.energy_dps as energy_dps
from klsc_lib.diffusion.energy_dps import NonFiniteGuidance, guidance_step, sample_energy_dps
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.speed import Speed, to_channels_last
from klsc_lib.energies import Energy
from klsc_lib.interfaces import DDPMSchedule, Prior
from klsc_lib.worlds.zoo.guided_diffusion import learned_range_log_variance

pytestmark = pytest.mark.usefixtures("one_thread")


class _Eps(nn.Module):
    """A small conv eps-model with a learned-variance head, like the paper's UNet."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 32, 3, padding=1),
                                 nn.SiLU(), nn.Conv2d(32, 6, 3, padding=1))

    def forward(self, x, t_B):
        return self.net(x)[:, :3] * (1 + t_B[:, None, None, None] / 1000)

    def eps_and_log_variance(self, x, t_B):
        out = self.net(x)
        return out[:, :3], learned_range_log_variance(torch.tanh(out[:, 3:]), t_B, DDPMSchedule())


def _world():
    eps = _Eps().requires_grad_(False)
    prior = Prior(eps, DDPMSchedule(), (3, 16, 16), "tiny")
    torch.manual_seed(1)
    score = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 1, 3, padding=1)).requires_grad_(False)
    energy = Energy(lambda x: score(x).mean(dim=(1, 2, 3)), "tiny_psi")
    return prior, energy, score


def _sample(prior, energy, speed: Speed, steps: int = 20):
    guidance = GuidanceConfig(num_steps=steps, strength=steps / 1000, cap_rule="none", speed=speed)
    return sample_energy_dps(prior, energy, guidance, generators=[0, 1, 2, 3], disable=True)


def test_speed_off_and_tf32_on_cpu_change_nothing_bit_for_bit():
    prior, energy, _ = _world()
    ref = _sample(prior, energy, Speed.off())
    assert Speed() == Speed.off() and Speed.fast().autocast == "bfloat16"
    assert torch.equal(_sample(prior, energy, Speed(tf32=True)), ref)  # TF32 acts on CUDA matmuls only


def test_deferred_checks_give_the_same_samples_bit_for_bit(monkeypatch):
    prior, energy, _ = _world()
    ref = _sample(prior, energy, Speed.off())
    monkeypatch.setattr(energy_dps, "defer_checks", lambda device: True)
    assert torch.equal(_sample(prior, energy, Speed.off()), ref)


def test_deferred_checks_name_the_first_bad_step(monkeypatch):
    prior, energy, _ = _world()
    calls = {"n": 0}

    def psi(x):
        calls["n"] += 1
        return energy(x) / (0.0 if calls["n"] in (4, 6) else 1.0)  # inf from the 4th guidance step on

    for defer in (False, True):
        calls["n"] = 0
        monkeypatch.setattr(energy_dps, "defer_checks", lambda device, d=defer: d)
        with pytest.raises(NonFiniteGuidance, match=r"returned NaN/inf for 4 of 4 samples at reverse step 3 "):
            _sample(prior, Energy(psi, "bad"), Speed.off(), steps=8)
        assert calls["n"] == (4 if not defer else 8)  # deferred: the chain ran to its end first


def test_autocast_bf16_stays_within_tolerance_and_returns_float32():
    prior, energy, _ = _world()
    fast = Speed(autocast="bfloat16")
    x_BCHW, t_B = torch.randn(4, 3, 16, 16), torch.full((4,), 500)
    eps_ref, logvar_ref = prior.eps.eps_and_log_variance(x_BCHW, t_B)
    eps, logvar = fast.prior(prior).eps.eps_and_log_variance(x_BCHW, t_B)
    assert eps.dtype == logvar.dtype == torch.float32 and fast.energy(energy)(x_BCHW).dtype == torch.float32
    # bf16 keeps 8 mantissa bits: relative error ~ 2^-8 per rounding, a few roundings deep
    assert (eps - eps_ref).norm() / eps_ref.norm() < 2e-2
    # one guidance step, the unit a chain repeats: x0-hat and the guidance gradient within 3 %
    # (a whole ancestral chain of a random denoiser amplifies any rounding, so chains are
    # compared by their statistics, as notebook 04 and the paper-scale benchmark do)
    ref = guidance_step(prior, energy, x_BCHW, 500, cap_B=None)
    out = guidance_step(fast.prior(prior), fast.energy(energy), x_BCHW, 500, cap_B=None)
    for a, b in ((out.denoised, ref.denoised), (out.grad, ref.grad)):
        assert 0 < (a - b).norm() / b.norm() < 3e-2


def test_channels_last_keeps_values_within_float32_rounding():
    prior, energy, score = _world()
    x_BCHW = torch.randn(4, 3, 16, 16)
    ref = guidance_step(prior, energy, x_BCHW, 500)
    to_channels_last(prior.eps, score)
    assert prior.eps.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    fast = Speed(channels_last=True)
    out = guidance_step(fast.prior(prior), fast.energy(energy), x_BCHW, 500)
    for a, b in ((out.denoised, ref.denoised), (out.grad, ref.grad), (out.psi, ref.psi)):
        assert (a - b).norm() / b.norm() < 1e-5  # other summation orders, float32 rounding only


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    prior, energy, _ = _world()
    ref = _sample(prior, energy, Speed.off(), steps=4)

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        x = _sample(prior, energy, Speed(compile=True), steps=4)
    assert torch.equal(x, ref)


def test_unknown_autocast_dtype_is_refused():
    with pytest.raises(ValueError, match="autocast must be"):
        Speed(autocast="float64")
