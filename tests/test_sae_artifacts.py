"""Trained transcoders and top-k indices as cached artefacts (paper Sec 3.1, App J.1):
trained once, then loaded bit for bit; a corrupt file is a clear error."""

from __future__ import annotations

import pytest
import torch

from _tiny_convnext import RandomImages, tiny_backbone
from klsc_lib.interfaces import World
from klsc_lib.sae import artifacts
from klsc_lib.sae.artifacts import CorruptArtifactError, TranscoderRecipe, load_or_build_index, load_or_fit_transcoder
from klsc_lib.sae.topk_index import rescan_top_ids

RECIPE = TranscoderRecipe(kernel_size=3, k=4, expansion=2, lr=1e-2, warmup_steps=2, steps=6, batch_size=8,
                          dead_window=3, n_cache_images=24, n_eval_images=16, shard_size=8, cache_batch_size=8)


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path))
    return World(name="tiny", backbone=tiny_backbone(), prior=None, cond_prior=None, train=RandomImages(24, seed=1),
                 test=RandomImages(16, seed=2), factor_names=("label",), num_classes=5)


def test_trained_once_then_loaded_identically(world, monkeypatch):
    first = load_or_fit_transcoder(world, RECIPE, world_key={"v": 1}, progress=False)
    assert sorted(p.name for p in first.folder.iterdir()) == ["transcoder.json", "transcoder.safetensors"]
    assert first.held_out.l0 == pytest.approx(RECIPE.k) and len(first.history.step) > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finished transcoder must be loaded, not retrained")

    monkeypatch.setattr(artifacts, "fit_transcoder", no_training)
    again = load_or_fit_transcoder(world, RECIPE, world_key={"v": 1}, progress=False)
    assert again.folder == first.folder
    for name, t in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], t), name
    assert again.held_out == first.held_out and again.history == first.history
    with pytest.raises(AssertionError, match="retrained"):  # another world key is another transcoder
        load_or_fit_transcoder(world, RECIPE, world_key={"v": 2}, progress=False)


def test_corrupt_weights_raise_a_clear_error(world):
    fitted = load_or_fit_transcoder(world, RECIPE, world_key={}, progress=False)
    weights = fitted.folder / "transcoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptArtifactError, match="delete the folder"):
        load_or_fit_transcoder(world, RECIPE, world_key={}, progress=False)


def test_saved_feature_index_equals_a_rescan_and_reloads(world):
    fitted = load_or_fit_transcoder(world, RECIPE, world_key={}, progress=False)
    index = load_or_build_index(fitted, "features", k=5)
    assert (fitted.folder / "features_top5.json").exists() and index.n_images == 16
    batches = lambda: ((b.ids_B, b.in_BCHW) for b in fitted.eval_cache.iterate(5))
    with torch.no_grad():
        for unit in range(0, index.n_units, 7):
            if index.scores_UK[unit, -1] > 0:  # ties at zero have no defined order
                assert index.top_ids(unit) == rescan_top_ids(batches(), fitted.model.encode, unit, 5)
    reloaded = load_or_build_index(fitted, "features", k=5)
    assert torch.equal(reloaded.ids_UK, index.ids_UK) and torch.equal(reloaded.hist_UB, index.hist_UB)
    neurons = load_or_build_index(fitted, "neurons", k=5)
    assert neurons.n_units == 32
    with pytest.raises(ValueError, match="features' or 'neurons"):
        load_or_build_index(fitted, "channels", k=5)
