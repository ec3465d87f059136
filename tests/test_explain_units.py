"""Notebook 04's unit sets (klsc_lib.explain: draw_units, feature_units, explain_neurons,
stored_samples) on the tiny squares world: brute-force recomputations of the targets
and a store round trip."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from _tiny_world import tiny_transcoder, tiny_world
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies.units import Units
from klsc_lib.explain import feature_units, store_config, stored_samples
from klsc_lib.runtime import world_key
from klsc_lib.sae.artifacts import TranscoderRecipe
from klsc_lib.samples_store import SamplesStore
from klsc_lib.studies.nb04_energydps import draw_units, explain_neurons

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    return tiny_world(n_train=48, n_test=64)


def _brute_psi(units: Units, ids, images):
    with torch.no_grad():
        return torch.stack([units.energy(torch.full((len(images),), int(u)))(images) for u in ids], dim=1)


def test_draw_units_keeps_units_firing_on_all_top_images_with_brute_force_targets(world):
    tc, _ = tiny_transcoder(world)
    units = Units("Feature", world.backbone, tc, image_size=32)
    drawn = draw_units(units, world, 4, torch.Generator().manual_seed(3), k=6, k_target=2)
    pool = torch.randperm(units.count, generator=torch.Generator().manual_seed(3))[:16]
    assert set(drawn.units_U.tolist()) <= set(pool.tolist()) and drawn.drawn == 16
    psi_NU = _brute_psi(units, drawn.units_U, world.test.images[:32])
    top_UK = psi_NU.T.sort(dim=1, descending=True).values[:, :6]
    assert (top_UK[:, -1] > 0).all()
    torch.testing.assert_close(drawn.target_U, top_UK[:, :2].mean(1), rtol=1e-5, atol=1e-6)
    assert len(drawn.concepts.factor_U) == len(drawn.units_U) and drawn.search.psi_UK.shape == (len(drawn.units_U), 6)


def test_feature_units_train_once_then_load_frozen(world, tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path))

    @dataclass(frozen=True)
    class Cfg:
        name: str = "tiny"

    recipe = TranscoderRecipe(kernel_size=3, k=4, expansion=2, lr=1e-2, warmup_steps=2, steps=4, batch_size=8,
                              dead_window=3, n_cache_images=16, n_eval_images=16, shard_size=8, cache_batch_size=8)
    keyed = replace(world, key=world_key(Cfg()))
    with pytest.raises(ValueError, match="no key"):
        feature_units(world, recipe)
    a = feature_units(keyed, recipe)
    b = feature_units(keyed, recipe)
    assert a.count == b.count == 2 * a.transcoder.cfg.d_in
    assert not any(p.requires_grad for p in a.transcoder.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.transcoder.parameters(), b.transcoder.parameters()))


def test_explain_neurons_targets_are_brute_force_and_the_store_is_reused(world, tmp_path):
    cfg = GuidanceConfig(num_steps=5, strength=2.0 * 5 / 1000, grad_through_denoiser=False, cap_rule="target")
    store = SamplesStore("EnergyDPS", "Neuron", store_config("EnergyDPS", cfg, 2, 0, {"w": 1}), root=tmp_path)
    images = world.test.images[:32]
    ids, t_U, psi = explain_neurons(store, world, 3, torch.Generator().manual_seed(0), images, 2, cfg, k_target=2)
    neurons = Units("Neuron", world.backbone, image_size=32)
    top = _brute_psi(neurons, ids, images).T.sort(dim=1, descending=True).values[:, :2].mean(1)
    torch.testing.assert_close(t_U, top, rtol=1e-5, atol=1e-6)
    assert sorted(psi) == sorted(ids.tolist()) and all(v.shape == (2,) for v in psi.values())
    x_UNCHW, psi_UN = stored_samples(store, ids)
    assert x_UNCHW.shape == (3, 2, 3, 32, 32) and torch.equal(psi_UN, torch.stack([psi[int(u)] for u in ids]))
    again = explain_neurons(store, world, 3, torch.Generator().manual_seed(0), images, 2,
                            GuidanceConfig(num_steps=5, strength=float("nan"), cap_rule="target"), k_target=2)[2]
    assert all(torch.equal(again[u], psi[u]) for u in psi)  # read back, not resampled (a NaN scale would raise)


def test_the_inspector_and_notebooks_04_05_show_one_label_per_feature(world, tmp_path):
    """One concept function: the inspector's concept of each unit notebook 04 draws equals
    notebook 04's (and notebook 05's, which calls true_concepts on the stored ids),
    checked against the factor labels of the unit's top images counted here."""
    from klsc_lib.analysis.monosemanticity import dataset_factors
    from klsc_lib.explain import true_concepts
    from klsc_lib.viz.inspector import FeatureInspector

    tc, index = tiny_transcoder(world)
    units = Units("Feature", world.backbone, tc, image_size=32)
    drawn = draw_units(units, world, 4, torch.Generator().manual_seed(3), k=6, k_target=2)
    insp = FeatureInspector(world, tc, index, notes_path=tmp_path / "notes.json", concept_k=6)
    again = true_concepts(units, drawn.units_U.flip(0), world, k=6)  # notebook 05: the stored ids, any order
    test_factors = dataset_factors(world.test, world.factor_names, n=len(world.test) // 2)
    for i, u in enumerate(drawn.units_U.tolist()):
        shown = insp.concepts[u]
        assert (shown.factor, shown.value) == (drawn.concepts.factor_U[i], int(drawn.concepts.value_U[i]))
        j = len(drawn.units_U) - 1 - i
        assert (again.factor_U[j], int(again.value_U[j])) == (shown.factor, shown.value)
        ids = drawn.search.ids_UK[i].numpy()  # notebook 04's top images of the unit
        assert shown.count == int((test_factors[shown.factor][ids] == shown.value).sum()) and shown.of == 6
