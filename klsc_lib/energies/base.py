"""The :class:`Energy` type: a named, tensor-valued score psi(x) -> psi_B, one value
per sample, closed under ``+``, scalar ``*`` and unary ``-`` (the exponent
lambda psi + omega g of paper eqs. 24 and 215)."""

from __future__ import annotations

from typing import Callable

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) -> (B,)


def _fmt_scalar(c: float) -> str:
    return f"{c:g}"


class Energy:
    """psi(x) with a readable ``name``; ``energy(x)`` checks it returns shape (B,)."""

    def __init__(self, fn: ScoreFn, name: str, *, _is_sum: bool = False):
        if not callable(fn):
            raise TypeError(f"an Energy wraps a callable x -> psi_B, got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self._is_sum = _is_sum  # so that a scalar times a sum is written "c*(a+b)"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        psi_B = self.fn(x)
        if not isinstance(psi_B, torch.Tensor) or psi_B.shape != (x.shape[0],):
            shape = tuple(psi_B.shape) if isinstance(psi_B, torch.Tensor) else type(psi_B).__name__
            raise ValueError(f"energy {self.name!r} must return one value per sample, shape ({x.shape[0]},); "
                             f"got {shape}")
        return psi_B

    def __add__(self, other: "Energy") -> "Energy":
        if not isinstance(other, Energy):
            return NotImplemented
        a, b = self, other
        return Energy(lambda x: a(x) + b(x), f"{a.name}+{b.name}", _is_sum=True)

    def __sub__(self, other: "Energy") -> "Energy":
        if not isinstance(other, Energy):
            return NotImplemented
        a, b = self, other
        inner = f"({b.name})" if b._is_sum else b.name
        return Energy(lambda x: a(x) - b(x), f"{a.name}-{inner}", _is_sum=True)

    def __mul__(self, c: float) -> "Energy":
        if isinstance(c, torch.Tensor) and c.numel() == 1:
            c = float(c)
        if not isinstance(c, (int, float)):
            return NotImplemented
        inner = f"({self.name})" if self._is_sum else self.name
        a = self
        return Energy(lambda x: c * a(x), f"{_fmt_scalar(c)}*{inner}")

    __rmul__ = __mul__

    def __neg__(self) -> "Energy":
        a = self
        inner = f"({self.name})" if self._is_sum else self.name
        return Energy(lambda x: -a(x), f"-{inner}")

    def __repr__(self) -> str:
        return f"Energy({self.name})"


def as_energy(score: Energy | ScoreFn, name: str | None = None) -> Energy:
    """An :class:`Energy` from an Energy (unchanged) or a plain callable (named after
    ``name``, its ``name`` attribute, or its type)."""
    if isinstance(score, Energy):
        return score
    return Energy(score, name or getattr(score, "name", None) or type(score).__name__)


def checked_psi(energy: Energy | ScoreFn, x: torch.Tensor, where: str) -> torch.Tensor:
    """psi_B = ``energy(x)``, checked to be one finite value per sample; a NaN / inf raises
    :class:`FloatingPointError` naming ``where`` (e.g. "MACO, optimisation step 3") and the samples."""
    energy = as_energy(energy)
    psi_B = energy(x)
    bad = ~torch.isfinite(psi_B)
    if bad.any():
        raise FloatingPointError(f"{where}: energy {energy.name!r} returned non-finite psi for samples "
                                 f"{bad.nonzero().flatten().tolist()}; check the energy on these images (e.g. a "
                                 "division by a vanishing norm) or lower the learning rate")
    return psi_B
