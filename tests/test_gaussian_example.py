"""App D.4.4 Gaussian example: RM §6 anchors, Prop. D.13, Lemma D.7, Theorem D.14."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.constraints.gaussian_example import (NORMAL, RM6_ANCHOR_DELTA, RM6_ANCHORS, RM6_MEAN_INSTABILITY_HARD_0_2,
                                       V_HARD_FLOOR, V_SOFT, anchor_row, interpretability_gap, mean_instability_hard,
                                       normal_quadrature_law, numeric_anchor_row, tilted_hazard, v_hard)


@pytest.mark.parametrize("tau", sorted(RM6_ANCHORS))
def test_rm6_anchor_values_from_closed_forms(tau):
    row = anchor_row(tau, RM6_ANCHOR_DELTA)
    for key, value in RM6_ANCHORS[tau].items():
        assert row[key] == pytest.approx(value, abs=6e-7), key  # anchors are rounded to 6 decimals


def test_mean_instability_hard_anchor_and_integral():
    assert mean_instability_hard(0.0, 2.0) == pytest.approx(RM6_MEAN_INSTABILITY_HARD_0_2, abs=6e-7)
    # eq. (116): the same value as the t-average of v_hard along t = r(tau)
    tau = torch.linspace(0.0, 2.0, 20001, dtype=torch.float64)
    t = NORMAL.truncated_mean(tau)
    average = float(torch.trapezoid(v_hard(tau), t) / (t[-1] - t[0]))
    assert average == pytest.approx(mean_instability_hard(0.0, 2.0), rel=1e-7)


def test_prop_d13_hard_faster_than_soft_for_nonnegative_tau():
    tau = torch.linspace(0.0, 10.0, 2001, dtype=torch.float64)
    assert float(v_hard(tau).min()) >= V_HARD_FLOOR - 1e-12
    assert float(v_hard(torch.tensor(0.0))) == pytest.approx(V_HARD_FLOOR, rel=1e-12)
    assert V_HARD_FLOOR > V_SOFT
    # RM §6 caveat: the ordering fails far below the mean (tau < tau* ~ -2.488)
    assert float(v_hard(torch.tensor(-3.0))) < V_SOFT < float(v_hard(torch.tensor(-2.0)))


def test_lemma_d7_tilted_hazard_never_exceeds_hazard():
    tau, lam = torch.meshgrid(torch.linspace(-2, 5, 71, dtype=torch.float64),
                              torch.linspace(0, 5, 51, dtype=torch.float64), indexing="ij")
    diff = tilted_hazard(tau, lam) - NORMAL.hazard(tau)
    assert float(diff.max()) <= 1e-12
    assert bool((diff[:, 1:] < 0).all())  # strict for lambda > 0


def test_theorem_d14_gap_is_nonnegative_closed_form():
    tau = torch.linspace(-3.0, 6.0, 91, dtype=torch.float64)
    assert float(interpretability_gap(tau).min()) > 0


def test_numerics_agree_with_closed_forms():
    law = normal_quadrature_law(-12.0, 16.0, 56_000)
    for tau in (0.0, 2.0):
        num, closed = numeric_anchor_row(law, tau, 0.1), anchor_row(tau, 0.1)
        for key in closed:
            assert num[key] == pytest.approx(closed[key], rel=1e-6), key
        assert num["lam"] == pytest.approx(num["t"], rel=1e-9)  # the tilt at level t has lambda = t
        assert num["v_soft"] == pytest.approx(V_SOFT, rel=1e-6)
        assert num["gap"] == pytest.approx(num["kl_hard_soft"], abs=1e-10)
        assert num["kl_hard_soft"] == pytest.approx(float(interpretability_gap(tau)), rel=1e-6)
    assert math.isfinite(num["KL_hard"])
