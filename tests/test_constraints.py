"""Hard truncation, KLSC tilt, log-partition, the matched comparison and the local
speeds (Def. 2.1-2.2, Lemma D.4, Remark D.5, Lemmas D.7-D.12, Theorem D.14, App H.3)
against closed forms, SciPy and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import brentq

from klsc_lib.constraints.calibration import calibrate_lambda, calibrate_tau, matched_comparison, summarize_seeds
from klsc_lib.constraints.divergences import kl_truncation, kl_weights
from klsc_lib.constraints.hard_vs_tilt import (finite_step_speeds, kl_tilt, knob_perturbations, log_partition,
                                               mean_instability_hard, mean_instability_soft, tilt, tilted_mean, tilted_var,
                                               truncate, v_hard, v_soft)
from klsc_lib.constraints.score_variable import EmpiricalScore
from klsc_lib.constraints.score_variable import StandardNormalScore, angular_score_law
from klsc_lib.worlds.gmm import four_mode_gmm


@pytest.mark.parametrize("lam", [0.5, 1.7])
def test_gaussian_tilt_is_a_shifted_gaussian(normal_grid, lam):
    q = tilt(normal_grid, lam)  # q_lambda of N(0,1) is N(lambda, 1) (eq. 119-120)
    taus = torch.tensor([-1.0, 0.0, 1.0, 2.5], dtype=torch.float64)
    torch.testing.assert_close(q.survival(taus), StandardNormalScore().survival(taus - lam), rtol=1e-6, atol=0)
    assert float(q.mean()) == pytest.approx(lam, rel=1e-9)
    assert float(q.var()) == pytest.approx(1.0, rel=1e-9)
    assert float(log_partition(normal_grid, lam)) == pytest.approx(lam**2 / 2, rel=1e-9)


def test_log_partition_derivatives_are_tilted_moments(gmm_law):
    # Remark D.5: A'(lambda) = E_q psi and A''(lambda) = Var_q psi, autograd vs weighted moments.
    for lam0 in (0.0, 0.15, 0.6):
        lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(log_partition(gmm_law, lam), lam, create_graph=True)
        (hess,) = torch.autograd.grad(grad, lam)
        grad, hess = grad.detach(), hess.detach()
        assert float(grad) == pytest.approx(float(tilted_mean(gmm_law, lam0)), rel=1e-10)
        assert float(hess) == pytest.approx(float(tilted_var(gmm_law, lam0)), rel=1e-8)
        assert float(tilted_mean(gmm_law, lam0)) == pytest.approx(float(tilt(gmm_law, lam0).mean()), rel=1e-12)


def test_batched_log_partition_matches_scalar_calls(gmm_law):
    lams = torch.tensor([0.0, 0.1, 0.4], dtype=torch.float64)
    batched = log_partition(gmm_law, lams)
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, torch.stack([log_partition(gmm_law, float(v)) for v in lams]))
    assert float(batched[0]) == pytest.approx(0.0, abs=1e-12)


def test_truncation_is_conditioning(gmm_law):
    hard = truncate(gmm_law, 5.0)
    assert float(hard.survival(5.0)) == pytest.approx(1.0)
    assert float(hard.mean()) == pytest.approx(float(gmm_law.truncated_mean(5.0)), rel=1e-12)
    kept = gmm_law.values >= 5.0
    assert float(hard.weights[kept].sum()) == pytest.approx(1.0) and float(hard.weights[~kept].sum()) == 0.0
    with pytest.raises(ValueError, match="above every score value"):
        truncate(gmm_law, gmm_law.upper + 1.0)


def test_calibration_hits_the_target(gmm_law):
    for t in (5.0, 6.0, 7.0):
        lam = calibrate_lambda(gmm_law, t)
        assert float(tilted_mean(gmm_law, lam)) == pytest.approx(t, abs=1e-8)
        tau = calibrate_tau(gmm_law, t)
        assert float(gmm_law.truncated_mean(tau)) == pytest.approx(t, abs=1e-3)  # piecewise constant in tau


def test_theorem_d14_identity_at_matched_mean(gmm_grid_law):
    # KL(p_tau||p) - KL(q*||p) = KL(p_tau||q*) when E_q* psi = E_{p_tau} psi (Theorem D.14),
    # exact on a quadrature grid once the mean is matched on that same grid.
    for tau in (2.0, 5.5):
        t_tau = float(gmm_grid_law.truncated_mean(tau))
        lam = calibrate_lambda(gmm_grid_law, t_tau, tol=1e-14)
        hard, soft = truncate(gmm_grid_law, tau), tilt(gmm_grid_law, lam)
        kl_hard = float(kl_truncation(gmm_grid_law.log_survival(tau)))
        kl_soft = float(kl_tilt(gmm_grid_law, lam))
        kl_gap = float(kl_weights(hard.log_weights, soft.log_weights))
        assert kl_hard - kl_soft == pytest.approx(kl_gap, abs=1e-9)
        assert kl_gap > 0


def test_pythagorean_identity_off_the_matched_mean(gmm_law):
    # general form: KL(q||p) = KL(q||q_lam) + KL(q_lam||p) + lam (E_q psi - A'(lam))
    q = truncate(gmm_law, 3.0)
    lam = 0.25
    rhs = (kl_weights(q.log_weights, tilt(gmm_law, lam).log_weights)
           + kl_tilt(gmm_law, lam)
           + lam * (q.mean() - tilted_mean(gmm_law, lam)))
    assert float(kl_weights(q.log_weights, gmm_law.log_weights)) == pytest.approx(float(rhs), rel=1e-10)


def test_matched_comparison_on_the_gaussian_equals_scipy(normal_grid):
    """Every field at t = E[Y | Y >= 1] for Y ~ N(0, 1), from scipy: tau = 1, lambda = t,
    B on the shell [1, 1.1), TV steps (Lemma D.10 and 2 Phi(eps / 2) - 1), KLs and speeds."""
    t, eps, delta = float(stats.truncnorm(1.0, math.inf).mean()), 0.05, 0.1
    row = matched_comparison(normal_grid, t, delta, eps, tol=1e-13)
    tau2 = brentq(lambda x: stats.truncnorm(x, math.inf).mean() - t - eps, 0.0, 3.0, xtol=1e-13)
    sf = stats.norm.sf
    expected = {"lam": t, "t_hard": t, "t_soft": t,
                "B_hard": 1 - sf(1.0 + delta) / sf(1.0), "B_soft": 1 - sf(1.0 + delta - t) / sf(1.0 - t),
                "TV_hard": 1 - sf(tau2) / sf(1.0), "TV_soft": 2 * stats.norm.cdf(eps / 2) - 1,
                "KL_hard": -stats.norm.logsf(1.0), "KL_soft": t**2 / 2,
                "v_hard": 1 / (t - 1.0), "v_soft": 1 / math.sqrt(2 * math.pi)}
    assert row["tau"] == pytest.approx(1.0, abs=5e-4)  # the truncated mean is flat within a 5e-4-wide cell
    # values that depend on tau move with it by up to one cell (h x 5e-4 in a mass); TV_hard has two such taus
    rel = {"TV_hard": 2e-2, "t_hard": 1e-3, "B_hard": 1e-3, "B_soft": 1e-3, "KL_hard": 1e-3, "v_hard": 1e-3}
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=rel.get(key, 1e-6)), key


def test_monte_carlo_comparison_agrees_with_the_quadrature_grid(gmm_law, gmm_grid_law):
    """The same App H.4 quantities from 20,000 prior draws and from the density grid
    agree within Monte Carlo error (binomial standard errors for the masses)."""
    mc, grid = (matched_comparison(law, 6.0, delta=0.25, eps=0.1) for law in (gmm_law, gmm_grid_law))
    n = 20_000
    s_hat = float(gmm_law.survival(mc["tau"]))
    assert mc["lam"] == pytest.approx(grid["lam"], rel=0.03)  # (tau itself sits where the score has little mass)
    assert math.exp(-mc["KL_hard"]) == pytest.approx(math.exp(-grid["KL_hard"]), abs=4 * math.sqrt(s_hat / n))
    b_se = math.sqrt(grid["B_hard"] * (1 - grid["B_hard"]) / (n * s_hat))
    assert mc["B_hard"] == pytest.approx(grid["B_hard"], abs=4 * b_se)
    # KL_soft = lambda t - A(lambda): the Monte Carlo error is that of A = log mean e^{lambda psi}
    w_N = torch.exp(grid["lam"] * gmm_law.values)
    a_se = float(w_N.std() / w_N.mean()) / math.sqrt(n)
    assert mc["KL_soft"] == pytest.approx(grid["KL_soft"], abs=4 * a_se)


def test_local_speeds_on_the_gaussian_match_lemmas_d11_d12(normal_grid):
    """v_hard = 1 / (r(tau) - tau) and v_soft = 1 / sqrt(2 pi) (eqs. 115, 123); their
    finite-step versions converge to them; bar I_soft = 1 / sqrt(2 pi) on any interval (eq. 124)."""
    tau = 0.5
    r = float(stats.truncnorm(tau, math.inf).mean())
    assert float(v_hard(normal_grid, tau)) == pytest.approx(1 / (r - tau), rel=1e-6)
    assert float(v_soft(normal_grid, r)) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-6)
    fd_hard, fd_soft = finite_step_speeds(normal_grid, tau, r, 0.002)
    assert fd_hard == pytest.approx(1 / (r - tau), rel=0.005) and fd_soft == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-4)
    assert mean_instability_soft(normal_grid, 0.5, 2.0) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-6)
    assert mean_instability_hard(normal_grid, 0.0, 2.0) == pytest.approx(
        (stats.norm.logsf(0.0) - stats.norm.logsf(2.0)) / (stats.truncnorm(2.0, math.inf).mean() - math.sqrt(2 / math.pi)),
        rel=1e-6)


def test_angular_score_law_matches_monte_carlo_and_the_cartesian_grid(gmm_law, gmm_grid_law):
    """The polar quadrature law of psi: total mass 1, mean 3 pi / 2 by the four-fold
    symmetry, survival within binomial error of 20,000 draws and close to the grid's."""
    gmm = four_mode_gmm()
    polar = angular_score_law(gmm.log_prob, math.pi / 4, 3.0, 4000)
    assert float(polar.mean()) == pytest.approx(1.5 * math.pi, rel=1e-9)
    taus = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0], dtype=torch.float64)
    s_mc = gmm_law.survival(taus)
    torch.testing.assert_close(polar.survival(taus), s_mc, atol=float(4 * (0.25 / 20_000) ** 0.5), rtol=0)
    torch.testing.assert_close(polar.survival(taus), gmm_grid_law.survival(taus), atol=2e-3, rtol=0)


