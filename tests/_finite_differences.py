"""A gradient check for tests: autograd's directional derivatives against central
differences of the same scalar function, along random directions (float64)."""

from __future__ import annotations

from typing import Callable

import torch


def assert_matches_finite_differences(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                      n_directions: int = 2, h: float = 1e-5, seed: int = 0, rtol: float = 1e-5,
                                      atol: float = 1e-9) -> torch.Tensor:
    """Check grad fn(x) . d == (fn(x + h d) - fn(x - h d)) / 2h per output entry, for
    ``n_directions`` random d; ``fn`` maps x to a tensor whose sum is differentiated.
    Returns the gradient."""
    x = x.detach().double().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_directions):
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = (fn(x + h * d) - fn(x - h * d)) / (2 * h)
        along = (grad * d).reshape(len(x), -1).sum(1) if out.ndim == 1 else (grad * d).sum()
        torch.testing.assert_close(along, fd, rtol=rtol, atol=atol)
    return grad
