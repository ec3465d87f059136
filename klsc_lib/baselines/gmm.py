"""The sampling paradigms EnergyDPS is compared with (paper Sec 2.2.3-2.2.4, App E,
F, I.1-I.2), each with a single knob.

- Retrieval (Sec 2.2.4 Methodology I, I.1 eq. 206): the top-k of a finite prior pool
  by psi; knob k, found by a prefix search on the sorted pool. Lemma F.1: the
  tilted empirical measure (eq. 17) has support only on the pool.
- Optimisation with regularisation (Methodology II, eq. 18, I.2 eq. 207): multi-start
  projected gradient ascent of psi - beta R in a box; knob beta.
- Prompt proxy (Methodology III, eqs. 20-23, Theorem F.7): guidance only through a
  low-dimensional prompt family. Here a "prompt" picks mixing weights over a fixed
  set of conditioning components (the GMM modes: a class/concept-conditional
  prior), p_w = sum_k w_k N(mu_k, Sigma_k); the within-family KL-minimal member at
  level t reweights the components, w ∝ pi_k e^{lambda m_k} with m_k = E_{N_k} psi;
  knob lambda.

Scores are :class:`~klsc_lib.energies.Energy` objects or plain callables x -> psi_B;
the task term of object drift is :func:`klsc_lib.energies.reference_energy`.
"""

from __future__ import annotations

from typing import Callable

import torch

from klsc_lib.constraints.calibration import Calibrated, solve_scalar
from klsc_lib.diffusion.gmm_oracle import GaussianMixture
from klsc_lib.analysis.kde import Grid2D
from klsc_lib.energies.base import ScoreFn as Score

# ---- Methodology I: retrieval -------------------------------------------------------------

def top_k_retrieval(pool_ND: torch.Tensor, psi_N: torch.Tensor, k: int) -> torch.Tensor:
    """The k pool points with the largest psi (I.1)."""
    if not 1 <= k <= len(pool_ND):
        raise ValueError(f"k must be in [1, {len(pool_ND)}] (the pool size), got {k}")
    return pool_ND[torch.topk(psi_N, k).indices]


