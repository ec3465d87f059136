"""Matched-faithfulness calibration (App H.3 eqs. 198-201, App I): find the knob
of a method whose achieved mean score hits a target level t."""

from __future__ import annotations

from typing import Callable


class UnreachableTarget(ValueError):
    """The target level lies outside what a method can attain over its knob range."""


def bisect_increasing(fn: Callable[[float], float], target: float, lo: float, hi: float,
                      tol: float = 1e-6, max_iter: int = 100, what: str = "knob") -> float:
    """Root of ``fn(x) = target`` for ``fn`` non-decreasing on ``[lo, hi]``.

    Stops when the bracket is narrower than ``tol`` (absolute, in x) or after
    ``max_iter`` halvings. Raises :class:`UnreachableTarget`, naming the attainable
    range, when ``target`` is outside ``[fn(lo), fn(hi)]``. For a non-increasing
    ``fn`` (e.g. the OR weight beta) pass ``lambda x: -fn(x)`` and ``-target``.
    """
    f_lo, f_hi = fn(lo), fn(hi)
    if not (f_lo <= target <= f_hi):
        raise UnreachableTarget(
            f"target {target:.6g} is outside the attainable range [{f_lo:.6g}, {f_hi:.6g}] of {what} "
            f"in [{lo:.6g}, {hi:.6g}]; choose a target inside it or widen the {what} bracket")
    for _ in range(max_iter):
        if hi - lo <= tol:
            break
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
