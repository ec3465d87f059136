"""Twisted SMC towards the KLSC tilt (klsc_lib.diffusion.twisted_smc) on the four-mode
GMM with its exact (oracle) score, where the tilt of every Gaussian component by
e^{lambda psi} is known in closed form for psi(x) = x_0 + c x_1^2."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from klsc_lib.diffusion.energy_dps import sample_energy_dps
from klsc_lib.diffusion.gmm_oracle import gmm_oracle_prior
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.samplers import initial_noise, resolve_generators, sample_ddpm
from klsc_lib.diffusion.twisted_smc import effective_sample_size, sample_twisted_smc, systematic_resample
from klsc_lib.energies.base import Energy
from klsc_lib.worlds.gmm import four_mode_gmm

C = 0.125  # psi(x) = x_0 + C x_1^2
STD = 0.6
SMC = GuidanceConfig(num_steps=100, step_size="tilted_score", cap_rule="none")


def _psi() -> Energy:
    return Energy(lambda x: x[:, 0] + C * x[:, 1] ** 2, "x0+c*x1^2")


def tilted_moments(lam: float) -> tuple[float, float]:
    """(E x_0, P(x_0 > 0)) under p e^{lambda psi}, p the four-mode mixture: each isotropic
    component N(mu, s^2) tilts to N(mu_0 + lambda s^2, s^2) in x_0 and to a Gaussian of
    precision 1/s^2 - 2 lambda C in x_1, its weight times the two normalisers."""
    gmm = four_mode_gmm(std=STD)
    s2, logz, mean0, right = STD ** 2, [], [], []
    for mu0, mu1 in gmm.means_KD.tolist():
        prec = 1 / s2 - 2 * lam * C
        m1 = mu1 / (s2 * prec)
        logz.append(lam * mu0 + lam ** 2 * s2 / 2  # x_0: E e^{lambda x_0}
                    + 0.5 * math.log(1 / (s2 * prec)) + 0.5 * prec * m1 ** 2 - mu1 ** 2 / (2 * s2))  # x_1
        mean0.append(mu0 + lam * s2)
        right.append(0.5 * math.erfc(-(mu0 + lam * s2) / (STD * math.sqrt(2))))
    w = torch.softmax(torch.tensor(logz) + gmm.weights_K.log(), 0).tolist()
    return sum(a * b for a, b in zip(w, mean0)), sum(a * b for a, b in zip(w, right))


def test_resampling_keeps_weights_in_expectation_and_ess_counts_particles():
    log_w = torch.tensor([0.0, math.log(3.0), -math.inf, math.log(4.0)])
    counts = torch.zeros(4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4000):
        counts += torch.bincount(systematic_resample(log_w, gen), minlength=4)
    assert (counts / counts.sum()).tolist() == pytest.approx([1 / 8, 3 / 8, 0.0, 4 / 8], abs=0.01)
    assert effective_sample_size(torch.zeros(2, 5)).tolist() == pytest.approx([5.0, 5.0])
    assert float(effective_sample_size(log_w[None])) == pytest.approx(64 / 26)  # (1+3+4)^2 / (1+9+16)


def test_lambda_zero_is_the_unguided_sampler_bit_for_bit():
    prior = gmm_oracle_prior(four_mode_gmm(std=STD, dtype=torch.float32))
    out = sample_twisted_smc(prior, _psi(), SMC, torch.zeros(2), 8, generators=list(range(16)),
                             resample_generators=[torch.Generator().manual_seed(u) for u in range(2)], disable=True)
    gens = resolve_generators(list(range(16)))
    plain = sample_ddpm(prior.eps, initial_noise(prior.sample_shape, gens), prior.schedule, generator=gens,
                        timesteps=SMC.timesteps(prior.schedule), disable=True)
    assert out.resamples_U.tolist() == [0, 0] and out.ess_U.tolist() == pytest.approx([8.0, 8.0])
    assert torch.equal(out.x_B, plain)


def test_particles_reach_the_closed_form_tilt_where_the_plug_in_is_biased():
    """Two units (lambda 0.5 and 1) of 1024 particles each: the SMC mean of x_0 lies within
    4 standard errors (counted on distinct ancestors) of the closed form; EnergyDPS with the
    same proposal and seeds but no weights misses it by more."""
    prior = gmm_oracle_prior(four_mode_gmm(std=STD, dtype=torch.float32))
    lams, k = (0.5, 1.0), 1024
    out = sample_twisted_smc(prior, _psi(), SMC, torch.tensor(lams), k, generators=list(range(2 * k)),
                             resample_generators=[torch.Generator().manual_seed(u) for u in range(2)], disable=True)
    for u, lam in enumerate(lams):
        x = out.x_B[u * k:(u + 1) * k].double()
        mean0, right = tilted_moments(lam)
        se = float(x[:, 0].std()) / math.sqrt(int(out.ancestors_U[u]))
        assert abs(float(x[:, 0].mean()) - mean0) < 4 * se, (lam, float(x[:, 0].mean()), mean0, se)
        assert abs(float((x[:, 0] > 0).double().mean()) - right) < 0.03
        plug_in = sample_energy_dps(prior, _psi(), SMC, lam_B=lam, generators=list(range(u * k, (u + 1) * k)),
                                    disable=True).double()
        assert abs(float(plug_in[:, 0].mean()) - mean0) > abs(float(x[:, 0].mean()) - mean0)


def test_configurations_that_do_not_target_the_tilt_are_refused():
    prior = gmm_oracle_prior(four_mode_gmm(std=STD, dtype=torch.float32))
    for bad in (GuidanceConfig(num_steps=10), GuidanceConfig(num_steps=10, cap_rule="none"),
                GuidanceConfig(num_steps=10, step_size="tilted_score", cap_rule="none", sampler="ddim")):
        with pytest.raises(ValueError, match="twisted SMC targets"):
            sample_twisted_smc(prior, _psi(), bad, torch.ones(1), 4, generators=list(range(4)),
                               resample_generators=[torch.Generator()])
    for extra in (dict(psi_views=2), dict(recurrence=2), dict(shift_clip=1.0)):
        with pytest.raises(ValueError, match="one plain guided step"):
            sample_twisted_smc(prior, _psi(), replace(SMC, **extra), torch.ones(1), 4, generators=list(range(4)),
                               resample_generators=[torch.Generator()])
    with pytest.raises(ValueError, match="one resampling generator per unit"):
        sample_twisted_smc(prior, _psi(), SMC, torch.ones(2), 4, generators=list(range(8)),
                           resample_generators=[torch.Generator()])


def test_an_annealed_twist_targets_the_same_tilt():
    """The twist lambda_i = abar_i lambda changes the proposal and the intermediate targets but
    not the final one (the last twist is the exact e^{lambda psi}): the mean of x_0 still
    meets the closed form, with fewer resampling events than the constant twist."""
    prior = gmm_oracle_prior(four_mode_gmm(std=STD, dtype=torch.float32))
    lam, k = 1.0, 1024
    kwargs = dict(generators=list(range(k)), disable=True)
    annealed = sample_twisted_smc(prior, _psi(), SMC, torch.tensor([lam]), k, anneal=True,
                                  resample_generators=[torch.Generator().manual_seed(0)], **kwargs)
    constant = sample_twisted_smc(prior, _psi(), SMC, torch.tensor([lam]), k,
                                  resample_generators=[torch.Generator().manual_seed(0)], **kwargs)
    x = annealed.x_B.double()
    mean0, _ = tilted_moments(lam)
    se = float(x[:, 0].std()) / math.sqrt(int(annealed.ancestors_U[0]))
    assert abs(float(x[:, 0].mean()) - mean0) < 4 * se, (float(x[:, 0].mean()), mean0, se)
    assert int(annealed.resamples_U[0]) <= int(constant.resamples_U[0])
