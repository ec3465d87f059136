"""KL / TV closed forms of App D against the common-sample estimators (paper eqs. 1-2, App D)."""

from __future__ import annotations

import math

import pytest
import torch

from klsc_lib.constraints.divergences import (kl_truncation, kl_weights, pinsker_bound, tv_between_truncations,
                                              tv_unit_gaussians, tv_weights)
from klsc_lib.constraints.hard_vs_tilt import kl_between_tilts, kl_tilt, tilt, tilted_var, truncate
from klsc_lib.constraints.score_variable import StandardNormalScore


def test_kl_of_truncation_is_minus_log_survival(gmm_law):
    for tau in (1.0, 4.0, 6.5):
        direct = kl_weights(truncate(gmm_law, tau).log_weights, gmm_law.log_weights)
        assert float(direct) == pytest.approx(float(kl_truncation(gmm_law.log_survival(tau))), rel=1e-10)


def test_kl_of_tilt_closed_form(gmm_law, normal_grid):
    lam = 0.3
    direct = kl_weights(tilt(gmm_law, lam).log_weights, gmm_law.log_weights)
    closed = kl_tilt(gmm_law, lam)
    assert float(direct) == pytest.approx(float(closed), rel=1e-9)
    # Gaussian tilt: KL(N(lam,1) || N(0,1)) = lam^2 / 2
    kl_gauss = kl_tilt(normal_grid, 1.5)
    assert float(kl_gauss) == pytest.approx(1.125, rel=1e-7)


def test_pinsker_on_random_reweightings():
    gen = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 5.0):
        log_w = torch.log_softmax(scale * torch.randn(8, 300, generator=gen, dtype=torch.float64), -1)
        log_w2 = torch.log_softmax(scale * torch.randn(8, 300, generator=gen, dtype=torch.float64), -1)
        for a, b in zip(log_w, log_w2):
            assert float(tv_weights(a, b)) <= float(pinsker_bound(kl_weights(a, b))) + 1e-12


def test_lemma_d10_tv_between_truncations(gmm_law):
    for tau, tau2 in ((1.0, 1.3), (5.0, 5.01), (2.0, 8.0)):
        exact = tv_between_truncations(gmm_law.survival(tau), gmm_law.survival(tau2))
        direct = tv_weights(truncate(gmm_law, tau).log_weights, truncate(gmm_law, tau2).log_weights)
        assert float(direct) == pytest.approx(float(exact), rel=1e-10, abs=1e-14)
    with pytest.raises(ValueError, match="lower threshold first"):
        tv_between_truncations(gmm_law.survival(2.0), gmm_law.survival(1.0))


def test_lemma_d10_local_rate_is_hazard():
    # TV(p_tau, p_tau+D) = h(tau) D + o(D) (eq. 81), normal closed form
    normal, tau, d = StandardNormalScore(), 1.0, 1e-6
    rate = tv_between_truncations(normal.survival(tau), normal.survival(tau + d)) / d
    assert float(rate) == pytest.approx(float(normal.hazard(tau)), rel=1e-5)


def test_lemma_d8_truncations_are_not_kl_regular(gmm_law):
    tau, tau2 = 4.0, 4.05
    assert gmm_law.survival(tau) > gmm_law.survival(tau2)  # the shell has mass
    assert kl_weights(truncate(gmm_law, tau).log_weights, truncate(gmm_law, tau2).log_weights) == math.inf
    # the other direction is absolutely continuous: KL = log S(tau) - log S(tau2)
    back = kl_weights(truncate(gmm_law, tau2).log_weights, truncate(gmm_law, tau).log_weights)
    assert float(back) == pytest.approx(float(gmm_law.log_survival(tau) - gmm_law.log_survival(tau2)), rel=1e-10)


def test_lemma_d9_kl_between_tilts_and_its_quadratic_decay(gmm_law):
    lam = 0.2
    for d in (0.1, 0.01, 0.001):
        closed = kl_between_tilts(gmm_law, lam, lam + d)
        direct = kl_weights(tilt(gmm_law, lam).log_weights, tilt(gmm_law, lam + d).log_weights)
        assert float(closed) == pytest.approx(float(direct), rel=1e-6, abs=1e-15)
    # eq. (73): KL / (D^2 / 2) -> Var_q psi
    d = 1e-3
    ratio = 2 * float(kl_weights(tilt(gmm_law, lam).log_weights, tilt(gmm_law, lam + d).log_weights)) / d**2
    assert ratio == pytest.approx(float(tilted_var(gmm_law, lam)), rel=1e-2)


def test_tv_of_gaussian_tilts(normal_grid):
    for lam, lam2 in ((0.0, 0.1), (1.0, 2.5)):
        direct = tv_weights(tilt(normal_grid, lam).log_weights, tilt(normal_grid, lam2).log_weights)
        assert float(direct) == pytest.approx(float(tv_unit_gaussians(lam, lam2)), rel=1e-6)


def test_estimators_reject_different_samples():
    with pytest.raises(ValueError, match="same base sample"):
        kl_weights(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="same base sample"):
        tv_weights(torch.zeros(3), torch.zeros(4))
