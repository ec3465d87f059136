"""EnergyDPS on any schedule, batched (paper Sec 2.3, Algorithm 1, App G, J.2, J.4)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from klsc_lib.diffusion.energy_dps import NonFiniteGuidance, sample_energy_dps
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.gmm_oracle import GaussianMixture, gmm_oracle_prior
from klsc_lib.diffusion.samplers import (ancestral_step, initial_noise, resolve_generators, sample_ddim, sample_ddpm,
                                         spaced_timesteps, step_alphas)
from klsc_lib.energies import Energy, angular_energy, feature_score
from klsc_lib.interfaces import DDPMSchedule, Prior
from klsc_lib.worlds.gmm import four_mode_gmm
from tests.test_energies import channel_reader, identity_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = DDPMSchedule()
STEPS = spaced_timesteps(SCHEDULE, 40)
F64 = torch.float64
UNCAPPED = GuidanceConfig(num_steps=40, cap_rule="none")  # lambda given per call (lam_B)


def gaussian_prior(mean=(0.5, -1.0), std=0.7) -> Prior:
    g = GaussianMixture(torch.tensor([mean], dtype=F64), (std**2 * torch.eye(2, dtype=F64)).unsqueeze(0),
                        torch.ones(1, dtype=F64))
    return gmm_oracle_prior(g, SCHEDULE)


class TinyEps(nn.Module):
    """A small random conv eps-model (time enters as a per-step scale)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x, t_B):
        return self.net(x) * (1 + t_B.float().reshape(-1, 1, 1, 1) / 1000)


def image_prior() -> Prior:
    return Prior(TinyEps().requires_grad_(False), SCHEDULE, (3, 16, 16), "tiny", clip_x0=(-1.0, 1.0))


