"""Notebook 04's Table 3 against the exact tilt (klsc_lib.studies.reference_table) on the smoke
mini-world's real transcoder features: exact draws score as exact draws should, a method that
ignores the feature scores worse, and malformed inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klsc_lib.explain import feature_units
from klsc_lib.studies.feature_reference import feature_references
from klsc_lib.studies.nb04_energydps import draw_units
from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds
from klsc_lib.studies.reference_table import concept_names, exact_samples, prior_reweighted, reference_table
from klsc_lib.worlds.miniworld.data import render_batch, sample_latents
from klsc_lib.worlds.miniworld.factor_classifier import factor_probabilities

from _smoke_transcoder import smoke_transcoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(smoke_world):
    cfg, world, _, _ = smoke_transcoder(smoke_world)
    units = feature_units(world, cfg.recipe)
    units_U = draw_units(units, world, 3, torch.Generator().manual_seed(0)).units_U
    refs = feature_references(world, cfg.recipe, units_U, n_pool=4096, batch_size=1024, progress=False)
    return world, units, refs


def test_exact_draws_beat_prior_draws_on_every_distance_to_the_tilt(setup):
    world, units, refs = setup
    n = 64
    prior_x = render_batch(sample_latents(3 * n, "test", 11)).reshape(3, n, 3, 16, 16)
    with torch.no_grad():
        prior_psi = torch.stack([units.energy(refs.units_U[j:j + 1].expand(n))(prior_x[j]) for j in range(3)])
    table = reference_table({"q*": exact_samples(refs, n), "prior": (prior_x, prior_psi)}, refs,
                            lambda x: factor_probabilities(world.factor_classifier, x), world.factor_reader.features)
    q, p = table.per_feature["q*"], table.per_feature["prior"]
    assert (q["tv_mean"] < p["tv_mean"]).all() and (q["psi_w1"] < p["psi_w1"]).all()
    assert np.abs(q["psi_over_t"] - 1).max() < 0.25  # 64 draws of a law whose mean psi is t
    assert (q["off_palette"] == 0).all() and (p["off_palette"] == 0).all()  # both are world images
    s = table.summary()
    assert s["q*"]["KID to q*"][0] < s["prior"]["KID to q*"][0]
    lo, hi = table.paired("tv_mean", "q*")["prior"][1:]
    assert 0 < lo <= hi  # the prior is farther, resolved on 3 features
    names = concept_names(refs, world.value_names)
    assert len(names) == 3 and all(n.split(" ")[0] in world.value_names for n in names)


def test_malformed_rows_are_refused(setup):
    world, _, refs = setup
    x, psi = exact_samples(refs, 4)
    probs_of = lambda z: factor_probabilities(world.factor_classifier, z)  # noqa: E731
    with pytest.raises(ValueError, match="need \\(U=3"):
        reference_table({"m": (x[:2], psi[:2])}, refs, probs_of, world.factor_reader.features)
    with pytest.raises(ValueError, match="NaN"):
        reference_table({"m": (x, psi.clone().fill_(float("nan")))}, refs, probs_of, world.factor_reader.features)


def test_prior_reweighted_resamples_the_unguided_draws_of_the_tilt_sampler(setup):
    """The prior row's images are draws of the tilt sampler with lambda 0 (same seeds), each
    carrying its own psi; its weights are the prior draws' own tilt at t."""
    world, units, refs = setup
    cfg = GuidanceConfig.tilt(num_steps=8)
    res = prior_reweighted(world.prior, units.scores(refs.units_U), refs, 48, 16, cfg, batch_size=24,
                           progress=False)
    x, psi = res.samples
    assert x.shape == (3, 16, 3, 16, 16) and psi.shape == (3, 16)
    ref_x, _ = sample_units(world.prior, units.energy, refs.units_U[:1].expand(48), cfg, sample_seeds(0, -1, 48),
                            lam_B=0.0)
    dist = torch.cdist(x.flatten(2).flatten(0, 1), ref_x.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    assert dist.min(dim=1).values.max() < 1e-4  # every resampled image is one of the lambda-0 draws
    with torch.no_grad():
        for j in range(3):
            torch.testing.assert_close(units.energy(refs.units_U[j:j + 1].expand(16))(x[j]), psi[j],
                                       rtol=1e-4, atol=1e-5)
    assert ((res.ess_U >= 1) & (res.ess_U <= 48 + 1e-6)).all()
