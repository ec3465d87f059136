"""Energies of the 2-D toy (paper App H-I, L.5): the angular intrinsic score of eq.
(195) and the pixel-reference task term g(x) = -||x - x_ref||^2 of eq. (216)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from klsc_lib.energies.base import Energy


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


def angular_energy(theta0: float = math.pi / 4, scale: float = 3.0) -> Energy:
    """psi(x) = scale |wrap(atan2(x2, x1) - theta0)| (eq. 195) as an Energy named "angular"."""
    return Energy(AngularScore(theta0, scale), "angular")


def reference_energy(x_ref_D: torch.Tensor, name: str = "reference") -> Energy:
    """g(x) = -||x - x_ref||^2 over all non-batch dimensions (eq. 216)."""
    x_ref_D = torch.as_tensor(x_ref_D)

    def g(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != x_ref_D.shape:
            raise ValueError(f"reference of shape {tuple(x_ref_D.shape)} but samples of shape {tuple(x.shape[1:])}")
        return -(x - x_ref_D.to(x)).square().flatten(1).sum(1)

    return Energy(g, name)
