"""The toy prior of App H / I: a 2-D Gaussian mixture and its angular intrinsic
score, plus the DDPM-noised mixture whose score is the exact oracle of App I.3.

Defaults are App H's suggestions (the paper's constants were stripped): four
modes at (+-2, +-2), isotropic std 0.6, uniform weights, theta_0 = pi/4, scale 3.
Every constant is a constructor argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k)  (eq. 194; noised form eq. 209)."""

    means_KD: torch.Tensor
    covs_KDD: torch.Tensor
    weights_K: torch.Tensor

    def __post_init__(self) -> None:
        K, D = self.means_KD.shape
        if self.covs_KDD.shape != (K, D, D) or self.weights_K.shape != (K,):
            raise ValueError(f"shapes: means {tuple(self.means_KD.shape)}, covs {tuple(self.covs_KDD.shape)}, "
                             f"weights {tuple(self.weights_K.shape)}; expected (K,D), (K,D,D), (K,)")
        if not torch.isclose(self.weights_K.sum(), self.weights_K.new_tensor(1.0), atol=1e-6):
            raise ValueError("mixture weights must sum to 1")

    @property
    def dim(self) -> int:
        return self.means_KD.shape[1]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        return GaussianMixture(self.means_KD.to(device, dtype), self.covs_KDD.to(device, dtype),
                               self.weights_K.to(device, dtype))

    def _components(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.means_KD, covariance_matrix=self.covs_KDD)

    def component_log_prob(self, x_BD: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, Sigma_k), shape (B, K)."""
        return self._components().log_prob(x_BD.unsqueeze(-2)) + self.weights_K.log()

    def log_prob(self, x_BD: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x_BD), dim=-1)

    def responsibilities(self, x_BD: torch.Tensor) -> torch.Tensor:
        """gamma_k(x), eq. (210), shape (B, K)."""
        return torch.softmax(self.component_log_prob(x_BD), dim=-1)

    def score(self, x_BD: torch.Tensor) -> torch.Tensor:
        """grad log p(x) = sum_k gamma_k(x) Sigma_k^{-1} (mu_k - x), eq. (211)."""
        gamma_BK = self.responsibilities(x_BD)
        diff_BKD = self.means_KD - x_BD.unsqueeze(-2)
        prec_diff_BKD = torch.linalg.solve(self.covs_KDD, diff_BKD.unsqueeze(-1)).squeeze(-1)
        return (gamma_BK.unsqueeze(-1) * prec_diff_BKD).sum(-2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pick a mode by its weight, then sample its Gaussian (App H.1)."""
        k_N = torch.multinomial(self.weights_K.cpu(), n, replacement=True, generator=generator)
        z_ND = torch.randn(n, self.dim, generator=generator, dtype=self.means_KD.dtype)
        chol_KDD = torch.linalg.cholesky(self.covs_KDD.cpu())
        x_ND = self.means_KD.cpu()[k_N] + (chol_KDD[k_N] @ z_ND.unsqueeze(-1)).squeeze(-1)
        return x_ND.to(self.means_KD.device)

    def noised(self, alpha_bar: float | torch.Tensor) -> "GaussianMixture":
        """Law of sqrt(abar) X0 + sqrt(1-abar) eps: means scaled, covariances
        abar Sigma + (1-abar) I (eq. 209)."""
        a = torch.as_tensor(alpha_bar, dtype=self.means_KD.dtype, device=self.means_KD.device)
        eye = torch.eye(self.dim, dtype=self.means_KD.dtype, device=self.means_KD.device)
        return GaussianMixture(a.sqrt() * self.means_KD, a * self.covs_KDD + (1 - a) * eye, self.weights_K)

    def smoothed(self, bandwidth: float) -> "GaussianMixture":
        """p convolved with N(0, h^2 I): the KDE-comparable prior of App I.4."""
        eye = torch.eye(self.dim, dtype=self.means_KD.dtype, device=self.means_KD.device)
        return GaussianMixture(self.means_KD, self.covs_KDD + bandwidth**2 * eye, self.weights_K)


def four_mode_gmm(radius: float = 2.0, std: float = 0.6, angle0: float = math.pi / 4,
                  dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Symmetric four-mode mixture with modes at angles angle0 + k pi/2 and distance
    radius * sqrt(2) from the origin (the default puts them at (+-2, +-2))."""
    angles_K = angle0 + torch.arange(4, dtype=dtype) * (math.pi / 2)
    r = radius * math.sqrt(2.0)
    means_KD = torch.stack([r * torch.cos(angles_K), r * torch.sin(angles_K)], dim=-1)
    covs_KDD = (std**2) * torch.eye(2, dtype=dtype).expand(4, 2, 2).clone()
    return GaussianMixture(means_KD, covs_KDD, torch.full((4,), 0.25, dtype=dtype))


@dataclass(frozen=True)
class AngularScore:
    """psi(x) = scale * |wrap(atan2(x2, x1) - theta0)|, eq. (195): minimal on the
    theta0 diagonal, growing with the angular deviation. Range [0, scale * pi]."""

    theta0: float = math.pi / 4
    scale: float = 3.0

    def __call__(self, x_BD: torch.Tensor) -> torch.Tensor:
        theta_B = torch.atan2(x_BD[..., 1], x_BD[..., 0])
        wrapped_B = torch.remainder(theta_B - self.theta0 + math.pi, 2 * math.pi) - math.pi
        return self.scale * wrapped_B.abs()

    @property
    def max_value(self) -> float:
        return self.scale * math.pi
