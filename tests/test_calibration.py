from __future__ import annotations

import math

import pytest

from klsc_lib.constraints.calibration import UnreachableTarget, bisect_increasing


def test_bisection_finds_known_root():
    root = bisect_increasing(math.tanh, 0.5, 0.0, 5.0, tol=1e-12)
    assert root == pytest.approx(math.atanh(0.5), abs=1e-10)


def test_unreachable_target_names_the_range():
    with pytest.raises(UnreachableTarget, match=r"attainable range \[0, 1\] of lambda"):
        bisect_increasing(lambda x: min(x, 1.0), 2.0, 0.0, 3.0, what="lambda")


def test_endpoint_targets_are_reachable():
    assert bisect_increasing(lambda x: x, 0.0, 0.0, 1.0, tol=1e-9) == pytest.approx(0.0, abs=1e-8)
