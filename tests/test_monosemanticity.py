"""Factor purity / information of top images (App L.1 analogue)."""

import numpy as np
import pytest

from klsc_lib.analysis.monosemanticity import monosemanticity


def test_pure_unit_scores_one_and_balanced_unit_scores_zero():
    factors = {"colour": np.array([0, 0, 0, 0, 1, 1, 2, 3]), "size": np.array([0, 1, 0, 1, 0, 1, 0, 1])}
    sizes = {"colour": 4, "size": 2}
    result = monosemanticity(np.array([[0, 1, 2, 3], [4, 5, 6, 7]]), factors, sizes)
    # unit 0: all red -> colour purity 1, info 1; sizes balanced -> purity 0, info 0
    np.testing.assert_allclose(result.purity_UF[0], [1.0, 0.0])
    np.testing.assert_allclose(result.info_UF[0], [1.0, 0.0], atol=1e-12)
    # unit 1: colours {1, 1, 2, 3}: max freq 1/2 -> (1/2 - 1/4) / (3/4) = 1/3; sizes balanced
    np.testing.assert_allclose(result.purity_UF[1], [1 / 3, 0.0])
    assert result.best_factor_U.tolist() == [0, 0]
    assert result.success_rate == 0.5
    assert result.mean_score == pytest.approx((1 + 1 / 3) / 2)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="units, k >= 2"):
        monosemanticity(np.array([1, 2]), {"a": np.zeros(3, int)}, {"a": 2})
    with pytest.raises(ValueError, match="factor_sizes"):
        monosemanticity(np.zeros((1, 2), int), {"a": np.zeros(3, int)}, {})
