"""The factor-conditioned prior and the all-factor classifier of the mini-world
(klsc_lib.worlds.miniworld.models, .factor_classifier), untrained: wiring and API."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from _finite_differences import assert_matches_finite_differences
from klsc_lib.worlds.miniworld import FactorClassifierConfig, PriorConfig
from klsc_lib.worlds.miniworld.data import FACTOR_SIZES
from klsc_lib.worlds.miniworld.factor_classifier import (FactorClassifier, factor_accuracy, factor_probabilities,
                                                         read_factors)
from klsc_lib.worlds.miniworld.models import build_unet, priors

CFG = PriorConfig(channels=(8, 16, 16), attention=False, norm_groups=4, num_train_timesteps=50)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = build_unet(CFG).eval()
    with torch.no_grad():  # non-zero embeddings, so that conditioning changes the output
        for table in model.embed.tables.values():
            table.weight.normal_()
    return model


def test_factor_embedding_sums_one_row_per_factor_with_the_last_row_as_not_given(unet):
    tables = unet.embed.tables
    null = sum(tables[name].weight[k] for name, k in FACTOR_SIZES.items())
    assert torch.allclose(unet.embed({}, 3), null.expand(3, -1))
    digit = torch.tensor([0, 7])
    expected = null - tables["digit"].weight[10] + tables["digit"].weight[digit]
    assert torch.allclose(unet.embed({"digit": digit}, 2), expected)
    with pytest.raises(ValueError, match="unknown factors"):
        unet.embed({"shape": torch.tensor([0])}, 1)
    with pytest.raises(ValueError, match="colour"):
        unet.embed({"colour": torch.tensor([5])}, 1)


def test_the_three_priors_are_one_network_under_different_embeddings(unet):
    prior, cond_prior, factor_prior = priors(unet, CFG, "test")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 16, generator=gen)
    t_B = torch.tensor([10, 40])
    y_B = torch.tensor([3, 9])
    with torch.no_grad():
        # with no factor given, guidance changes nothing: eps_u + w (eps_u - eps_u)
        torch.testing.assert_close(prior.eps(x, t_B), factor_prior.given({}, 2).eps(x, t_B), rtol=0, atol=1e-6)
        by_digit = cond_prior.given(y_B).eps(x, t_B)
        torch.testing.assert_close(by_digit, factor_prior.given({"digit": y_B}, 2).eps(x, t_B), rtol=0, atol=1e-6)
        assert not torch.allclose(by_digit, prior.eps(x, t_B))
    with pytest.raises(ValueError, match="embeddings"):
        factor_prior.given_embedding(torch.zeros(3, unet.embed.dim)).eps(x, t_B)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_conditional_priors_use_classifier_free_guidance_at_the_configured_scale(unet, scale):
    """eps_u + w (eps_c - eps_u), each term from its own unguided call (Ho & Salimans 2022)."""
    cfg = dataclasses.replace(CFG, cond_guidance_scale=scale)
    _, cond_prior, factor_prior = priors(unet, cfg, "test")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t_B, y_B = torch.tensor([5, 20, 45]), torch.tensor([0, 4, 7])
    with torch.no_grad():
        eps_u = factor_prior.given_embedding(unet.embed({}, 3)).eps(x, t_B)
        eps_c = factor_prior.given_embedding(unet.embed({"digit": y_B}, 3)).eps(x, t_B)
        expected = eps_u + scale * (eps_c - eps_u)
        torch.testing.assert_close(cond_prior.given(y_B).eps(x, t_B), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(factor_prior.given({"digit": y_B}, 3).eps(x, t_B), expected, rtol=0, atol=1e-5)


def test_a_soft_prompt_gradient_equals_finite_differences(unet):
    """d ||eps(x_t | prompt)||^2 / d prompt against central differences along random
    directions, in float64: the soft prompt of the proxy baseline gets the true gradient."""
    import copy

    _, _, factor_prior = priors(copy.deepcopy(unet).double(), CFG, "test")
    x_t = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    grad = assert_matches_finite_differences(
        lambda p: factor_prior.given_embedding(p).eps(x_t, torch.tensor([25])).square().sum(),
        factor_prior.embed({"colour": torch.tensor([1])}, 1), n_directions=3, seed=7, rtol=1e-6)
    assert grad.abs().sum() > 0


def test_factor_classifier_reads_every_factor():
    torch.manual_seed(0)
    clf = FactorClassifier(FactorClassifierConfig(channels=(4, 8, 8)))
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    probs = factor_probabilities(clf, x, batch_size=2)
    read = read_factors(clf, x)
    assert set(probs) == set(read) == set(FACTOR_SIZES)
    for name, k in FACTOR_SIZES.items():
        assert probs[name].shape == (5, k) and torch.allclose(probs[name].sum(-1), torch.ones(5))
        assert read[name].dtype == torch.long and torch.equal(read[name], probs[name].argmax(-1))
    with pytest.raises(ValueError, match="world images"):
        clf(torch.zeros(2, 3, 8, 8))


def test_factor_accuracy_known_values():
    read = {"digit": torch.tensor([1, 2, 3, 4]), "colour": torch.tensor([0, 0, 1, 1])}
    truth = {"digit": torch.tensor([1, 2, 0, 0]), "colour": torch.tensor([0, 0, 1, 1]), "size": torch.tensor([0])}
    assert factor_accuracy(read, truth) == {"digit": 0.5, "colour": 1.0}
