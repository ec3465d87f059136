"""The 1-D score-variable view (App D.2-D.4): empirical laws against
hand-computed values and against the standard-normal closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.constraints.score_variable import EmpiricalScore, StandardNormalScore, inverse_mills_ratio, midpoint_grid_2d

NORMAL = StandardNormalScore()
TAUS = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0], dtype=torch.float64)


def test_hazard_of_standard_normal_is_inverse_mills_ratio():
    direct = NORMAL.pdf(TAUS) / NORMAL.survival(TAUS)
    torch.testing.assert_close(NORMAL.hazard(TAUS), direct, rtol=1e-12, atol=0)
    torch.testing.assert_close(inverse_mills_ratio(TAUS), direct, rtol=1e-12, atol=0)


def test_inverse_mills_ratio_far_tail_asymptotics():
    # eq. (137): r(tau) = tau + 1/tau - 2/tau^3 + O(tau^-5), where a naive phi / Phi_bar is 0/0.
    tau = torch.tensor([40.0, 60.0], dtype=torch.float64)
    err = (inverse_mills_ratio(tau) - (tau + 1 / tau - 2 / tau**3)).abs()
    assert bool((err <= 11 / tau**5).all()) and bool((err > 0).all())  # next term is +10 / tau^5


def test_normal_truncated_mean_and_mrl_identities():
    # t_hard = r (eq. 113), m = r - tau (eq. 114), m' = h m - 1 (Lemma D.11) by finite differences.
    tau = TAUS.clone()
    step = 1e-5
    dm = (NORMAL.mean_residual_life(tau + step) - NORMAL.mean_residual_life(tau - step)) / (2 * step)
    torch.testing.assert_close(dm, NORMAL.hazard(tau) * NORMAL.mean_residual_life(tau) - 1, rtol=0, atol=1e-8)


def test_empirical_law_hand_values():
    law = EmpiricalScore(torch.tensor([2.0, 1.0, 3.0, 2.0]), torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    # the upper set A_tau = {psi >= tau} includes its boundary (Def. 2.1)
    assert float(law.survival(2.0)) == pytest.approx(0.8)
    assert float(law.cdf(2.0)) == pytest.approx(0.2)
    assert float(law.survival(3.5)) == 0.0 and float(law.survival(0.0)) == pytest.approx(1.0)
    assert float(law.truncated_mean(2.0)) == pytest.approx((0.1 * 2 + 0.3 * 3 + 0.4 * 2) / 0.8)
    assert float(law.mean_residual_life(1.5)) == pytest.approx((0.1 * 2 + 0.3 * 3 + 0.4 * 2) / 0.8 - 1.5)
    assert float(law.boundary_mass(2.0, 0.5)) == pytest.approx(0.5 / 0.8)
    assert float(law.mean()) == pytest.approx(0.2 + 0.2 + 0.9 + 0.8)
    assert (law.lower, law.upper) == (1.0, 3.0)


def test_empirical_law_is_permutation_invariant_and_keeps_order():
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(500, generator=gen, dtype=torch.float64)
    log_w = torch.randn(500, generator=gen, dtype=torch.float64)
    perm = torch.randperm(500, generator=gen)
    a, b = EmpiricalScore(values, log_w), EmpiricalScore(values[perm], log_w[perm])
    torch.testing.assert_close(a.survival(TAUS), b.survival(TAUS))
    torch.testing.assert_close(a.truncated_mean(TAUS), b.truncated_mean(TAUS), equal_nan=True)
    torch.testing.assert_close(a.log_weights[perm], b.log_weights)  # weights stay with their samples
    assert float(a.weights.sum()) == pytest.approx(1.0)


def test_quadrature_law_matches_normal_closed_forms(normal_grid):
    torch.testing.assert_close(normal_grid.survival(TAUS), NORMAL.survival(TAUS), rtol=1e-6, atol=0)
    torch.testing.assert_close(normal_grid.truncated_mean(TAUS), NORMAL.truncated_mean(TAUS), rtol=1e-6, atol=0)
    torch.testing.assert_close(normal_grid.mean_residual_life(TAUS), NORMAL.mean_residual_life(TAUS), rtol=1e-6, atol=0)
    torch.testing.assert_close(normal_grid.boundary_mass(TAUS, 0.1), NORMAL.boundary_mass(TAUS, 0.1), rtol=1e-6, atol=0)
    assert float(normal_grid.var()) == pytest.approx(1.0, rel=1e-7)


def test_shell_hazard_converges_to_hazard(normal_grid):
    # Lemma D.6 eq. (64): B_delta / delta -> h(tau) as delta -> 0, with O(delta) error.
    errors = [float((normal_grid.hazard(1.0, d) - NORMAL.hazard(1.0)).abs()) for d in (0.1, 0.01)]
    assert errors[1] < errors[0] / 5
    assert errors[1] < 2e-2


def test_grid_2d_covers_square_with_unit_mass():
    x_GD, log_cell = midpoint_grid_2d(3.0, 60)
    assert x_GD.shape == (3600, 2)
    assert math.exp(log_cell) * 3600 == pytest.approx(36.0)
    # image layout: x1 varies along a row, x2 along a column
    img = x_GD.reshape(60, 60, 2)
    assert torch.all(img[0, 1:, 0] > img[0, :-1, 0]) and torch.all(img[1:, 0, 1] > img[:-1, 0, 1])


@pytest.mark.parametrize("values, log_w, match", [
    (torch.tensor([1.0, math.nan]), None, "NaN"),
    (torch.tensor([1.0, 2.0]), torch.zeros(3), "shape"),
    (torch.zeros(2, 2), None, "1-D"),
    (torch.tensor([1.0, 2.0]), torch.full((2,), -math.inf), "mass"),
])
def test_bad_input_is_rejected_clearly(values, log_w, match):
    with pytest.raises(ValueError, match=match):
        EmpiricalScore(values, log_w)
