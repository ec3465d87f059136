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


def test_study_units_reads_top_images_from_an_index():
    import torch

    from klsc_lib.analysis.monosemanticity import sample_units, study_units
    from klsc_lib.sae.topk_index import TopKIndex

    factors = {"colour": np.array([0, 0, 0, 1, 1, 2]), "size": np.array([0, 1, 0, 1, 0, 1])}
    index = TopKIndex(n_units=2, k=3)
    # unit 0 peaks on images 0, 1, 2 (all colour 0); unit 1 on images 3, 2 (colours 1, 0)
    index.update_scores(torch.tensor([[5.0, -1.0], [4.0, -2.0], [3.0, 1.0], [0.5, 2.0]]), torch.arange(4))
    result = study_units(index, np.array([0]), factors, {"colour": 3, "size": 2}, top_n=3)
    assert result.purity_UF[0, 0] == 1.0 and result.success_rate == 1.0 and result.success_se == 0.0
    assert study_units(index, np.array([0, 1]), factors, {"colour": 3, "size": 2}, top_n=2).success_se == pytest.approx(0.5 / np.sqrt(2))  # p = 1/2, n = 2
    short = TopKIndex(n_units=1, k=3)
    short.update_scores(torch.tensor([[1.0], [2.0]]), torch.arange(2))
    with pytest.raises(ValueError, match="fewer than 3 indexed images"):
        study_units(short, np.array([0]), factors, {"colour": 3, "size": 2}, top_n=3)
    drawn = sample_units(np.arange(10, 20), 4, torch.Generator().manual_seed(0))
    assert len(set(drawn)) == 4 and set(drawn) <= set(range(10, 20)) and list(drawn) == sorted(drawn)
