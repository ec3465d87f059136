"""App D.4.4 Gaussian example against SciPy and quadrature: the closed forms, Prop.
D.13, eq. 118, Lemma D.7 and Theorem D.14 computed another way."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats

from klsc_lib.constraints.gaussian_example import (NORMAL, TAU_STAR, V_HARD_FLOOR, V_SOFT, anchor_row, anchor_tables,
                                                   boundary_mass_soft, interpretability_gap, max_rel_deviation,
                                                   numeric_anchor_row, scipy_anchor_row, tilted_hazard)
from klsc_lib.constraints.hard_vs_tilt import mean_instability_hard, v_hard

TAUS = (-1.0, 0.0, 0.5, 2.0, 3.0)


@pytest.mark.parametrize("tau", TAUS)
def test_closed_forms_match_scipy_truncnorm_and_quadrature(tau):
    closed, ref = anchor_row(tau, 0.1), scipy_anchor_row(tau, 0.1)
    for key in closed:
        assert closed[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-14), key


def test_truncated_variance_is_positive_and_matches_scipy():
    """Var(Y | Y >= tau) = 1 - r (r - tau) (eq. 132), so g = r - tau decreases (eq. 134)."""
    for tau in TAUS:
        r = float(NORMAL.truncated_mean(tau))
        assert 1 - r * (r - tau) == pytest.approx(stats.truncnorm(tau, math.inf).var(), rel=1e-9)
        assert 0 < 1 - r * (r - tau) < 1


def test_mean_instability_hard_equals_the_integral_of_the_local_speed():
    """eq. 116-118: the accumulated hazard equals the t-average of v_hard = 1 / m, which
    we integrate with scipy.quad over tau (dt = r'(tau) dtau, r' from finite differences)."""
    tau1, tau2 = 0.0, 2.0
    t = lambda x: float(stats.truncnorm(x, math.inf).mean())  # noqa: E731
    dt = lambda x, h=1e-5: (t(x + h) - t(x - h)) / (2 * h)  # noqa: E731
    integral = integrate.quad(lambda x: dt(x) / (t(x) - x), tau1, tau2, epsrel=1e-10)[0]
    assert mean_instability_hard(NORMAL, tau1, tau2) == pytest.approx(integral / (t(tau2) - t(tau1)), rel=1e-7)
    # and it is the accumulated hazard int h dtau over t2 - t1 (eq. 106), h = pdf / sf from scipy
    hazard = integrate.quad(lambda x: stats.norm.pdf(x) / stats.norm.sf(x), tau1, tau2, epsrel=1e-12)[0]
    assert mean_instability_hard(NORMAL, tau1, tau2) == pytest.approx(hazard / (t(tau2) - t(tau1)), rel=1e-10)


def test_prop_d13_floor_is_attained_at_zero_and_fails_below_tau_star():
    tau = torch.linspace(0.0, 10.0, 2001, dtype=torch.float64)
    v = v_hard(NORMAL, tau)
    assert float(v.min()) == pytest.approx(V_HARD_FLOOR, rel=1e-12) and bool((v[1:] > V_HARD_FLOOR).all())
    assert V_HARD_FLOOR == pytest.approx(math.pi * V_SOFT, rel=1e-15)  # a factor pi apart (eq. 136)
    # v_hard(tau*) = v_soft: solve 1 / (E[Y | Y >= tau] - tau) = 1 / sqrt(2 pi) with scipy
    from scipy.optimize import brentq
    root = brentq(lambda x: stats.truncnorm(x, math.inf).mean() - x - math.sqrt(2 * math.pi), -4.0, -1.0)
    assert root == pytest.approx(TAU_STAR, abs=1e-5)


def test_v_soft_is_half_the_mean_absolute_deviation_of_a_unit_gaussian():
    """E|Z| = sqrt(2 / pi) for Z ~ N(0, 1) (scipy's halfnorm mean), so v_soft = E|Z| / 2."""
    assert V_SOFT == pytest.approx(stats.halfnorm.mean() / 2, rel=1e-14)


def test_lemma_d7_tilted_hazard_matches_quadrature_and_is_smaller():
    for tau, lam in ((0.0, 0.5), (1.0, 2.0), (3.0, 1.0), (-1.0, 4.0)):
        upper = integrate.quad(lambda u: math.exp(stats.norm.logpdf(u) + lam * (u - tau)), tau, math.inf,
                               epsrel=1e-12)[0]
        assert float(tilted_hazard(tau, lam)) == pytest.approx(stats.norm.pdf(tau) / upper, rel=1e-9)
        assert float(tilted_hazard(tau, lam)) < float(NORMAL.hazard(tau))
        shell = integrate.quad(lambda u: stats.norm.pdf(u - lam), tau, tau + 0.1, epsrel=1e-12)[0]
        assert float(boundary_mass_soft(tau, lam, 0.1)) == pytest.approx(shell / stats.norm.sf(tau - lam), rel=1e-9)


def test_theorem_d14_gap_is_the_kl_between_truncation_and_tilt():
    """KL(p_tau || N(r, 1)) by quadrature equals -log Phi_bar(tau) - r^2 / 2."""
    for tau in (-2.0, 0.0, 1.5, 4.0):
        r = float(NORMAL.truncated_mean(tau))
        logsf = stats.norm.logsf(tau)
        kl = integrate.quad(lambda y: stats.norm.pdf(y) / math.exp(logsf)
                            * (stats.norm.logpdf(y) - logsf - stats.norm.logpdf(y, loc=r)), tau, math.inf,
                            epsrel=1e-12)[0]
        assert float(interpretability_gap(tau)) == pytest.approx(kl, rel=1e-8)
        assert kl > 0


def test_generic_numerics_on_a_quadrature_law_agree_with_scipy(normal_grid):
    for tau in (0.0, 2.0):
        num, ref = numeric_anchor_row(normal_grid, tau, 0.1), scipy_anchor_row(tau, 0.1)
        for key in ref:
            assert num[key] == pytest.approx(ref[key], rel=1e-6), key
        assert num["lam"] == pytest.approx(num["t"], rel=1e-9)  # lambda = t on the same law
        assert num["v_soft"] == pytest.approx(V_SOFT, rel=1e-6)
        assert num["gap"] == pytest.approx(num["kl_hard_soft"], abs=1e-10)


def test_anchor_tables_agree_three_ways_and_max_rel_deviation_sees_an_error(normal_grid):
    closed, scipy_rows, numeric = anchor_tables([0.0, 1.5], 0.1, normal_grid)
    assert [r["tau"] for r in closed] == [r["tau"] for r in numeric] == [0.0, 1.5]
    assert max_rel_deviation(closed, scipy_rows) < 1e-10 and max_rel_deviation(closed, numeric) < 1e-5
    off = [{**r, "KL_soft": r["KL_soft"] * 1.01} for r in closed]
    assert max_rel_deviation(closed, off) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="one row per reference row"):
        max_rel_deviation(closed, closed[:1])


def test_gaussian_table_figure_shows_both_values_per_cell():
    import matplotlib.pyplot as plt

    from klsc_lib.viz.constraints import gaussian_table_figure

    closed, numeric = [anchor_row(0.0, 0.1), anchor_row(1.0, 0.1)], [anchor_row(0.0, 0.1), anchor_row(1.0, 0.1)]
    numeric[1] = {**numeric[1], "t": 2.0}
    fig = gaussian_table_figure(closed, numeric, 1e-14, 1e-8)
    cells = fig.axes[0].tables[0].get_celld()
    assert len(cells) == 3 * 8  # header + one row per threshold, tau + 7 compared fields
    assert cells[2, 1].get_text().get_text() == f"{closed[1]['t']:.6f} | 2.000000"
    assert "vs scipy 1e-14, vs numerics 1e-08" in fig.axes[0].get_title()
    plt.close(fig)
