"""Hard truncation, KLSC tilt, log-partition and calibration (Def. 2.1-2.2, Lemma
D.4, Remark D.5, Theorem D.14, App H.3; RM §2, §7, §11)."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.constraints.calibration import calibrate_lambda, calibrate_tau, matched_comparison
from klsc_lib.constraints.divergences import kl_truncation, kl_weights
from klsc_lib.constraints.hard_vs_tilt import kl_tilt, log_partition, tilt, tilted_mean, tilted_var, truncate
from klsc_lib.constraints.score_variable import StandardNormalScore


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
    # KL(p_tau||p) - KL(q*||p) = KL(p_tau||q*) when E_q* psi = E_{p_tau} psi (RM §2, §7),
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


def test_matched_comparison_fields_are_consistent(gmm_law):
    row = matched_comparison(gmm_law, 6.0, delta=0.25, eps=0.1)
    assert row["t_soft"] == pytest.approx(6.0, abs=1e-8)
    assert row["t_hard"] == pytest.approx(6.0, abs=1e-3)
    # Theorem D.14 (up to the tiny hard-mean mismatch) and Lemma D.7 at finite delta
    assert row["KL_soft"] <= row["KL_hard"]
    assert row["B_soft"] <= row["B_hard"]
    assert 0 <= row["TV_soft"] <= 1 and 0 <= row["TV_hard"] <= 1
