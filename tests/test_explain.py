"""Explanation runs (klsc_lib.explain) on a tiny random-weight world: a conv eps-model,
a two-conv backbone hooked at its second conv and a random transcoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from klsc_lib.baselines.maco import MacoPrior
from klsc_lib.diffusion.energy_dps import NonFiniteGuidance, sample_units
from klsc_lib.diffusion.samplers import initial_noise, resolve_generators, sample_ddpm, spaced_timesteps
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds
from klsc_lib.energies.units import Units
from klsc_lib.explain import (MacoConfig, ProxyConfig, RunResult, _FirstReach, explain, run_energy_dps, run_maco,
                              run_proxy, store_config, topk_targets)
from klsc_lib.interfaces import DDPMSchedule, HookedBackbone, Prior, PromptProxy
from klsc_lib.paper_values import ENERGYDPS
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig
from klsc_lib.samples_store import SamplesStore
from klsc_lib.studies.nb04_energydps import matched_cost, object_drift, strength_ablation

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULE = DDPMSchedule()
SHAPE = (3, 16, 16)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.block(torch.relu(self.stem(x))).mean(dim=(2, 3))


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 3, 3, padding=1))
        self.calls = 0

    def forward(self, x, t_B):
        self.calls += 1
        return self.net(x)


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    eps_net = _Counting().requires_grad_(False)
    prior = Prior(eps_net, SCHEDULE, SHAPE, "tiny")
    backbone = HookedBackbone(_Net(), "block", preprocess=lambda x: x).requires_grad_(False)
    tc = Transcoder(TranscoderConfig(d_in=8, d_out=8, d_sae=32, k=4, kernel_size=3)).requires_grad_(False)
    return prior, eps_net, Units("Feature", backbone, tc)


def scaled(scale: float, num_steps: int = 10, **kw) -> GuidanceConfig:
    """Jacobian-free EnergyDPS at ``scale`` per step on the 1000-step schedule."""
    return GuidanceConfig(num_steps=num_steps, strength=scale * num_steps / 1000, grad_through_denoiser=False, **kw)


FAST = scaled(5.0)


def energy_dps_samples(prior, units, units_B, cap_B, cfg, seeds, batch_size=64):
    """sample_units on ``units``; uncapped (cap rule "none") when ``cap_B`` is None."""
    if cap_B is None:
        cfg = replace_cfg(cfg, cap_rule="none", cap=None)
    return sample_units(prior, units.energy, units_B, cfg, seeds, cap_B, batch_size=batch_size)


def test_cap_below_every_psi_and_zero_scale_are_the_unguided_sampler_bit_for_bit(world):
    prior, _, units = world
    units_B, seeds = torch.tensor([3, 7, 3, 11, 5]), [4, 5, 6, 7, 8]
    gens = resolve_generators(seeds)  # one stream per sample: x_T, then each step's noise
    ref = sample_ddpm(prior.eps, initial_noise(SHAPE, gens), SCHEDULE, generator=gens,
                      timesteps=spaced_timesteps(SCHEDULE, 10), clip_x0=(-1.0, 1.0), disable=True)
    low_cap, _ = energy_dps_samples(prior, units, units_B, -1e9, FAST, seeds)
    no_scale, _ = energy_dps_samples(prior, units, units_B, None, scaled(0.0), seeds)
    assert torch.equal(low_cap, ref) and torch.equal(no_scale, ref)
    chunked, _ = energy_dps_samples(prior, units, units_B, -1e9, FAST, seeds, batch_size=2)  # conv kernels may
    torch.testing.assert_close(chunked, ref, rtol=1e-5, atol=1e-6)  # round differently at another batch size


def test_guidance_raises_psi_monotonically_in_the_strength(world):
    prior, _, units = world
    units_B, seeds = torch.arange(8).repeat_interleave(3), list(range(24))
    means = [float(energy_dps_samples(prior, units, units_B, None, scaled(s),
                                      seeds)[1].mean()) for s in (0.0, 2.0, 8.0, 32.0)]
    assert all(a < b for a, b in zip(means, means[1:])), means


def test_calibration_reaches_the_targets_of_a_batch_of_units_at_once(world):
    prior, _, units = world
    units_U = torch.tensor([1, 4, 9, 20])
    _, free = energy_dps_samples(prior, units, units_U.repeat_interleave(4), None, FAST, list(range(16)))
    target_U = 0.8 * free.reshape(4, 4).mean(1)  # reachable: between unguided and uncapped
    base = energy_dps_samples(prior, units, units_U.repeat_interleave(4), None,
                              scaled(0.0), list(range(16)))[1].reshape(4, 4).mean(1)
    target_U = torch.maximum(target_U, base + 0.5 * (free.reshape(4, 4).mean(1) - base))
    res = run_energy_dps(prior, units, units_U, target_U, 4, replace_cfg(FAST, calib_iters=8, cap_bracket=(0.2, 3.0)),
                         disable=True)
    gap = (res.psi_UN.mean(1) - target_U).abs() / (free.reshape(4, 4).mean(1) - base)
    assert res.images_UNCHW.shape == (4, 4, *SHAPE)
    assert (gap < 0.1).all(), gap


def replace_cfg(cfg, **kw):
    from dataclasses import replace
    return replace(cfg, **kw)


def test_unknown_unit_ids_are_rejected_before_any_sampling(world):
    prior, eps_net, units = world
    calls = eps_net.calls
    with pytest.raises(ValueError, match=r"unknown feature ids \[32, 99\]"):
        run_energy_dps(prior, units, [0, 32, 99], torch.ones(3), 2, FAST)
    with pytest.raises(ValueError, match="distinct"):
        run_energy_dps(prior, units, [1, 1], torch.ones(2), 2, FAST)
    neurons = Units("Neuron", units.backbone)
    with pytest.raises(ValueError, match=r"unknown neuron ids \[8\]"):
        run_energy_dps(prior, neurons, [8], torch.ones(1), 2, FAST)
    assert eps_net.calls == calls


def test_nan_in_psi_raises_naming_the_step(world):
    prior, _, units = world
    bad = Transcoder(units.transcoder.cfg).requires_grad_(False)
    bad.W_enc_FCkk[2] = float("nan")
    with pytest.raises(NonFiniteGuidance, match="reverse step 0"):
        energy_dps_samples(prior, Units("Feature", units.backbone, bad), torch.tensor([2, 3]), None, FAST, [0, 1])


def test_store_round_trip_skips_stored_units(world, tmp_path):
    prior, _, units = world
    store = SamplesStore("EnergyDPS", "Feature", store_config("EnergyDPS", FAST, 2, 0, {"world": "tiny"}), tmp_path)
    runs = []

    def run(units_U, target_U):
        res = run_energy_dps(prior, units, units_U, target_U, 2, replace_cfg(FAST, cap_rule="fixed", cap=1e9),
                             disable=True)
        runs.append(units_U.tolist())
        return res

    first = explain(store, run, [5, 6], torch.tensor([1.0, 2.0]))
    again = explain(store, run, [6, 5, 7], torch.tensor([2.0, 1.0, 3.0]))
    assert runs == [[5, 6], [7]]
    assert torch.equal(first[5], again[5]) and store.units() == [5, 6, 7]
    got = store.get(6)
    assert got.images_BCHW.shape == (2, *SHAPE) and float(got.extras["target"]) == 2.0
    assert got.meta["seconds_per_sample"] > 0


def test_first_reach_keeps_the_first_step_at_the_target():
    pick = _FirstReach(torch.tensor([1.0, 5.0]), 2)
    for step, level in enumerate([0.2, 0.9, 1.4, 2.0]):
        x = torch.full((4, 1, 2, 2), float(step))
        pick.offer(step, x, torch.tensor([level, level, level, level]))
    assert pick.step.tolist() == [2.0, 3.0]  # unit 0 crosses 1.0 at step 2; unit 1 never: closest is the last
    assert torch.equal(pick.x[0], torch.full((2, 1, 2, 2), 2.0))


def test_paper_and_fast_configs():
    p = GuidanceConfig.paper()
    assert (p.num_steps, p.step_scale(SCHEDULE), p.grad_through_denoiser, p.cap_rule, p.cap) == (
        None, ENERGYDPS["guidance_scale"], True, "fixed", ENERGYDPS["cap"])
    f = GuidanceConfig.fast()
    assert f == GuidanceConfig() and (f.num_steps, f.grad_through_denoiser, f.cap_rule) == (50, True, "calibrated")
    # the strength is the whole chain's: scale x steps is half the paper's 1.0 x 1000 at any step count
    for steps in (50, 100):
        assert GuidanceConfig.fast(steps).step_scale(SCHEDULE) * steps == pytest.approx(0.5 * 1000)
    assert not GuidanceConfig.fast(grad_through_denoiser=False).grad_through_denoiser


def test_topk_targets_are_the_mean_of_the_best_real_images(world):
    _, _, units = world
    images = torch.rand(40, *SHAPE) * 2 - 1
    units_U = torch.tensor([0, 3, 17])
    res, t_U = topk_targets(units, units_U, images, k=6, k_target=4, batch_size=16)
    with torch.no_grad():
        psi_NU = torch.stack([units.energy(int(u))(images) for u in units_U], dim=1)
    torch.testing.assert_close(t_U, psi_NU.topk(4, dim=0).values.mean(0))


def test_maco_and_proxy_runs_are_batched_and_pick_a_step(world):
    prior, _, units = world
    units_U, t = torch.tensor([2, 9]), torch.tensor([0.5, 50.0])
    images = torch.rand(16, *SHAPE) * 2 - 1
    res = run_maco(MacoPrior.from_images(images), units, units_U, t, 2, 16, MacoConfig(max_steps=6, check_every=2),
                   disable=True)
    assert isinstance(res, RunResult) and res.images_UNCHW.shape == (2, 2, *SHAPE)
    assert 0 <= res.knob_U.min() and res.knob_U.max() <= 6
    emb = nn.Embedding(4, 8)

    def eps_given(x, t_B, e):
        return prior.eps(x, t_B) * e.mean(1)[:, None, None, None]

    proxy = PromptProxy(eps_given, lambda b: emb.weight[:1].detach().expand(b, -1).clone())
    res = run_proxy(proxy, prior, units, units_U, t, 2, ProxyConfig(max_steps=3, chain_steps=3), disable=True)
    assert res.images_UNCHW.shape == (2, 2, *SHAPE) and res.psi_UN.shape == (2, 2)


def test_paper_profile_settings_run_the_same_code_at_reduced_size(world):
    """profile=paper: the authors' EnergyDPS (every step of the schedule, the gradient
    through the denoiser, scale 1, fixed cap) through the paper prior's learned-sigma
    wrapper around a random-weight diffusers UNet (6 output channels), 20 steps."""
    from klsc_lib.profiles import get_profile

    cfg = get_profile("04_energydps", "paper")
    assert cfg.paper == GuidanceConfig.paper() and cfg.n_features == 100 and cfg.maco.max_steps == 1000
    _, _, units = world
    from diffusers import UNet2DModel

    from klsc_lib.worlds.zoo.guided_diffusion import LearnedSigmaEps

    torch.manual_seed(1)
    unet = UNet2DModel(sample_size=16, out_channels=6, block_out_channels=(16,), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",)).requires_grad_(False)
    schedule = DDPMSchedule(num_train_timesteps=20)
    prior = Prior(LearnedSigmaEps(unet, schedule), schedule, SHAPE, "learned-sigma stand-in")
    res = run_energy_dps(prior, units, [3, 8], torch.tensor([1.0, 1.0]), 1, cfg.paper, disable=True)
    assert res.images_UNCHW.shape == (2, 1, *SHAPE) and torch.isfinite(res.images_UNCHW).all()
    assert res.knob_U.tolist() == [cfg.paper.cap] * 2


def test_strength_ablation_starts_at_the_unguided_prior_and_rises(world):
    prior, _, units = world
    units_B, seeds = torch.arange(6).repeat_interleave(2), list(range(12))
    rows = strength_ablation(prior, units, units_B, FAST, (0.0, 1.0, 4.0), seeds, lambda x: float(x.std()))
    _, psi0 = energy_dps_samples(prior, units, units_B, None, scaled(0.0), seeds)
    assert [r[0] for r in rows] == [0.0, 1.0, 4.0]
    assert rows[0][1] == pytest.approx(float(psi0.mean()), abs=1e-6)
    assert rows[0][1] < rows[1][1] < rows[2][1]


def test_object_drift_without_the_task_term_is_energy_dps_on_psi_alone(world):
    prior, _, units = world
    task = units.energy(torch.full((4,), 9))  # a second unit as the "task"
    rows = object_drift(prior, units, 3, 1e9, task, lambda x: task(x), (0.0, 2.0), FAST, seed=5)
    x0, psi0 = energy_dps_samples(prior, units, torch.full((4,), 3), 1e9, FAST, sample_seeds(5, 3, 4))
    assert torch.equal(rows[0].images_BCHW, x0) and rows[0].mean_psi == pytest.approx(float(psi0.mean()), abs=1e-6)
    assert rows[1].p_task > rows[0].p_task  # the task term pulls its own score up


def test_matched_cost_calibrates_the_fast_configuration_to_what_paper_config_reached(world):
    prior, _, units = world
    units_U = torch.tensor([2, 6])
    _, free = energy_dps_samples(prior, units, units_U.repeat_interleave(3), None, FAST, list(range(6)))
    slow = replace_cfg(scaled(1.0, num_steps=20), grad_through_denoiser=True)
    res = matched_cost(prior, units, units_U, free.reshape(2, 3).mean(1), 3,
                       replace_cfg(FAST, calib_iters=8, cap_bracket=(0.0, 3.0)), slow)
    reached = res["paper_config"].psi_UN.mean(1)
    assert torch.equal(res["fast"].target_U, res["paper_config"].target_U)
    spread = free.std()
    assert ((res["fast"].psi_UN.mean(1) - reached).abs() < 0.25 * spread).all()
    # the timed pass at the calibrated caps redraws the calibration's best sample set (same seeds, same caps)
    torch.testing.assert_close(res["fast"].images_UNCHW, res["fast_calibration"].images_UNCHW, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- one configuration, one seed scheme
def test_klsc_sample_the_inspector_and_explain_draw_the_same_images(world):
    """One feature, seed and GuidanceConfig: the `klsc sample` stage's sampling function, the
    inspector's on-demand sampler and explain's run give the same images bit for bit."""
    from klsc_lib.pipeline.sample import feature_samples
    from klsc_lib.viz.inspector_data import sample_feature

    prior, _, units = world
    feature, seed, n = 11, 3, 3
    pool_BCHW = torch.rand(64, *SHAPE) * 2 - 1
    real_BCHW = pool_BCHW[units.energy(torch.full((64,), feature))(pool_BCHW).topk(4).indices]  # its top images
    target = units.energy(torch.full((4,), feature))(real_BCHW).mean()
    at_target = GuidanceConfig.fast(6, cap_rule="target")
    stage = feature_samples(prior, units, feature, real_BCHW, at_target, seed, n)
    notebook = run_energy_dps(prior, units, [feature], target.reshape(1), n, at_target, seed, disable=True)
    inspector = sample_feature(prior, units.backbone, units.transcoder, feature,
                               replace_cfg(at_target, cap_rule="fixed", cap=float(target)),
                               sample_seeds(seed, feature, n))
    assert torch.equal(stage.images_UNCHW[0], notebook.images_UNCHW[0])
    assert torch.equal(inspector.images_BCHW, notebook.images_UNCHW[0])
    assert torch.equal(inspector.psi_B, notebook.psi_UN[0])
    gens = resolve_generators(sample_seeds(seed, feature, n))
    unguided = sample_ddpm(prior.eps, initial_noise(SHAPE, gens), SCHEDULE,
                           generator=gens, timesteps=spaced_timesteps(SCHEDULE, 6),
                           clip_x0=(-1.0, 1.0), disable=True)
    assert not torch.allclose(inspector.images_BCHW, unguided, atol=1e-3)  # the guidance acted


def test_a_units_samples_do_not_depend_on_the_other_units_of_its_run(world):
    prior, _, units = world
    cfg = replace_cfg(FAST, cap_rule="target")
    alone = run_energy_dps(prior, units, [5], torch.tensor([0.3]), 2, cfg, seed=1, disable=True)
    mixed = run_energy_dps(prior, units, [9, 5, 2], torch.tensor([0.1, 0.3, 0.2]), 2, cfg, seed=1, disable=True)
    assert torch.equal(mixed.images_UNCHW[1], alone.images_UNCHW[0]) and torch.equal(mixed.psi_UN[1], alone.psi_UN[0])


def test_a_store_filled_in_two_runs_equals_one_filled_in_one(world, tmp_path):
    """An interrupted run resumed later (calibrated caps) writes the same samples as one run."""
    prior, _, units = world
    units_U, target_U = torch.tensor([4, 8, 15, 16]), torch.tensor([0.2, 0.4, 0.3, 0.5])
    run = lambda u, t: run_energy_dps(prior, units, u, t, 2, FAST, seed=7, disable=True)  # noqa: E731
    stores = [SamplesStore("EnergyDPS", "Feature", store_config("EnergyDPS", FAST, 2, 7, {"w": 1}), tmp_path / name)
              for name in ("whole", "resumed")]
    explain(stores[0], run, units_U, target_U)
    explain(stores[1], run, units_U[:2], target_U[:2])  # interrupted half-way
    explain(stores[1], run, units_U, target_U)
    for u in units_U.tolist():
        whole, resumed = stores[0].get(u), stores[1].get(u)
        assert torch.equal(whole.images_BCHW, resumed.images_BCHW) and torch.equal(whole.psi_B, resumed.psi_B)
        assert torch.equal(whole.extras["knob"], resumed.extras["knob"])


def test_the_plug_in_tilt_at_lambda_zero_is_unguided_and_rises_with_lambda(world):
    from klsc_lib.explain import run_tilt

    prior, _, units = world
    tilt = GuidanceConfig.tilt(10)
    u, t = torch.tensor([1, 5]), torch.tensor([0.3, 0.3])
    zero = run_tilt(prior, units, u, t, torch.zeros(2), 3, tilt)
    seeds = [s for unit in (1, 5) for s in sample_seeds(0, unit, 3)]
    gens = resolve_generators(seeds)
    plain = sample_ddpm(prior.eps, initial_noise(SHAPE, gens), SCHEDULE, generator=gens,
                        timesteps=spaced_timesteps(SCHEDULE, 10), clip_x0=(-1.0, 1.0), disable=True)
    assert torch.equal(zero.images_UNCHW.flatten(0, 1), plain) and zero.knob_U.tolist() == [0.0, 0.0]
    strong = run_tilt(prior, units, u, t, torch.full((2,), 50.0), 3, tilt)
    assert float(strong.psi_UN.mean()) > float(zero.psi_UN.mean())
    full = run_tilt(prior, units, u, t, torch.full((2,), 50.0), 3, tilt, guide_units=replace_cfg(units, center_frac=1.0))
    assert not torch.equal(full.images_UNCHW, strong.images_UNCHW)  # steered by the whole map ...
    with torch.no_grad():  # ... but reported on the units' own psi
        torch.testing.assert_close(full.psi_UN.flatten(), units.energy(u.repeat_interleave(3))(full.images_UNCHW.flatten(0, 1)))
    with pytest.raises(ValueError, match="GuidanceConfig.tilt"):
        run_tilt(prior, units, u, t, torch.zeros(2), 3, FAST)
    with pytest.raises(ValueError, match="one finite lambda per unit"):
        run_tilt(prior, units, u, t, torch.tensor([1.0, float("nan")]), 3, tilt)


def test_twisted_smc_keeps_n_of_its_particles_and_counts_every_particle_in_the_cost(world):
    from klsc_lib.explain import run_twisted_smc

    prior, _, units = world
    res = run_twisted_smc(prior, units, torch.tensor([1, 5, 7]), torch.full((3,), 0.3), torch.full((3,), 5.0), 2, 6,
                          GuidanceConfig.tilt(5), populations_per_batch=2)
    assert res.images_UNCHW.shape == (3, 2, *SHAPE) and res.psi_UN.shape == (3, 2)
    assert res.seconds_per_sample == pytest.approx(res.seconds / 6)
    assert res.info["n_particles"] == 6 and ((1 <= res.info["ancestors_U"]) & (res.info["ancestors_U"] <= 6)).all()
    with torch.no_grad():  # the kept psi is psi of the kept images
        again = units.energy(torch.tensor([1, 1, 5, 5, 7, 7]))(res.images_UNCHW.flatten(0, 1))
    torch.testing.assert_close(again, res.psi_UN.flatten(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cannot keep"):
        run_twisted_smc(prior, units, torch.tensor([1]), torch.ones(1), torch.ones(1), 8, 4, GuidanceConfig.tilt(5))


def test_independent_twisted_smc_draws_each_kept_sample_from_its_own_population(world):
    """independent=True: U x n populations of P particles (seeded apart), one particle kept
    from each; the cost counts all U x n x P particles; the first population of a unit is
    the shared mode's population, particle for particle."""
    from klsc_lib.explain import run_twisted_smc

    prior, _, units = world
    u, t, lam = torch.tensor([1, 5]), torch.full((2,), 0.3), torch.full((2,), 5.0)
    ind = run_twisted_smc(prior, units, u, t, lam, 3, 4, GuidanceConfig.tilt(5), independent=True, populations_per_batch=4)
    assert ind.images_UNCHW.shape == (2, 3, *SHAPE) and len(ind.info["ancestors_U"]) == 6
    flat = ind.images_UNCHW.flatten(0, 1).flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(6) * 1e9).min() > 1e-3  # six distinct draws
    shared = run_twisted_smc(prior, units, u, t, lam, 1, 4, GuidanceConfig.tilt(5), populations_per_batch=4)
    one = run_twisted_smc(prior, units, u, t, lam, 1, 4, GuidanceConfig.tilt(5), independent=True, populations_per_batch=4)
    torch.testing.assert_close(one.images_UNCHW, shared.images_UNCHW)  # n = 1: the same population and pick
    with torch.no_grad():
        again = units.energy(u.repeat_interleave(3))(ind.images_UNCHW.flatten(0, 1))
    torch.testing.assert_close(again, ind.psi_UN.flatten(), rtol=1e-4, atol=1e-5)