def test_summarize_seeds_is_mean_and_sample_std():
    rows = [[{"t": 5.0, "B_hard": b}] for b in (0.1, 0.2, 0.6)]
    (out,) = summarize_seeds(rows)
    assert out["B_hard"] == pytest.approx(0.3) and out["B_hard_std"] == pytest.approx(float(np.std([0.1, 0.2, 0.6], ddof=1)))
    assert out["n_seeds"] == 3 and out["t_std"] == 0.0


def test_knob_perturbations_lemmas_d8_d9(gmm_law):
    lam = 0.8
    rows = knob_perturbations(gmm_law, 5.0, lam, [1e-1, 1e-3])
    assert all(r["shell_mass"] > 0 and math.isinf(r["KL_hard"]) for r in rows)  # Lemma D.8: support jump
    w, w2 = (torch.softmax(l * gmm_law.values, 0) for l in (lam, lam + 1e-3))  # uniform base weights
    var = float((w * gmm_law.values.square()).sum() - (w * gmm_law.values).sum() ** 2)
    kl = float((w * (w / w2).log()).sum())
    assert rows[1]["KL_soft_ratio"] == pytest.approx(kl / (0.5 * 1e-6 * var), rel=1e-4)
    assert rows[1]["KL_soft_ratio"] == pytest.approx(1.0, abs=0.01)  # Lemma D.9: KL ~ eps^2 Var / 2
    gaps = EmpiricalScore(torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
    empty = knob_perturbations(gaps, 0.5, 0.0, [0.2])[0]  # the shell [0.5, 0.7) holds no point
    assert empty["shell_mass"] == 0 and empty["KL_hard"] == 0
