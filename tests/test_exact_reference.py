"""The exact reference on a pool (klsc_lib.constraints.exact_reference) against closed
forms: the Gaussian tilt is a shifted Gaussian, the Gaussian truncation is scipy's
truncnorm, a Gaussian mixture tilted by a linear score is a reweighted, shifted mixture,
and the App H mixture with its angular score matches the quadrature law. Monte Carlo
tolerances are a few standard errors, scaling with 1 / sqrt(ESS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from klsc_lib.constraints.calibration import UnreachableTarget, calibrate_lambda
from klsc_lib.constraints.divergences import kl_weights
from klsc_lib.constraints.exact_reference import (exact_reference, first_reachable, pool_references, prior_sample_tilts, solve_tilt,
                                                  solve_truncation, tilt_at, weighted_histogram)
from klsc_lib.constraints.score_variable import EmpiricalScore
from klsc_lib.energies.toy import AngularScore
from klsc_lib.worlds.gmm import four_mode_gmm

MU, S = 1.5, 2.0


def normal_pool(n: int, seed: int = 0) -> torch.Tensor:
    return MU + S * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mean_se(q, psi_N: torch.Tensor, t: float) -> float:
    """Standard error of a self-normalised mean at level t: sqrt(sum_i w_i^2 (psi_i - t)^2)
    (delta method); the error of lambda is about this over Var_q psi."""
    return math.sqrt(float((q.w_N**2 * (psi_N - t) ** 2).sum()))


def lambda_tol(q, psi_N: torch.Tensor, t: float) -> float:
    """Five standard errors of the pool's lambda."""
    return 5 * mean_se(q, psi_N, t) / float((q.w_N * (psi_N - t) ** 2).sum())


def normal_quantile_pool(n: int) -> torch.Tensor:
    """N(MU, S^2) by its n mid-quantiles: a deterministic pool with tiny quadrature error."""
    return torch.as_tensor(stats.norm.ppf((np.arange(n) + 0.5) / n, loc=MU, scale=S))


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_gaussian_tilt_is_a_shifted_gaussian(shift):
    """q* of N(mu, s^2) under psi = x is N(mu + lambda s^2, s^2): lambda = (t - mu) / s^2,
    KL = (t - mu)^2 / (2 s^2), ESS / n -> exp(-lambda^2 s^2) (log-normal weights)."""
    n = 200_000
    t = MU + shift * S
    lam, kl = (t - MU) / S**2, (t - MU) ** 2 / (2 * S**2)
    psi = normal_pool(n)
    q = solve_tilt(psi, t)
    assert q.kind == "tilt" and q.mean_psi == pytest.approx(t, abs=1e-9)
    assert q.knob == pytest.approx(lam, abs=lambda_tol(q, psi, t))
    assert q.kl_to_prior == pytest.approx(kl, abs=5 * lam * mean_se(q, psi, t))  # dKL/dt = lambda
    assert q.ess / n == pytest.approx(math.exp(-lam**2 * S**2), rel=0.1)
    var_q = float((q.w_N * (psi - t) ** 2).sum())
    assert var_q == pytest.approx(S**2, rel=10 / math.sqrt(q.ess))
    # resampled draws are N(t, s^2)
    idx = q.resample_indices(4000, torch.Generator().manual_seed(1))
    assert stats.kstest(psi[idx].numpy(), stats.norm(t, S).cdf).pvalue > 1e-3


def test_gaussian_tilt_on_a_quantile_pool_is_exact_to_quadrature_error():
    q = solve_tilt(normal_quantile_pool(100_000), MU + 1.2 * S)
    assert q.knob == pytest.approx(1.2 / S, rel=2e-3)
    assert q.kl_to_prior == pytest.approx(1.2**2 / 2, rel=2e-3)


def truncnorm_tau(t: float) -> float:
    """tau with E[X | X >= tau] = t for X ~ N(MU, S^2), from scipy.stats.truncnorm."""
    a = optimize.brentq(lambda a: stats.truncnorm(a, np.inf, loc=MU, scale=S).mean() - t, -10, 10, xtol=1e-13)
    return MU + S * a


@pytest.mark.parametrize("shift", [0.5, 1.5])
def test_gaussian_truncation_matches_truncnorm(shift):
    t = MU + shift * S
    tau = truncnorm_tau(t)
    kl = -stats.norm.logsf(tau, loc=MU, scale=S)
    n = 200_000
    p = solve_truncation(normal_pool(n), t)
    assert p.kind == "truncation" and p.mean_psi >= t
    assert p.ess == pytest.approx(n * math.exp(-kl), rel=5 / math.sqrt(p.ess))  # ESS of a truncation = its size
    assert p.kl_to_prior == pytest.approx(kl, abs=5 / math.sqrt(p.ess))
    assert p.knob == pytest.approx(tau, abs=10 * S / math.sqrt(p.ess))
    exact = solve_truncation(normal_quantile_pool(100_000), t)
    assert exact.knob == pytest.approx(tau, abs=2e-3) and exact.kl_to_prior == pytest.approx(kl, rel=2e-3)