def resample_uniform(samples_ND: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from the uniform law on a finite set of samples (retrieval's induced
    distribution), so that every method is scored on the same sample budget n;
    without replacement when the set is large enough."""
    idx = (torch.randperm(len(samples_ND), generator=generator)[:n] if len(samples_ND) >= n
           else torch.randint(len(samples_ND), (n,), generator=generator))
    return samples_ND[idx.to(samples_ND.device)]


def calibrate_top_k(pool_ND: torch.Tensor, psi_N: torch.Tensor, target: float, tol: float) -> Calibrated:
    """Prefix search (eq. 206): the k whose top-k mean of psi is closest to ``target``.
    The prefix mean falls from max psi (k = 1) to the pool mean (k = N); a target
    outside that range, or no prefix within ``tol``, is reported as unreachable."""
    order = torch.argsort(psi_N, descending=True)
    prefix_mean_N = psi_N[order].cumsum(0) / torch.arange(1, len(psi_N) + 1, dtype=psi_N.dtype)
    gap_N = (prefix_mean_N - target).abs()
    k = int(gap_N.argmin()) + 1
    mean = float(prefix_mean_N[k - 1])
    attainable = (float(prefix_mean_N[-1]), float(prefix_mean_N[0]))
    if gap_N[k - 1] > tol:
        return Calibrated("retrieval", target, None, None, None, False,
                          f"retrieval: target {target:.4g} outside the attainable top-k means "
                          f"[{attainable[0]:.4g}, {attainable[1]:.4g}] of a pool of {len(psi_N)}", attainable)
    return Calibrated("retrieval", target, float(k), pool_ND[order[:k]], mean, True, attainable=attainable)


# ---- Methodology II: optimisation with regularisation --------------------------------------

def y_axis_regularizer(x_BD: torch.Tensor) -> torch.Tensor:
    """R(x) = x_(2)^2, the toy regulariser of eq. (207) (depends only on the y-coordinate)."""
    return x_BD[:, 1].square()


def uniform_box_starts(n: int, box: tuple[float, float], dim: int = 2,
                       generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n restarts uniform in [box[0], box[1]]^dim (I.2)."""
    lo, hi = box
    return lo + (hi - lo) * torch.rand(n, dim, generator=generator, dtype=dtype)


def y_axis_prox(x_BD: torch.Tensor, step: float) -> torch.Tensor:
    """prox_{step R}(x) for R(x) = x_(2)^2: argmin_z step z_(2)^2 + ||z - x||^2 / 2, i.e. the
    y-coordinate shrunk by 1 / (1 + 2 step); stable for any step (unlike a gradient step
    on beta R, which diverges once lr * beta >= 1)."""
    out = x_BD.clone()
    out[:, 1] = x_BD[:, 1] / (1 + 2 * step)
    return out


def optimize_regularized(psi: Score, regularizer: Score | None, beta: float, starts_BD: torch.Tensor, steps: int,
                         lr: float, box: tuple[float, float],
                         prox: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
    """x* = argmax psi(x) - beta R(x) (eq. 18) from every start (one independent run per
    row), iterates clamped to the box (I.2): projected gradient ascent on psi - beta R, or,
    with ``prox`` (the proximal map of R, e.g. :func:`y_axis_prox`), proximal gradient
    ascent x <- prox(x + lr grad psi, lr beta), which stays stable for large beta."""
    if prox is None and regularizer is None:
        raise ValueError("give the regularizer R or its proximal map prox")
    x = starts_BD.detach().clone()
    for step in range(steps):
        x.requires_grad_(True)
        objective_B = psi(x) if prox is not None else psi(x) - beta * regularizer(x)
        (grad,) = torch.autograd.grad(objective_B.sum(), x)
        if not torch.isfinite(grad).all():
            raise FloatingPointError(f"non-finite gradient of psi - beta R at ascent step {step} (beta={beta}); "
                                     "psi is not differentiable where an iterate landed")
        x = x.detach() + lr * grad
        x = (prox(x, lr * beta) if prox is not None else x).clamp(*box)
    return x.detach()


# ---- Methodology III: prompt proxy --------------------------------------------------------

def prompt_family_weights(prior_weights_K: torch.Tensor, component_means_K: torch.Tensor,
                          lam: float) -> torch.Tensor:
    """w_k ∝ pi_k e^{lambda m_k}: the KL-minimal prompt at its level when the
    components barely overlap (KL(p_w||p) ~ sum_k w_k log(w_k / pi_k))."""
    return torch.softmax(prior_weights_K.log() + lam * component_means_K, dim=0)


def prompt_conditioned_gmm(gmm: GaussianMixture, weights_K: torch.Tensor) -> GaussianMixture:
    """The prompt-conditioned prior p(. | c): the same components, mixing weights w."""
    return GaussianMixture(gmm.means_KD, gmm.covs_KDD, weights_K / weights_K.sum())


def calibrate_prompt_weights(prior_weights_K: torch.Tensor, component_means_K: torch.Tensor, target: float,
                             lo: float = 0.0, hi: float = 50.0) -> tuple[float, torch.Tensor]:
    """(lambda, w) with sum_k w_k m_k = target; the best any prompt can do is max_k m_k,
    beyond which :class:`~klsc_lib.constraints.calibration.UnreachableTarget` is raised."""
    lam = solve_scalar(
        lambda l: float((prompt_family_weights(prior_weights_K, component_means_K, l) * component_means_K).sum()),
        target, lo, hi, what="prompt strength lambda")
    return lam, prompt_family_weights(prior_weights_K, component_means_K, lam)


class PromptFamily:
    """The prompt-restricted family {p_w = sum_k w_k N(mu_k, Sigma_k)} (eq. 21) and the
    unrestricted KLSC tilt q_lambda ∝ p e^{lambda psi}, both by quadrature on one 2-D
    grid, so KL(p_w||p), KL(q_lambda||p) and KL(p_w||q_lambda) of Theorem F.7 carry no
    Monte Carlo noise. The grid must cover the prior's mass (check ``prior_mass``)."""

    def __init__(self, gmm: GaussianMixture, psi: Score, grid: Grid2D):
        if gmm.dim != 2:
            raise ValueError("PromptFamily integrates on a 2-D grid; the mixture must be 2-D")
        gmm = gmm.to("cpu", torch.float64)
        self.gmm, self.cell_area = gmm, grid.cell_area
        points_GD = grid.points_GD
        self.psi_G = psi(points_GD)
        self.log_prior_G = gmm.log_prob(points_GD)
        self.log_comp_GK = gmm.component_log_prob(points_GD) - gmm.weights_K.log()  # log N_k, weights removed
        self.prior_mass = float(self.log_prior_G.exp().sum() * self.cell_area)

    def _integrate(self, f_G: torch.Tensor) -> float:
        return float(f_G.sum() * self.cell_area)

    @property
    def component_means_K(self) -> torch.Tensor:
        """m_k = E_{N_k} psi."""
        dens_GK = self.log_comp_GK.exp()
        return (dens_GK * self.psi_G.unsqueeze(1)).sum(0) / dens_GK.sum(0)

    def log_density(self, weights_K: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.log_comp_GK + weights_K.clamp(min=1e-300).log(), dim=1)

    def mean_psi(self, weights_K: torch.Tensor) -> float:
        return float((weights_K * self.component_means_K).sum())

    def kl_to_prior(self, weights_K: torch.Tensor) -> float:
        log_q_G = self.log_density(weights_K)
        return self._integrate(log_q_G.exp() * (log_q_G - self.log_prior_G))

    def tilt_log_density(self, lam: float) -> torch.Tensor:
        log_u_G = self.log_prior_G + lam * self.psi_G
        return log_u_G - torch.logsumexp(log_u_G, dim=0) + self.log_prior_G.new_tensor(1.0 / self.cell_area).log()

    def tilt_lambda(self, target: float, hi: float = 50.0) -> float:
        """lambda* with E_{q_lambda} psi = target (eq. 61 is increasing in lambda)."""
        return solve_scalar(lambda lam: self._integrate(self.tilt_log_density(lam).exp() * self.psi_G),
                            target, 0.0, hi, what="tilt strength lambda")

    def tilt_kl_to_prior(self, lam: float) -> float:
        log_q_G = self.tilt_log_density(lam)
        return self._integrate(log_q_G.exp() * (log_q_G - self.log_prior_G))

    def kl_to_tilt(self, weights_K: torch.Tensor, lam: float) -> float:
        """KL(p_w || q_lambda), the floor term of eq. (175)."""
        log_q_G = self.log_density(weights_K)
        return self._integrate(log_q_G.exp() * (log_q_G - self.tilt_log_density(lam)))

    def best_weights(self, target: float) -> torch.Tensor:
        """argmin_w KL(p_w||p) s.t. E_{p_w} psi >= target over the simplex (eq. 22), by SLSQP
        started from the component tilt :func:`calibrate_prompt_weights`."""
        from scipy.optimize import minimize

        _, w0 = calibrate_prompt_weights(self.gmm.weights_K, self.component_means_K, target)
        to_w = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
        res = minimize(lambda v: self.kl_to_prior(to_w(v)), w0.numpy(), method="SLSQP",
                       bounds=[(0.0, 1.0)] * len(w0),
                       constraints=[{"type": "eq", "fun": lambda v: float(v.sum() - 1.0)},
                                    {"type": "ineq", "fun": lambda v: self.mean_psi(to_w(v)) - target}],
                       options={"ftol": 1e-14, "maxiter": 300})
        w = to_w(res.x).clamp(min=0.0)
        return w / w.sum()
