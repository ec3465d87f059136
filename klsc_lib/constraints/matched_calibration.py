"""Matched-faithfulness calibration (paper App I, "Matched-faithfulness calibration";
RM §12): tune one knob per method (k for retrieval, beta for OR, lambda for
EnergyDPS and the prompt proxy) until the sample mean of psi is within ``tol`` of
the target t, with the same sample budget for every method.

A target a method cannot attain over its knob range is not an error for the
comparison: it comes back as ``reached=False`` with the attainable range in
``message``, and the figures show it as unreachable instead of dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from klsc_lib.constraints.calibration import UnreachableTarget, bisect_increasing


@dataclass(frozen=True)
class Calibrated:
    """Outcome of calibrating ``method`` at ``target``; ``samples`` is None when unreachable."""

    method: str
    target: float
    knob: float | None
    samples: torch.Tensor | None
    mean_psi: float | None
    reached: bool
    message: str = ""
    attainable: tuple[float, float] | None = None  # (min, max) mean psi seen over the knob range


class _WithinTolerance(Exception):
    """Stops the bisection at the first knob whose mean is within tolerance."""


def calibrate_knob(draw: Callable[[float], torch.Tensor], psi: Callable[[torch.Tensor], torch.Tensor],
                   target: float, lo: float, hi: float, tol: float, max_iter: int = 30,
                   increasing: bool = True, method: str = "method", knob_name: str = "knob") -> Calibrated:
    """Bisect ``knob`` in [lo, hi] so that mean psi(draw(knob)) is within ``tol`` of ``target``.

    ``draw(knob)`` returns the method's samples for that knob (use common random
    numbers, i.e. a freshly seeded generator per call, so the mean is a deterministic,
    monotone function of the knob). ``increasing=False`` for knobs that lower the
    mean (the OR weight beta). Of all knobs tried, the closest is returned; it is
    ``reached`` only if within ``tol``.
    """
    tried: dict[float, tuple[float, torch.Tensor]] = {}
    sign = 1.0 if increasing else -1.0

    def signed_mean(knob: float) -> float:
        if knob not in tried:
            samples = draw(knob)
            tried[knob] = (float(psi(samples).mean()), samples)
        mean = tried[knob][0]
        if abs(mean - target) <= tol:
            raise _WithinTolerance
        return sign * mean

    try:
        bisect_increasing(signed_mean, sign * target, lo, hi, tol=0.0, max_iter=max_iter, what=knob_name)
    except _WithinTolerance:
        pass
    except UnreachableTarget:
        ends = sorted(tried[k][0] for k in (lo, hi))
        return Calibrated(method, target, None, None, None, False,
                          f"{method}: target {target:.4g} is outside the attainable mean psi range "
                          f"[{ends[0]:.4g}, {ends[1]:.4g}] over {knob_name} in [{lo:.4g}, {hi:.4g}]",
                          (ends[0], ends[1]))
    means = [m for m, _ in tried.values()]
    attainable = (min(means), max(means))
    knob, (mean, samples) = min(tried.items(), key=lambda kv: abs(kv[1][0] - target))
    if abs(mean - target) <= tol:
        return Calibrated(method, target, knob, samples, mean, True, attainable=attainable)
    return Calibrated(method, target, knob, samples, mean, False,
                      f"{method}: closest mean psi {mean:.4g} (|gap| {abs(mean - target):.3g} > tol {tol}) "
                      f"after {len(tried)} evaluations of {knob_name}", attainable)