def test_truncation_is_the_largest_upper_set_reaching_t():
    psi = torch.tensor([0.0, 1.0, 1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    law = EmpiricalScore(psi)
    for t in (1.5, 2.0, 2.2, 3.0, 3.4, 5.0):
        p = solve_truncation(psi, t)
        below = psi[psi < p.knob]
        assert p.mean_psi >= t
        if len(below):  # one more step down would miss t
            assert float(law.truncated_mean(float(below.max()))) < t
        assert p.kl_to_prior == pytest.approx(-math.log((psi >= p.knob).double().mean()))
    assert solve_truncation(psi, 2.3).knob == 1.0  # the tie at 1.0 stays together: mean 2.4 over {1, 1, 2, 3, 5}


def test_inactive_level_gives_the_prior_with_ess_n():
    psi = normal_pool(1000)
    for q in (solve_tilt(psi, MU - 1.0), solve_truncation(psi, float(psi.mean()) - 1e-3)):
        assert q.ess == pytest.approx(1000.0, rel=1e-12)
        assert q.kl_to_prior == pytest.approx(0.0, abs=1e-12)
        assert q.w_N.sum() == pytest.approx(1.0)
    assert solve_tilt(psi, MU - 1.0).knob == 0.0


def gmm_linear_tilt(lam: float, direction: torch.Tensor) -> tuple[float, float]:
    """(E_q psi, A(lambda)) in closed form for psi = a.x on the App H mixture: the tilt of
    w_k N(mu_k, Sigma_k) is N(mu_k + lambda Sigma_k a, Sigma_k) with weight
    w_k exp(lambda a.mu_k + lambda^2 a'Sigma_k a / 2)."""
    gmm = four_mode_gmm()
    m_K = gmm.means_KD @ direction
    v_K = torch.einsum("d,kde,e->k", direction, gmm.covs_KDD, direction)
    log_w_K = gmm.weights_K.log() + lam * m_K + 0.5 * lam**2 * v_K
    w_K = torch.softmax(log_w_K, 0)
    return float((w_K * (m_K + lam * v_K)).sum()), float(torch.logsumexp(log_w_K, 0))


def test_gmm_linear_score_tilt_matches_the_closed_form():
    direction = torch.tensor([0.6, 0.8], dtype=torch.float64)
    x_ND = four_mode_gmm().sample(200_000, generator=torch.Generator().manual_seed(3))
    t = 2.5
    lam = optimize.brentq(lambda l: gmm_linear_tilt(l, direction)[0] - t, 0.0, 10.0, xtol=1e-13)
    kl = lam * t - gmm_linear_tilt(lam, direction)[1]
    psi = x_ND @ direction
    q = solve_tilt(psi, t)
    assert q.knob == pytest.approx(lam, abs=lambda_tol(q, psi, t))
    assert q.kl_to_prior == pytest.approx(kl, abs=5 * lam * mean_se(q, psi, t))


def test_gmm_angular_score_matches_the_quadrature_law(gmm_grid_law):
    """Notebook 01's prior and score (App H): the pool solution against the 2-D quadrature
    law's lambda (calibrate_lambda, a bisection independent of Brent's method here); the
    grid's own error (~1e-3 relative) adds to the Monte Carlo tolerance."""
    psi = AngularScore()(four_mode_gmm().sample(100_000, generator=torch.Generator().manual_seed(4)))
    for t in (5.0, 6.0):
        lam = calibrate_lambda(gmm_grid_law, t)
        q = solve_tilt(psi, t)
        assert q.knob == pytest.approx(lam, abs=lambda_tol(q, psi, t) + 1e-3 * lam)


def test_theorem_d14_and_the_kl_identity_hold_exactly_on_a_pool():
    """KL(p_tau || p) = KL(p_tau || q*) + KL(q* || p) + lambda (E_{p_tau} psi - t) (eqs. 51-55,
    Theorem D.14), exactly for the pool's weights; so the truncation costs more KL."""
    psi = torch.as_tensor(np.random.default_rng(0).gamma(2.0, 1.0, 50_000))
    ref = exact_reference(psi, 4.0)
    q, p = ref.tilt, ref.truncation
    rhs = float(kl_weights(p.log_w_N, q.log_w_N)) + q.kl_to_prior + q.knob * (p.mean_psi - ref.t)
    assert p.kl_to_prior == pytest.approx(rhs, rel=1e-9)
    assert q.kl_to_prior < p.kl_to_prior


def test_large_lambda_and_large_scores_stay_finite():
    psi = 1000.0 * normal_pool(10_000)  # e^{lambda psi} overflows without log-sum-exp
    t = float(psi.sort().values[-3])  # just below the top: lambda large, weights on a few points
    q = solve_tilt(psi, t)
    assert math.isfinite(q.knob) and torch.isfinite(q.log_w_N.exp()).all()
    assert q.mean_psi == pytest.approx(t, rel=1e-9) and 1.0 <= q.ess < 10.0
    shifted = solve_tilt(psi + 1e6, t + 1e6)  # invariant under a shift of psi
    assert shifted.knob == pytest.approx(q.knob, rel=1e-6)


def test_prior_samples_are_reweighted_at_the_same_level_and_the_same_lambda():
    """A learned prior N(mu + 0.3, s^2): its own tilt at t has lambda (t - mu - 0.3) / s^2;
    q*'s lambda moves it to mean t + 0.3 (the Gaussian tilt shifts every mean by lambda s^2)."""
    t = MU + S
    ref = exact_reference(normal_pool(100_000), t)
    psi_prior = normal_pool(100_000, seed=9) + 0.3
    at_t, at_lambda = prior_sample_tilts(psi_prior, ref)
    assert at_t.mean_psi == pytest.approx(t) and at_lambda.knob == ref.tilt.knob
    assert at_t.knob == pytest.approx((t - MU - 0.3) / S**2, abs=lambda_tol(at_t, psi_prior, t))
    assert at_lambda.mean_psi == pytest.approx(t + 0.3, abs=5 * mean_se(at_lambda, psi_prior, t + 0.3))
    with pytest.raises(UnreachableTarget):
        prior_sample_tilts(psi_prior[:10], exact_reference(normal_pool(100_000), float(psi_prior[:10].max())))


def test_histograms_and_resampling_follow_the_weights():
    psi = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    q = solve_tilt(psi, 2.0)
    factor = torch.tensor([0, 1, 1, 2])
    h = q.histogram(factor, 3)
    assert h.sum() == pytest.approx(1.0)
    assert h[1] == pytest.approx(float(q.w_N[1] + q.w_N[2]))
    idx = q.resample_indices(200_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(idx, minlength=4).double() / len(idx)
    assert torch.allclose(freq, q.w_N, atol=5 / math.sqrt(len(idx)))
    p = solve_truncation(psi, 2.5)
    assert set(p.resample_indices(100, torch.Generator().manual_seed(0)).tolist()) <= {2, 3}


def test_bad_input_raises_with_a_way_out():
    psi = normal_pool(100)
    with pytest.raises(UnreachableTarget, match="larger pool or lower t"):
        solve_tilt(psi, float(psi.max()))
    with pytest.raises(ValueError, match="larger pool or lower t"):
        solve_truncation(psi, float(psi.max()) + 1)
    bad = psi.clone()
    bad[7] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite.*index 7"):
        exact_reference(bad, MU)
    with pytest.raises(ValueError, match="1-D"):
        solve_tilt(psi.reshape(10, 10), MU)
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        tilt_at(psi, -1.0)
    with pytest.raises(ValueError, match=r"ids in \[0, 2\)"):
        weighted_histogram(torch.tensor([0, 2]), torch.ones(2), 2)


def test_pool_references_solve_each_unit_and_name_the_unreachable_one():
    psi_NU = torch.stack([normal_pool(5000), normal_pool(5000, seed=1) * 2], dim=1)
    refs = pool_references(psi_NU, torch.tensor([MU + 1.0, 2 * MU + 1.0]))
    assert [r.tilt.mean_psi for r in refs] == pytest.approx([MU + 1.0, 2 * MU + 1.0])
    assert torch.equal(refs[1].psi_N, psi_NU[:, 1])
    with pytest.raises(UnreachableTarget, match="unit at position 1: .*larger pool"):
        pool_references(psi_NU, torch.tensor([MU, 1e6]))
    with pytest.raises(ValueError, match="one target per unit"):
        pool_references(psi_NU, torch.tensor([MU]))


def test_first_reachable_keeps_exactly_the_units_whose_tilt_exists_in_order():
    psi_NU = torch.tensor([[0.0, 1.0, 2.0, 0.3], [1.0, 3.0, 0.5, 0.2], [0.5, 0.0, 1.0, 0.1]])
    target_U = torch.tensor([1.0, 2.9, 0.1, 0.4])  # unit 0 at its max, unit 3 above it: neither has a tilt
    for u in range(4):  # the rule agrees with the solver itself
        exists = True
        try:
            solve_tilt(psi_NU[:, u], float(target_U[u]))
        except UnreachableTarget:
            exists = False
        assert exists == (u in (1, 2))
    assert first_reachable(psi_NU, target_U, 2).tolist() == [1, 2]
    assert first_reachable(psi_NU, target_U, 1).tolist() == [1]
    with pytest.raises(UnreachableTarget, match="only 2 of 4 units.*larger pool"):
        first_reachable(psi_NU, target_U, 3)
    with pytest.raises(ValueError, match="one target per unit"):
        first_reachable(psi_NU, target_U[:3], 1)
