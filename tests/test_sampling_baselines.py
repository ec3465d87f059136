"""Baselines, matched-faithfulness calibration and the reference tilt (paper Sec 2.2.3-2.2.4,
App E, F, H.3, I)."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.baselines import gmm as sb
from klsc_lib.constraints.calibration import UnreachableTarget, calibrate_knob, calibrate_lambda
from klsc_lib.constraints.hard_vs_tilt import (effective_sample_size, kl_between_tilts, kl_tilt, resample,
                                               task_distortion_lower_bound, tilt)
from klsc_lib.constraints.score_variable import EmpiricalScore
from klsc_lib.diffusion.energy_dps import sample_energy_dps
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.diffusion.gmm_oracle import gmm_oracle_prior
from klsc_lib.energies import angular_energy, reference_energy
from klsc_lib.interfaces import DDPMSchedule
from klsc_lib.energies.toy import AngularScore
from klsc_lib.worlds.gmm import four_mode_gmm
from klsc_lib.analysis.kde import Grid2D


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- reference tilt ------------------------------------------------------------------------

def test_gaussian_score_tilt_has_lambda_t_and_kl_t2_over_2():
    """Y = psi(X) ~ N(0, 1): q_lambda = N(lambda, 1), so lambda(t) = t and KL = t^2/2 (eqs. 119-124)."""
    y_N = torch.randn(400_000, generator=gen(1), dtype=torch.float64)
    law = EmpiricalScore(y_N)
    for t in (0.5, 1.0, 1.5):
        lam = calibrate_lambda(law, t)
        assert lam == pytest.approx(t, abs=0.03)
        assert float(kl_tilt(law, lam)) == pytest.approx(t**2 / 2, rel=0.05)
    assert calibrate_lambda(law, -1.0) == 0.0  # below E_p psi the constraint is inactive (Lemma D.4)
    with pytest.raises(UnreachableTarget):
        calibrate_lambda(law, float(y_N.max()) + 1.0)


def test_kl_between_tilts_is_the_exponential_family_formula():
    """KL(q_l||q_l') = (l - l') A'(l) - (A(l) - A(l')) (Lemma D.9, eq. 72); Gaussian: (l - l')^2 / 2."""
    y_N = torch.randn(400_000, generator=gen(2), dtype=torch.float64)
    law = EmpiricalScore(y_N)
    assert float(kl_between_tilts(law, 1.2, 0.7)) == pytest.approx(0.5**2 / 2, rel=0.05)
    assert float(kl_between_tilts(law, 1.0, 1.0)) == pytest.approx(0.0, abs=1e-12)


def test_task_distortion_lower_bound_is_attained_for_a_pure_task_tilt():
    """q ∝ q* e^{eta g} is the optimum of D_task at s = E_q g, and there Theorem E.3 is tight:
    KL(q||q*) = eta s - Lambda(eta) = sup_eta (eq. 16)."""
    x_N = torch.randn(200_000, generator=gen(3), dtype=torch.float64)
    base, g_N = 0.5 * x_N, -(x_N - 1.0).square()
    task_law = EmpiricalScore(g_N, base)  # g under q* ∝ p e^{base}
    s = float(tilt(task_law, 0.8).mean())
    exact = float(kl_between_tilts(task_law, 0.8, 0.0))
    assert task_distortion_lower_bound(task_law, s) == pytest.approx(exact, rel=1e-4)
    assert task_distortion_lower_bound(task_law, float(task_law.mean())) == pytest.approx(0.0, abs=1e-6)


def test_resample_tilt_draws_from_the_tilt():
    y_N = torch.randn(200_000, generator=gen(4), dtype=torch.float64)
    samples = resample(tilt(EmpiricalScore(y_N), 1.0), y_N.unsqueeze(1), 20_000, generator=gen(5))
    assert float(samples.mean()) == pytest.approx(1.0, abs=0.03)  # N(1, 1)


# ---- retrieval -----------------------------------------------------------------------------

def test_top_k_calibration_hits_the_target_and_returns_the_top_prefix():
    gmm, psi = four_mode_gmm(), AngularScore()
    pool = gmm.sample(5000, generator=gen(6))
    psi_N = psi(pool)
    res = sb.calibrate_top_k(pool, psi_N, 6.0, tol=0.05)
    assert res.reached and abs(float(psi(res.samples).mean()) - 6.0) <= 0.05
    k = int(res.knob)
    assert torch.equal(torch.sort(psi(res.samples)).values, torch.sort(torch.topk(psi_N, k).values).values)
    for target in (float(psi_N.mean()) - 0.5, float(psi_N.max()) + 0.1):
        miss = sb.calibrate_top_k(pool, psi_N, target, tol=0.05)
        assert not miss.reached and miss.samples is None and "outside" in miss.message


def test_lemma_F1_tilted_pool_collapses_to_the_argmax():
    psi_N = torch.tensor([0.1, 2.0, 1.5, 2.0 - 1e-3, -1.0], dtype=torch.float64)
    assert effective_sample_size(EmpiricalScore(psi_N)) == pytest.approx(5.0)
    collapsed = tilt(EmpiricalScore(psi_N), 1e5)
    assert float(collapsed.weights[1]) == pytest.approx(1.0, abs=1e-12)
    assert effective_sample_size(collapsed) == pytest.approx(1.0, abs=1e-9)


def test_resample_uniform_keeps_to_the_set():
    pts = torch.arange(10, dtype=torch.float64).unsqueeze(1)
    many = sb.resample_uniform(pts, 50, generator=gen(7))
    few = sb.resample_uniform(pts, 5, generator=gen(7))
    assert many.shape == (50, 1) and set(many.flatten().tolist()) <= set(range(10))
    assert len(set(few.flatten().tolist())) == 5  # without replacement when the set is large enough


# ---- optimisation with regularisation ------------------------------------------------------

def test_or_ascent_finds_the_closed_form_maximiser_and_stays_in_the_box():
    """psi = -||x - c||^2, R = x_2^2: argmax psi - beta R = (c_1, c_2 / (1 + beta))."""
    c = torch.tensor([1.0, 2.0], dtype=torch.float64)
    psi = lambda x: -(x - c).square().sum(-1)  # noqa: E731
    starts = sb.uniform_box_starts(50, (-4.0, 4.0), generator=gen(8))
    assert starts.min() >= -4 and starts.max() <= 4
    x = sb.optimize_regularized(psi, sb.y_axis_regularizer, 3.0, starts, steps=300, lr=0.05, box=(-4.0, 4.0))
    torch.testing.assert_close(x, torch.tensor([1.0, 0.5], dtype=torch.float64).expand(50, 2), atol=1e-6, rtol=0)
    far = lambda x: -(x - 10.0).square().sum(-1)  # noqa: E731
    boxed = sb.optimize_regularized(far, sb.y_axis_regularizer, 0.0, starts, steps=200, lr=0.05, box=(-4.0, 4.0))
    assert boxed.max() <= 4.0


def test_or_raises_on_a_non_finite_gradient():
    starts = torch.zeros(3, 2, dtype=torch.float64)  # sqrt|x| has an infinite slope at 0
    cusp = lambda x: x.abs().sqrt().sum(-1)  # noqa: E731
    with pytest.raises(FloatingPointError, match="ascent step 0"):
        sb.optimize_regularized(cusp, sb.y_axis_regularizer, 1.0, starts, steps=5, lr=0.05, box=(-4, 4))


# ---- matched-faithfulness calibration ------------------------------------------------------

def test_energy_dps_calibration_hits_t_within_tolerance():
    gmm, psi = four_mode_gmm(), AngularScore()
    schedule = DDPMSchedule()
    prior = gmm_oracle_prior(gmm, schedule)

    def draw(lam):
        return sample_energy_dps(prior, psi, GuidanceConfig(num_steps=40, step_size="tilted_score", cap_rule="none"),
                                 lam_B=lam, generators=gen(9), batch_size=400, dtype=torch.float64, disable=True)

    res = calibrate_knob(draw, psi, 6.0, 0.0, 1.0, tol=0.05, max_iter=20, method="EnergyDPS", knob_name="lambda")
    assert res.reached and abs(float(psi(res.samples).mean()) - 6.0) <= 0.05 and res.mean_psi == pytest.approx(
        float(psi(res.samples).mean()))
    miss = calibrate_knob(draw, psi, 9.9, 0.0, 1.0, tol=0.05, method="EnergyDPS", knob_name="lambda")
    assert not miss.reached and miss.samples is None and "attainable" in miss.message
    assert miss.attainable[0] < miss.attainable[1] < 9.9


def test_decreasing_knob_calibration_reports_ranges_in_psi_units():
    """OR's beta lowers the mean: the bisection runs on -mean, the message speaks in psi."""
    draw = lambda beta: torch.full((10, 1), 5.0 - beta, dtype=torch.float64)  # noqa: E731
    psi = lambda x: x[:, 0]  # noqa: E731
    hit = calibrate_knob(draw, psi, 3.7, 0.0, 4.0, tol=1e-3, increasing=False, method="OR", knob_name="beta")
    assert hit.reached and hit.knob == pytest.approx(1.3, abs=1e-3)
    miss = calibrate_knob(draw, psi, 6.0, 0.0, 4.0, tol=1e-3, increasing=False, method="OR", knob_name="beta")
    assert not miss.reached and "[1, 5]" in miss.message and miss.attainable == (1.0, 5.0)


# ---- prompt family and Theorem F.7 ---------------------------------------------------------

def test_prompt_family_sits_above_the_tilt_by_its_kl_to_the_tilt():
    """Csiszar (eq. 175) with E_{p_w} psi = t is the identity KL(p_w||p) = KL(q*||p) + KL(p_w||q*)
   ; the family cannot reshape a mode, so the floor is strictly positive."""
    gmm, psi = four_mode_gmm(), AngularScore()
    family = sb.PromptFamily(gmm, psi, Grid2D(-7.0, 7.0, 200))
    assert family.prior_mass == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(sb.prompt_family_weights(gmm.weights_K, family.component_means_K, 0.0), gmm.weights_K)
    for t in (6.0, 7.0):
        lam_p, w_knob = sb.calibrate_prompt_weights(gmm.weights_K, family.component_means_K, t)
        assert family.mean_psi(w_knob) == pytest.approx(t, abs=1e-8)
        w = family.best_weights(t)
        assert family.mean_psi(w) >= t - 1e-6 and family.kl_to_prior(w) <= family.kl_to_prior(w_knob) + 1e-9
        lam = family.tilt_lambda(t)
        floor = family.kl_to_tilt(w, lam)
        assert floor > 1e-4
        assert family.kl_to_prior(w) == pytest.approx(family.tilt_kl_to_prior(lam) + floor + lam * (
            family.mean_psi(w) - t), abs=1e-6)
    with pytest.raises(UnreachableTarget):
        sb.calibrate_prompt_weights(gmm.weights_K, family.component_means_K, float(family.component_means_K.max()) + 0.1)


def test_task_injected_energy_combines_the_scores():
    x_ref = torch.tensor([2.0, -2.0], dtype=torch.float64)
    g = reference_energy(x_ref)
    x = torch.tensor([[2.0, -2.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(g(x), torch.tensor([0.0, -8.0], dtype=torch.float64))
    psi = angular_energy()
    energy = 0.5 * psi + 0.25 * g
    torch.testing.assert_close(energy(x), 0.5 * psi(x) + 0.25 * g(x))
    assert math.isclose(float(energy(x[:1])), 0.5 * float(psi(x[:1])))


def test_proximal_or_reaches_the_closed_form_maximiser_for_any_beta():
    """psi = c.x, R = y^2: argmax c.x - beta y^2 has y* = c_y / (2 beta); the proximal iteration
    finds it even where a plain gradient step (lr * beta >= 1) diverges; x runs into the box."""
    c = torch.tensor([0.5, 3.0], dtype=torch.float64)
    starts = sb.uniform_box_starts(16, (-4, 4), generator=gen(2))
    for beta in (0.5, 50.0, 1000.0):
        x = sb.optimize_regularized(lambda z: z @ c, None, beta, starts, steps=400, lr=0.05, box=(-4, 4),
                                    prox=sb.y_axis_prox)
        torch.testing.assert_close(x[:, 1], torch.full((16,), 3.0 / (2 * beta), dtype=torch.float64))
        assert torch.all(x[:, 0] == 4.0)
    with pytest.raises(ValueError, match="regularizer"):
        sb.optimize_regularized(lambda z: z @ c, None, 1.0, starts, steps=1, lr=0.05, box=(-4, 4))
