"""The recognition statistics of klsc_lib.worlds.miniworld.quality."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.worlds.miniworld import quality as q


def test_recognition_mean_max_prob():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    rec = q.recognition(probs)
    assert rec["mean_max_prob"] == pytest.approx(0.75)
    assert rec["histogram"] == [1, 0, 1]


def test_targets_met_reads_each_threshold():
    good = {"kid_prior_vs_test": 0.01, "prior_mean_max_prob": 0.97, "cond_prior_digit_accuracy": 0.99,
            "prior_factor_tv_to_test": {"digit": 0.02, "colour": 0.05}}
    assert all(q.targets_met(good).values())
    bad = {**good, "kid_prior_vs_test": 0.2, "prior_factor_tv_to_test": {"digit": 0.02, "colour": 0.3}}
    met = q.targets_met(bad)
    assert not met["kid_prior_vs_test"] and not met["prior_factor_tv"] and met["prior_mean_max_prob"]
