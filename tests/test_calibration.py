"""Calibration solvers (Remark D.5, App H.3 eqs. 198-201, App I) against closed forms,
Brent's method and scalar loops."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from scipy import stats

from klsc_lib.constraints.calibration import (UnreachableTarget, bisect, calibrate_knob, calibrate_lambda,
                                              calibrate_tau, solve_scalar)
from klsc_lib.constraints.hard_vs_tilt import tilted_mean
from klsc_lib.constraints.score_variable import StandardNormalScore


def test_bisection_and_brent_find_a_known_root():
    assert float(bisect(torch.tanh, 0.5, 0.0, 5.0, tol=1e-13)) == pytest.approx(math.atanh(0.5), abs=1e-12)
    assert solve_scalar(math.tanh, 0.5, 0.0, 5.0) == pytest.approx(math.atanh(0.5), abs=1e-12)


def test_decreasing_response():
    """exp(-x) = y at x = -log y; both solvers accept a non-increasing response."""
    y = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
    got = bisect(lambda x: torch.exp(-x), y, 0.0, 10.0, increasing=False, tol=1e-13)
    torch.testing.assert_close(got, -torch.log(y), atol=1e-12, rtol=0)
    assert solve_scalar(lambda x: math.exp(-x), 0.5, 0.0, 10.0) == pytest.approx(math.log(2), abs=1e-12)


def test_gaussian_tilt_lambda_equals_t(normal_grid):
    """Y ~ N(0, 1): q_lambda = N(lambda, 1), so lambda(t) = t exactly (eqs. 119-121).
    Vectorised bisection, Brent on the same response and the closed form agree."""
    t = torch.tensor([0.25, 1.0, 2.0, 3.5], dtype=torch.float64)
    lam = calibrate_lambda(normal_grid, t, lam_max=10.0, tol=1e-13)
    torch.testing.assert_close(lam, t, atol=1e-8, rtol=0)  # quadrature error of the grid, not the solver
    for ti, li in zip(t.tolist(), lam.tolist()):
        brent = solve_scalar(lambda x: float(tilted_mean(normal_grid, x)), ti, 0.0, 10.0)
        assert brent == pytest.approx(li, abs=1e-11)


def test_vectorised_calibration_equals_scalar_loop(gmm_law):
    t = torch.tensor([4.9, 5.0, 6.0, 7.0], dtype=torch.float64)
    lam_vec, tau_vec = calibrate_lambda(gmm_law, t), calibrate_tau(gmm_law, t)
    lam_loop = torch.tensor([calibrate_lambda(gmm_law, float(v)) for v in t], dtype=torch.float64)
    tau_loop = torch.tensor([calibrate_tau(gmm_law, float(v)) for v in t], dtype=torch.float64)
    torch.testing.assert_close(lam_vec, lam_loop, atol=1e-9, rtol=0)
    torch.testing.assert_close(tau_vec, tau_loop, atol=1e-9, rtol=0)
    assert isinstance(calibrate_lambda(gmm_law, 6.0), float)  # a float in, a float out


def test_calibrate_tau_matches_scipy_truncnorm():
    """E[Y | Y >= tau] = t for N(0, 1): the truncated mean from scipy, inverted."""
    t = torch.tensor([0.8, 1.5, 3.0], dtype=torch.float64)
    tau = calibrate_tau(StandardNormalScore(), t, lo=-10.0, hi=20.0, tol=1e-13)
    for ti, taui in zip(t.tolist(), tau.tolist()):
        assert stats.truncnorm(taui, math.inf).mean() == pytest.approx(ti, abs=1e-9)


def test_inactive_levels_give_no_constraint(gmm_law):
    t = torch.tensor([float(gmm_law.mean()) - 1.0, 6.0], dtype=torch.float64)
    lam, tau = calibrate_lambda(gmm_law, t), calibrate_tau(gmm_law, t)
    assert float(lam[0]) == 0.0 and float(tau[0]) == gmm_law.lower and float(lam[1]) > 0


def test_unreachable_targets_name_the_range():
    with pytest.raises(UnreachableTarget, match=r"attainable range \[0, 1\] of lambda in \[0, 3\]"):
        bisect(lambda x: x.clamp(max=1.0), torch.tensor([0.5, 2.0]), 0.0, 3.0, what="lambda")
    with pytest.raises(UnreachableTarget, match=r"attainable range \[0, 1\] of beta"):
        solve_scalar(lambda x: min(x, 1.0), 2.0, 0.0, 3.0, what="beta")


def test_unreachable_tilt_level_raises(gmm_law):
    with pytest.raises(UnreachableTarget, match="lambda"):
        calibrate_lambda(gmm_law, gmm_law.upper + 0.1)
    with pytest.raises(UnreachableTarget, match="tau"):
        calibrate_tau(gmm_law, gmm_law.upper + 0.1)
    with pytest.raises(UnreachableTarget):
        calibrate_lambda(gmm_law, 8.0, lam_max=0.05)  # reachable, but not within the bracket


def test_endpoint_targets_are_reachable():
    assert float(bisect(lambda x: x, 0.0, 0.0, 1.0, tol=1e-9)) == pytest.approx(0.0, abs=1e-8)
    assert solve_scalar(lambda x: x, 1.0, 0.0, 1.0) == 1.0


def test_calibrate_knob_keeps_only_the_closest_sample_set():
    """mean psi = knob; every sample set but the returned one is freed (weak references die)."""
    drawn: list[weakref.ref] = []

    def draw(knob: float) -> torch.Tensor:
        x = torch.full((4, 1), knob, dtype=torch.float64)
        drawn.append(weakref.ref(x))
        return x

    res = calibrate_knob(draw, lambda x: x[:, 0], 0.3, 0.0, 1.0, tol=1e-3, method="toy")
    gc.collect()
    assert res.reached and abs(res.mean_psi - 0.3) <= 1e-3 and res.knob == pytest.approx(0.3, abs=1e-3)
    assert float(res.samples.mean()) == res.mean_psi
    alive = [r() for r in drawn if r() is not None]
    assert len(drawn) > 3 and len(alive) == 1 and alive[0] is res.samples
    assert res.attainable == (0.0, 1.0)
