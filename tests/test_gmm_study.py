"""Tests of the notebook-02 toy studies (klsc_lib.studies.nb02_sampling_pathologies) against closed forms."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from klsc_lib.studies import nb02_sampling_pathologies as gs
from klsc_lib.constraints.calibration import Calibrated
from klsc_lib.constraints.score_variable import EmpiricalScore, midpoint_grid_2d
from klsc_lib.diffusion.exact_guidance import ExactTiltGuidance
from klsc_lib.diffusion.gmm_oracle import GMMOracle, gmm_oracle_prior
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.energies import angular_energy
from klsc_lib.profiles import get_profile
from klsc_lib.worlds.gmm import four_mode_gmm


def _gaussian_grid(n: int = 160, lim: float = 8.0):
    """Standard 2-D normal as a quadrature law: psi = x1, g = x2."""
    x_GD, log_cell = midpoint_grid_2d(lim, n)
    log_p = -0.5 * x_GD.square().sum(1)
    return EmpiricalScore(x_GD[:, 0], log_p + log_cell), x_GD[:, 1]


def test_two_constraints_recover_the_gaussian_shift():
    # p e^{lambda x1 + omega x2} for p = N(0, I) is N((lambda, omega), I): the multipliers are the targets
    law, g = _gaussian_grid()
    lam, omega = gs.calibrate_two_constraints(law, g, 0.7, -1.2)
    assert lam == pytest.approx(0.7, abs=1e-6) and omega == pytest.approx(-1.2, abs=1e-6)


def test_two_constraints_unattainable_raises():
    law, g = _gaussian_grid(n=60, lim=3.0)
    with pytest.raises(ValueError, match="not attained"):
        gs.calibrate_two_constraints(law, g, 5.0, 0.0)  # beyond the grid's largest psi


def test_task_drift_matches_gaussian_closed_form():
    # D_task(s) between N((t, s)) and N((t, s0)) is (s - s0)^2 / 2, and Theorem E.3's bound is tight for a Gaussian
    law, g = _gaussian_grid()
    rows = gs.task_drift(law, g, 0.5, [0.0, 1.0])
    for r in rows:
        assert r["kl_to_feature_tilt"] == pytest.approx(r["s_gain"] ** 2 / 2, abs=1e-6)
        assert r["thm_E3_lower_bound"] == pytest.approx(r["s_gain"] ** 2 / 2, abs=1e-5)
        assert r["mean_psi"] == pytest.approx(0.5, abs=1e-7) and r["omega"] == pytest.approx(r["s_gain"], abs=1e-6)


def test_weighted_sliced_wasserstein_matches_the_unweighted_estimator():
    # integer weights = repeated points: equal to sliced_wasserstein on the expanded sets (same projections)
    from klsc_lib.analysis.kde import sliced_wasserstein

    pts = torch.randn(1000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w_a, w_b = torch.ones(1000, dtype=torch.float64), torch.ones(1000, dtype=torch.float64)
    w_b[:500] = 3.0
    expanded_b = torch.cat([pts[:500].repeat(3, 1), pts[500:]])
    ours = gs.weighted_sliced_wasserstein(pts, w_a, w_b, num_quantiles=4000, generator=torch.Generator().manual_seed(4))
    ref = sliced_wasserstein(pts, expanded_b, num_quantiles=4000, generator=torch.Generator().manual_seed(4))
    assert ours == pytest.approx(ref, rel=0.1)  # step vs interpolated quantiles
    assert gs.weighted_sliced_wasserstein(pts, w_a, 2 * w_a) == pytest.approx(0.0, abs=1e-12)


def test_path_speeds_of_a_translation_and_of_a_jump():
    base = torch.randn(1500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    levels = [0.0, 0.5, 1.0, 1.5, 2.0]
    smooth = gs.path_speeds([base + torch.tensor([lv, 0.0], dtype=torch.float64) for lv in levels], levels)
    # SW2 of a shift d along x1 is |d| sqrt(E u1^2) = |d| / sqrt(2) for uniform directions in 2-D
    assert torch.allclose(smooth, smooth[0].expand_as(smooth), rtol=1e-9)
    assert float(smooth[0]) == pytest.approx(1 / math.sqrt(2), abs=0.1)
    jump = [base + torch.tensor([3.0 * (lv > 1.2), 0.0], dtype=torch.float64) for lv in levels]
    fine, coarse = gs.path_speeds(jump, levels).max(), gs.path_speeds(jump[::2], levels[::2]).max()
    assert float(fine / coarse) == pytest.approx(2.0, rel=1e-6)  # a jump doubles when the grid is halved
    with pytest.raises(ValueError, match="equal"):
        gs.path_speeds([base, base], [1.0, 1.0])


def test_mean_sd_matches_statistics():
    v = [0.3, 0.1, 0.7, 0.2]
    assert gs.mean_sd(v) == pytest.approx((statistics.mean(v), statistics.stdev(v)))
    assert gs.mean_sd([0.4]) == (0.4, 0.0)


def test_guidance_profile_agrees_near_the_data():
    # at timestep 0, x0-hat ~ x_t and h_0 = e^{lambda psi}: exact and plug-in guidance coincide
    gmm, schedule = four_mode_gmm(), DDPMSchedule()
    psi = angular_energy()
    exact = ExactTiltGuidance(GMMOracle(gmm, schedule), psi, 0.5, order=6)
    x0 = gmm.sample(64, generator=torch.Generator().manual_seed(1))
    prof = gs.guidance_profile(exact, gmm_oracle_prior(gmm, schedule), psi, x0, [0, 999],
                               torch.Generator().manual_seed(2))
    assert prof["cosine"][0] > 0.99 and prof["exact"][0] == pytest.approx(prof["plugin"][0], rel=0.05)
    assert prof["exact"][1] < 0.1 * prof["plugin"][1]  # at pure noise h_t is nearly flat


def test_matched_run_hits_targets_and_redraws_reproducibly():
    gmm, schedule = four_mode_gmm(), DDPMSchedule()
    samplers = gs.ToySamplers(gmm, gmm_oracle_prior(gmm, schedule), angular_energy(), n=64, num_steps=10,
                              pool_size=2000, or_box=(-4.0, 4.0), or_steps=60, or_lr=0.05,
                              or_beta_bracket=(0.0, 1000.0),
                              lam_brackets={"tilted_score": (0.0, 3.0), "constant": (0.0, 0.3)})
    res = gs.matched_run(samplers, [6.0], tol=0.1, max_iter=12, methods=("retrieval", "EnergyDPS"))
    assert res["retrieval", 6.0].mean_psi == pytest.approx(6.0, abs=0.1)  # the top-k set's mean (eq. 206)
    assert float(samplers.psi(res["EnergyDPS", 6.0].samples).mean()) == pytest.approx(6.0, abs=0.1)
    assert res["retrieval", 6.0].samples.shape == (64, 2)
    assert res["retrieval", 6.0].reached and res["EnergyDPS", 6.0].reached
    again = gs.redraw(samplers, "EnergyDPS", res["EnergyDPS", 6.0])
    assert torch.equal(again, res["EnergyDPS", 6.0].samples)  # CRN: same seed, same knob, same samples


def test_pool_collapse_boundary_and_typical_region():
    psi_N = torch.tensor([0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    out = gs.pool_collapse(psi_N, [0.0, 50.0])
    assert out["ess"][0.0] == pytest.approx(4.0) and out["ess"][50.0] == pytest.approx(2.0)  # two tied maxima
    assert out["max_weight"][50.0] == pytest.approx(0.5)
    ident = lambda x: x[:, 0]  # noqa: E731
    top = torch.tensor([[1.0], [1.1], [3.0], [4.0]], dtype=torch.float64)
    ref = torch.tensor([[1.05], [2.0], [5.0], [0.0]], dtype=torch.float64)
    b = gs.boundary_masses(ident, top, ref, 0.5)
    assert b["tau"] == 1.0 and b["B_delta_retrieval"] == pytest.approx(0.5) and b["B_delta_exact_tilt"] == pytest.approx(1 / 3)
    ell, band = gs.typical_region(torch.linspace(0, 1, 100001, dtype=torch.float64), 0.05)
    assert ell == pytest.approx(0.05) and band == pytest.approx((0.025, 0.975))


def _small_samplers(**kw) -> gs.ToySamplers:
    gmm, schedule = four_mode_gmm(), DDPMSchedule()
    args = dict(n=64, num_steps=10, pool_size=2000, or_box=(-4.0, 4.0), or_steps=60, or_lr=0.05,
                or_beta_bracket=(0.0, 1000.0), lam_brackets={"tilted_score": (0.0, 3.0), "constant": (0.0, 0.3)})
    return gs.ToySamplers(gmm, gmm_oracle_prior(gmm, schedule), angular_energy(), **{**args, **kw})


def _calibrated(method: str, t: float, samples: torch.Tensor | None, knob: float = 0.0) -> Calibrated:
    return Calibrated(method, t, knob, samples, None, samples is not None)


def test_from_profile_has_a_bracket_for_every_energy_dps_step():
    cfg = get_profile("02_sampling_pathologies", "smoke")
    s = gs.ToySamplers.from_profile(cfg, four_mode_gmm(), None, angular_energy(), seed=3)
    assert (s.n, s.num_steps, s.pool_size, s.seed) == (cfg.n_samples, cfg.num_steps, cfg.pool_size, 3)
    assert set(s.lam_brackets) == set(gs.ENERGY_DPS_STEPS.values())  # matched_run can calibrate every variant


def test_exact_reference_hits_the_tilted_mean_and_its_kl():
    gmm, psi = four_mode_gmm(), angular_energy()
    ref = gs.exact_reference(gmm, psi, 20_000, [5.0, 6.0], 300, torch.Generator().manual_seed(0))
    assert torch.equal(ref.pool_ND, gmm.sample(20_000, generator=torch.Generator().manual_seed(0)))
    for t in (5.0, 6.0):
        w = torch.softmax(ref.lam[t] * ref.law.values, 0)  # q*_t on the pool, computed directly
        assert float((w * ref.law.values).sum()) == pytest.approx(t, abs=1e-8)
        assert ref.kl[t] == pytest.approx(float((w * (w * len(w)).log()).sum()), rel=1e-8)  # KL(q || uniform)
    assert ref.sample(6.0, 1).shape == (300, 2) and torch.equal(ref.sample(6.0, 1), ref.sample(6.0, 1))
    assert float(psi(ref.sample(6.0, 1)).mean()) == pytest.approx(6.0, abs=0.25)


def test_smoothness_paths_run_between_the_end_knobs():
    samplers = _small_samplers(num_steps=5)
    pool = samplers.gmm.sample(400, generator=torch.Generator().manual_seed(1))
    law = EmpiricalScore(samplers.psi(pool))
    calibrated = {("EnergyDPS", 5.0): _calibrated("EnergyDPS", 5.0, None, 0.2),
                  ("EnergyDPS", 7.0): _calibrated("EnergyDPS", 7.0, None, 1.0)}
    paths = gs.smoothness_paths(samplers, calibrated, law, pool, {5.0: 0.5, 7.0: 2.0}, (5.0, 7.0), 5, 2, 100, 0)
    assert paths["EnergyDPS"]["fine_speed"].shape == (2, 4) and paths["EnergyDPS"]["coarse_speed"].shape == (2, 2)
    levels = paths["exact tilt"]["levels"]  # tilted means of each sub-pool: increasing in lambda (A'' = Var > 0)
    assert levels.shape == (2, 5) and bool((levels.diff(dim=1) > 0).all())
    first = gs.ToySamplers(**{**samplers.__dict__, "seed": samplers.seed + 101}).energy_dps(0.2, n=100, offset=9)
    assert float(paths["EnergyDPS"]["levels"][0, 0]) == pytest.approx(float(samplers.psi(first).mean()), rel=1e-6)


def test_exact_vs_plugin_agree_at_lambda_zero():
    # at lambda = 0 grad log h_t = 0 and the plug-in is 0 too: both are the unguided sampler on the same noise
    samplers = _small_samplers()
    ref = gs.exact_reference(samplers.gmm, samplers.psi, 20_000, [6.0], 64, torch.Generator().manual_seed(0))
    res = gs.exact_vs_plugin(samplers, ref.sample, 0.0, _calibrated("EnergyDPS", 6.0, None), 6.0, 0, 6, [5, 10],
                             profile_points=32, profile_steps=3)
    for row in res.convergence.values():
        assert row["exact_ed"] == pytest.approx(row["plugin_ed"], abs=1e-8)
        assert row["exact_mean_psi"] == pytest.approx(row["plugin_mean_psi"], abs=1e-8)
    assert res.most_steps == res.convergence[10] and len(res.mc_band) == 3 and min(res.mc_band) >= 0
    assert res.psi_standard_error == pytest.approx(float(samplers.psi(ref.sample(6.0, 0)).std()) / 8)
    assert math.isnan(res.matched_ed) and not res.matched_reached
    assert max(res.profile["exact"]) < 1e-12 and res.profile["plugin"] == [0.0] * 3


def test_retrieval_study_on_and_off_the_pool():
    samplers = _small_samplers(pool_size=300)
    pool = samplers.gmm.sample(500, generator=torch.Generator().manual_seed(2))
    law = EmpiricalScore(samplers.psi(pool))
    top = pool[samplers.psi(pool[:300]).argsort()[-40:]]
    calibrated = {("retrieval", 6.0): _calibrated("retrieval", 6.0, top),
                  ("EnergyDPS", 6.0): _calibrated("EnergyDPS", 6.0, pool[10:20]),
                  ("retrieval", 7.0): _calibrated("retrieval", 7.0, None),
                  ("EnergyDPS", 7.0): _calibrated("EnergyDPS", 7.0, pool[400:410])}  # beyond pool_size: off the pool
    res = gs.retrieval_study(samplers, law, pool, calibrated, lambda t, seed: pool[:200], 0, [0.0, 10.0], 0.25)
    assert res.energydps_on_pool == {6.0: 1.0, 7.0: 0.0}
    assert res.ess[0.0] == pytest.approx(300.0) and res.max_weight[0.0] == pytest.approx(1 / 300)
    assert list(res.boundary) == [6.0]  # unreached retrieval levels are left out
    assert res.boundary[6.0] == gs.boundary_masses(samplers.psi, top, pool[:200], 0.25)


def test_typical_set_study_counts_points_outside():
    gmm = four_mode_gmm()
    draw = lambda n, s: gmm.sample(n, generator=torch.Generator().manual_seed(s))  # noqa: E731
    far = torch.full((50, 2), 9.0, dtype=torch.float64)  # far from every mode: below any typical level
    calibrated = {("EnergyDPS", 6.0): _calibrated("EnergyDPS", 6.0, draw(20_000, 1)),
                  ("OR", 6.0): _calibrated("OR", 6.0, far),
                  ("EnergyDPS", 7.0): _calibrated("EnergyDPS", 7.0, far), ("OR", 7.0): _calibrated("OR", 7.0, None)}
    res = gs.typical_set_study(gmm, draw(100_000, 0), calibrated, lambda t, seed: draw(20_000, 2), 0, 0.05)
    assert list(res.outside) == [6.0]  # levels OR does not reach are left out
    assert res.outside[6.0]["OR"] == 1.0
    for m in ("EnergyDPS", "exact tilt"):  # prior draws leave the 95% region with probability 0.05
        assert res.outside[6.0][m] == pytest.approx(0.05, abs=0.006)
    assert res.ell == pytest.approx(float(torch.quantile(res.log_p_prior, 0.05)))


def test_object_drift_without_task_is_energy_dps():
    # at gain 0, omega = 0: the energy lambda psi + 0 g with step 1 is EnergyDPS at lambda (same noise)
    samplers = _small_samplers(num_steps=5)
    pool = samplers.gmm.sample(20_000, generator=torch.Generator().manual_seed(0))
    law = EmpiricalScore(samplers.psi(pool))
    rows, runs, summary = gs.object_drift_study(samplers, law, pool, (2.0, -2.0), 6.0, [0.0], 0.2, 8)
    assert rows[0]["omega"] == 0.0 and rows[0]["kl_to_feature_tilt"] == pytest.approx(0.0, abs=1e-12)
    run = runs[0.0]
    assert run.reached
    assert torch.allclose(run.samples, samplers.energy_dps(run.knob), atol=1e-9)
    g = -(run.samples - torch.tensor([2.0, -2.0], dtype=torch.float64)).square().sum(1)  # eq. 216
    assert summary[0.0]["mean_g"] == pytest.approx(float(g.mean())) and summary[0.0]["lambda"] == run.knob


def test_calibration_summary_keys_every_method_and_level():
    cal = {("OR", 5.0): Calibrated("OR", 5.0, 3.5, None, 4.2, False, "unreachable"),
           ("EnergyDPS", 6.5): Calibrated("EnergyDPS", 6.5, 0.4, torch.zeros(2, 2), 6.49, True)}
    out = gs.calibration_summary(cal)
    assert list(out) == ["OR@t=5", "EnergyDPS@t=6.5"]
    assert out["OR@t=5"] == {"knob": 3.5, "mean_psi": 4.2, "reached": False, "message": "unreachable"}