SAMPLERS = {"ddpm": UNCAPPED, "ddim": replace(UNCAPPED, sampler="ddim", eta=0.5)}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("jacobian", [True, False])
def test_batch_equals_single_runs_on_the_gmm(sampler, jacobian):
    prior, energy = gmm_oracle_prior(four_mode_gmm(), SCHEDULE), angular_energy()
    seeds, lam = [3, 1, 4, 1], torch.tensor([0.0, 0.1, 0.3, 0.2], dtype=F64)
    cfg = replace(SAMPLERS[sampler], grad_through_denoiser=jacobian, cap_rule="target")
    kw = dict(dtype=F64, disable=True)
    batch = sample_energy_dps(prior, energy, cfg, lam_B=lam, cap_B=torch.tensor([9.0, 9.0, 5.0, 9.0]),
                              generators=seeds, **kw)
    single = torch.cat([sample_energy_dps(prior, energy, cfg, lam_B=float(lam[b]), cap_B=[9.0, 9.0, 5.0, 9.0][b],
                                          generators=[s], **kw) for b, s in enumerate(seeds)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("jacobian", [True, False])
def test_batch_of_mixed_features_equals_single_runs_on_an_image_prior(sampler, jacobian):
    prior = image_prior()
    backbone, tc = identity_backbone(), channel_reader()
    units = torch.tensor([0, 4, 2])
    cfg = replace(SAMPLERS[sampler], num_steps=8, grad_through_denoiser=jacobian)
    kw = dict(lam_B=2.0, disable=True)
    batch = sample_energy_dps(prior, feature_score(backbone, tc, units), cfg, generators=[7, 8, 9], **kw)
    single = torch.cat([sample_energy_dps(prior, feature_score(backbone, tc, int(u)), cfg, generators=[s], **kw)
                        for u, s in zip(units, [7, 8, 9])])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)
    gens = resolve_generators([7, 8, 9])
    unguided = sample_ddpm(prior.eps, initial_noise((3, 16, 16), gens), SCHEDULE, generator=gens,
                           timesteps=spaced_timesteps(SCHEDULE, 8), clip_x0=(-1.0, 1.0), disable=True)
    assert not torch.allclose(batch, unguided, atol=1e-3)


def test_lambda_zero_is_the_unguided_sampler_bit_for_bit():
    prior, energy = gmm_oracle_prior(four_mode_gmm(), SCHEDULE), angular_energy()
    seeds = list(range(6))
    gens = resolve_generators(seeds)  # one stream per sample: x_T, then every step's noise
    x_T = initial_noise((2,), gens, dtype=F64)
    ddim = sample_energy_dps(prior, energy, replace(UNCAPPED, sampler="ddim", eta=0.3), lam_B=0.0, generators=seeds,
                             dtype=F64, disable=True)
    assert torch.equal(ddim, sample_ddim(prior.eps, x_T, SCHEDULE, generator=gens, timesteps=STEPS, eta=0.3,
                                         disable=True))
    gens = resolve_generators(seeds)
    x_T = initial_noise((2,), gens, dtype=F64)
    ddpm = sample_energy_dps(prior, energy, UNCAPPED, lam_B=0.0, generators=seeds, dtype=F64, disable=True)
    assert torch.equal(ddpm, sample_ddpm(prior.eps, x_T, SCHEDULE, generator=gens, timesteps=STEPS, disable=True))


def test_seeded_noise_of_the_first_step_is_a_fresh_draw_not_x_T():
    """A regression: integer seeds were turned into generators twice, so the first reverse
    step's noise repeated x_T (correlation 1). Recovered from the chain, it is independent."""
    prior, seen = gmm_oracle_prior(four_mode_gmm(), SCHEDULE), []
    sample_energy_dps(prior, angular_energy(), replace(UNCAPPED, num_steps=3), lam_B=0.0,
                      generators=list(range(300)), dtype=F64, disable=True, callback=seen.append)
    (t, t_prev), = [(seen[0]["t"], seen[1]["t"])]
    abar, abar_prev, beta = step_alphas(SCHEDULE, t, t_prev)
    mean = ancestral_step(SCHEDULE, seen[0]["x"], seen[0]["denoised"], t, t_prev, None)
    z = (seen[1]["x"] - mean) / (beta * (1 - abar_prev) / (1 - abar)) ** 0.5
    corr = float(torch.corrcoef(torch.stack([z.flatten(), seen[0]["x"].flatten()]))[0, 1])
    assert abs(corr) < 0.2 and float(z.std()) == pytest.approx(1.0, abs=0.1)


def test_cap_below_every_psi_is_unguided_and_above_is_uncapped():
    prior = gaussian_prior()
    psi = Energy(lambda x: x[:, 0], "x1")
    run = lambda lam, cap: sample_energy_dps(  # noqa: E731
        prior, psi, UNCAPPED if cap is None else replace(UNCAPPED, cap_rule="fixed", cap=cap), lam_B=lam,
        generators=list(range(50)), dtype=F64, disable=True)
    assert torch.equal(run(1.0, -1e9), run(0.0, None))
    torch.testing.assert_close(run(1.0, 1e9), run(1.0, None))
    assert not torch.allclose(run(1.0, 0.5), run(1.0, None))


@pytest.mark.parametrize("which", ["ddpm", "ddim0", "ddpm, recurrence 2"])
def test_linear_psi_on_a_gaussian_gives_the_shifted_gaussian_tilt(which):
    """p = N(mu, s^2 I), psi = a.x: q_lambda = N(mu + lambda s^2 a, s^2 I) (Def 2.2). For a linear psi
    on a Gaussian the plug-in guidance through the denoiser is the exact grad log h_t, so the
    tilted-score step samples the tilt: DDPM (all 1000 steps) and DDIM eta = 0 (the tilted flow).
    Self-recurrence re-noises with the forward kernel, which maps the tilt's marginal at t-1 to
    its marginal at t, so repeating every exact step leaves the law unchanged."""
    mu, s, lam = torch.tensor([0.5, -1.0], dtype=F64), 0.7, 1.5
    a = torch.tensor([1.0, 2.0], dtype=F64)
    n = 3000
    prior, psi = gaussian_prior(), Energy(lambda x: x @ a, "linear")
    gen = torch.Generator().manual_seed(1)
    x_T = torch.randn(n, 2, generator=gen, dtype=F64)
    if which.startswith("ddpm"):
        cfg = GuidanceConfig(num_steps=None, step_size="tilted_score", cap_rule="none",
                             recurrence=2 if "recurrence" in which else 1)
        x0 = sample_energy_dps(prior, psi, cfg, x_T=x_T, lam_B=lam, generators=gen, disable=True)
    else:
        cfg = GuidanceConfig(num_steps=200, sampler="ddim", eta=0.0, step_size="tilted_score", cap_rule="none")
        x0 = sample_energy_dps(prior, psi, cfg, x_T=x_T, lam_B=lam, disable=True)
    se = s / math.sqrt(n)
    assert (x0.mean(0) - (mu + lam * s**2 * a)).abs().max() < 4 * se + 0.01, x0.mean(0)
    torch.testing.assert_close(x0.var(0), torch.full((2,), s**2, dtype=F64), rtol=0.07, atol=0)


def test_guidance_raises_the_mean_score_monotonically():
    prior, psi = gmm_oracle_prior(four_mode_gmm(), SCHEDULE), angular_energy()
    cfg = replace(UNCAPPED, step_size="tilted_score")
    means = [float(psi(sample_energy_dps(prior, psi, cfg, lam_B=lam, generators=torch.Generator().manual_seed(3),
                                         batch_size=400, dtype=F64, disable=True)).mean()) for lam in (0.0, 0.05, 0.2)]
    assert means[0] < means[1] < means[2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_psi_raises_naming_the_step(bad):
    calls = {"n": 0}

    def psi(x):
        calls["n"] += 1
        return x.sum(-1) * (bad if calls["n"] == 4 else 1.0)

    with pytest.raises(NonFiniteGuidance, match=r"reverse step 3 \(diffusion timestep t=\d+\)"):
        sample_energy_dps(gaussian_prior(), psi, UNCAPPED, generators=[0, 1], dtype=F64, disable=True)


def test_bad_arguments_are_rejected():
    prior = gaussian_prior()
    kw = dict(generators=[0, 1], dtype=F64, disable=True)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(2,\)"):
        sample_energy_dps(prior, lambda x: x, UNCAPPED, **kw)
    with pytest.raises(ValueError, match="step_size"):
        replace(UNCAPPED, step_size="dps")
    with pytest.raises(ValueError, match="lam_B"):
        sample_energy_dps(prior, lambda x: x.sum(-1), UNCAPPED, lam_B=torch.ones(3), **kw)
    with pytest.raises(ValueError, match="eta"):
        replace(UNCAPPED, sampler="ddim", eta=1.5)
    with pytest.raises(ValueError, match="cap_rule='fixed'"):
        GuidanceConfig(cap=15.0)
    with pytest.raises(ValueError, match="needs the per-sample cap_B"):
        sample_energy_dps(prior, lambda x: x.sum(-1), GuidanceConfig(num_steps=40), **kw)
    with pytest.raises(ValueError, match="sets the cap itself"):
        sample_energy_dps(prior, lambda x: x.sum(-1), GuidanceConfig.paper(), cap_B=1.0, **kw)
    for bad in (dict(psi_views=0), dict(recurrence=0), dict(view_shift=-1), dict(shift_clip=0.0)):
        with pytest.raises(ValueError, match="psi_views|shift_clip"):
            replace(UNCAPPED, **bad)


class LearnedSigma(nn.Module):
    """eps from the Gaussian oracle plus a 'learned' log variance equal to log beta-tilde_t
    (the v = -1 end of the learned range)."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, x, t_B):
        return self.oracle(x, t_B)

    def eps_and_log_variance(self, x, t_B):
        abar_T, beta_T = SCHEDULE.alphas_cumprod_T, SCHEDULE.betas_T
        t = int(t_B[0])
        var = beta_T[t] * (1 - abar_T[t - 1]) / (1 - abar_T[t]) if t > 0 else beta_T[1] * (1 - abar_T[0]) / (1 - abar_T[1])
        return self.oracle(x, t_B), torch.full_like(x, float(torch.log(var)))


def test_learned_variance_at_the_posterior_end_equals_the_posterior_variance_respaced():
    """With v = -1 the learned range is beta-tilde on the training schedule; respacing must turn it
    into the respaced step's beta-tilde, i.e. the plain posterior variance of that step."""
    base = gaussian_prior()
    learned = Prior(LearnedSigma(base.eps), SCHEDULE, (2,), clip_x0=None)
    psi = Energy(lambda x: x[:, 1], "x2")
    kw = dict(lam_B=0.3, generators=list(range(20)), dtype=F64, disable=True)
    torch.testing.assert_close(sample_energy_dps(learned, psi, UNCAPPED, **kw), sample_energy_dps(base, psi, UNCAPPED,
                                                                                                  **kw))
    with pytest.raises(ValueError, match="eps_and_log_variance"):
        sample_energy_dps(base, psi, replace(UNCAPPED, variance="learned"), **kw)


@pytest.mark.parametrize("jacobian", [True, False])
@pytest.mark.parametrize("cap_mode", ["clip", "hinge"])
def test_guidance_gradient_equals_finite_differences(jacobian, cap_mode):
    """The guidance of one step against central differences of the objective it ascends:
    obj(psi(x0-hat(x))) through the oracle denoiser, or (Jacobian-free) with eps held at its
    value at x, so that d x0-hat / d x = 1 / sqrt(abar_t). float64 on the GMM oracle."""
    from klsc_lib.diffusion.energy_dps import guidance_step
    from klsc_lib.energies import capped_objective

    prior, psi = gmm_oracle_prior(four_mode_gmm(), SCHEDULE), angular_energy()
    x = torch.tensor([[1.3, -0.4], [-0.8, 2.1], [0.2, 0.9]], dtype=F64)
    t, cap = 300, torch.tensor([5.0, 1.0, 2.0], dtype=F64)  # the caps bind for some samples, not others
    out = guidance_step(prior, psi, x, t, cap_B=cap, cap_mode=cap_mode, grad_through_denoiser=jacobian)
    abar = float(SCHEDULE.alphas_cumprod_T[t])
    eps_fixed = prior.eps(x, torch.full((3,), t))

    def objective_B(x_BD: torch.Tensor) -> torch.Tensor:
        eps = prior.eps(x_BD, torch.full((3,), t)) if jacobian else eps_fixed
        return capped_objective(psi((x_BD - (1 - abar) ** 0.5 * eps) / abar**0.5), cap, cap_mode)

    h, fd = 1e-6, torch.zeros_like(x)
    for d in range(2):
        step = torch.zeros_like(x)
        step[:, d] = h
        fd[:, d] = (objective_B(x + step) - objective_B(x - step)) / (2 * h)
    torch.testing.assert_close(out.grad, fd, rtol=1e-5, atol=1e-7)
    assert (out.grad.abs().sum(1) > 0).any() and (cap_mode != "clip" or (out.grad[1] == 0).all())


def test_without_the_final_shift_the_last_step_is_the_unguided_posterior_mean():
    """``final_shift=False``: a one-step chain (x_T straight to x_0) has no guided step left,
    so it equals the unguided sampler for any lambda; with the shift it moves by lambda grad psi."""
    prior, psi = gaussian_prior(), Energy(lambda x: x[:, 0], "x1")
    one = replace(UNCAPPED, num_steps=1)
    run = lambda cfg, lam: sample_energy_dps(prior, psi, cfg, lam_B=lam, generators=list(range(20)),  # noqa: E731
                                             dtype=F64, disable=True)
    plain = run(one, 0.0)
    assert torch.equal(run(replace(one, final_shift=False), 3.0), plain)
    shifted = run(one, 3.0)
    assert float((shifted - plain)[:, 0].min()) > 0 and torch.equal(shifted[:, 1], plain[:, 1])
    many = replace(UNCAPPED, final_shift=False)  # earlier steps are still guided
    assert float(run(many, 3.0)[:, 0].mean()) > float(run(many, 0.0)[:, 0].mean()) + 0.5


def test_recurrence_repeats_every_step_and_changes_the_draw():
    """recurrence r: r denoiser reads per step (the callback sees each), and the re-noised
    passes give other samples than r = 1 from the same seeds."""
    prior, psi = gaussian_prior(), Energy(lambda x: x[:, 0], "x1")
    seen = []
    cfg = replace(UNCAPPED, num_steps=7, recurrence=3)
    x3 = sample_energy_dps(prior, psi, cfg, lam_B=0.5, generators=list(range(6)), dtype=F64, disable=True,
                           callback=lambda d: seen.append(d["i"]))
    assert seen == [i for i in range(7) for _ in range(3)]
    x1 = sample_energy_dps(prior, psi, replace(cfg, recurrence=1), lam_B=0.5, generators=list(range(6)), dtype=F64,
                           disable=True)
    assert not torch.allclose(x1, x3)


def test_clipped_shift_never_exceeds_the_steps_noise_norm():
    """shift_clip c: every guidance shift has norm <= c sigma_i sqrt(D) (sigma_i^2 = beta-tilde of the
    step, computed here from the alpha bars) and points where the unclipped one does; a huge
    c changes nothing."""
    prior = image_prior()
    psi = Energy(lambda x: 50 * x.mean(dim=(1, 2, 3)), "bright")
    cfg = replace(UNCAPPED, num_steps=8, final_shift=False)
    seen, raw = [], []
    run = lambda c, log: sample_energy_dps(prior, psi, replace(cfg, shift_clip=c), lam_B=200.0,  # noqa: E731
                                           generators=list(range(4)), disable=True, callback=log.append)
    x_clip = run(0.3, seen)
    assert torch.equal(run(1e9, raw)[0], sample_energy_dps(prior, psi, cfg, lam_B=200.0, generators=list(range(4)),
                                                           disable=True)[0])
    steps = spaced_timesteps(SCHEDULE, cfg.num_steps).tolist()
    pairs = list(zip(steps, steps[1:] + [-1]))
    first = seen[0]["shift"].flatten(1)
    assert torch.allclose(torch.nn.functional.cosine_similarity(first, raw[0]["shift"].flatten(1)), torch.ones(4))
    for d, (t, t_prev) in zip(seen, pairs):
        if d["shift"] is None:
            assert t_prev < 0
            continue
        abar = float(SCHEDULE.alphas_cumprod_T[t])
        abar_prev = float(SCHEDULE.alphas_cumprod_T[t_prev])
        sigma = math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        assert float(d["shift"].flatten(1).norm(dim=1).max()) <= 0.3 * sigma * math.sqrt(3 * 16 * 16) * (1 + 1e-5)
    assert x_clip.isfinite().all()


def test_psi_views_guide_with_the_mean_over_shifted_copies():
    """psi_views k: the psi guidance reads at a step is the mean of psi over k shifted copies of
    x0-hat, checked against the centre pixel read at the shifted positions by hand."""
    from klsc_lib.energies.views import view_offsets

    prior = image_prior()
    psi = Energy(lambda x: x[:, 0, 8, 8], "centre")
    seen = []
    cfg = replace(UNCAPPED, num_steps=3, psi_views=5, view_shift=2)
    sample_energy_dps(prior, psi, cfg, lam_B=1.0, generators=[1, 2], disable=True, callback=seen.append)
    for d in seen:
        by_hand = torch.stack([d["denoised"][:, 0, 8 - dy, 8 - dx] for dy, dx in view_offsets(5, 2, d["i"])]).mean(0)
        torch.testing.assert_close(d["psi"], by_hand)
