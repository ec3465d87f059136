"""Exact references of real transcoder features on the smoke mini-world
(klsc_lib.analysis.feature_reference): targets as notebook 04 sets them, the pool scored
by the same psi, and the laws' invariants (mean t, Theorem D.14, histograms, images)."""

from __future__ import annotations

import pytest
import torch

from klsc_lib.constraints.calibration import UnreachableTarget
from klsc_lib.studies.feature_reference import feature_references
from klsc_lib.explain import feature_units
from klsc_lib.studies.nb04_energydps import draw_units

from _smoke_transcoder import smoke_transcoder

pytestmark = pytest.mark.usefixtures("one_thread")
N_POOL = 4096


@pytest.fixture(scope="module")
def references(smoke_world):
    cfg, world, _, _ = smoke_transcoder(smoke_world)  # trains or loads notebook 03's smoke transcoder
    units = feature_units(world, cfg.recipe)
    units_U = draw_units(units, world, 3, torch.Generator().manual_seed(0)).units_U
    return cfg, world, units, feature_references(world, cfg.recipe, units_U, n_pool=N_POOL,
                                       batch_size=1024, progress=False)


def test_each_feature_gets_its_exact_laws_at_its_level(references):
    _, _, _, refs = references
    rows = refs.summary()
    assert len(rows) == 3 and len(refs.pool) == N_POOL
    for row in rows:
        assert row["pool_mean"] < row["t"] < row["pool_max"]  # an active, reachable level
        assert row["tilt_mean"] == pytest.approx(row["t"], rel=1e-9) and row["truncation_mean"] >= row["t"]
        assert row["tilt_lambda"] > 0 and 1 <= row["tilt_ess"] <= N_POOL
        assert row["tilt_kl"] <= row["truncation_kl"]  # Theorem D.14 at (at least) the matched mean


def test_histograms_and_resampled_images_come_from_the_pool(references):
    _, _, units, refs = references
    hists = refs.histograms(0)
    assert set(hists) == {"digit", "colour", "size", "position", "background"}
    assert all(h.sum() == pytest.approx(1.0) for h in hists.values())
    idx, images = refs.resampled_images(0, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        psi = units.scores(refs.units_U[:1])(images)[:, 0]
    torch.testing.assert_close(psi, refs.pool.psi_NU[idx, 0], rtol=1e-4, atol=1e-4)
    tau = refs.law(0, "truncation").knob
    assert (refs.pool.psi_NU[refs.resampled_images(0, 16, "truncation")[0], 0] >= tau).all()


def test_a_second_call_reads_the_cached_pool(references, monkeypatch):
    cfg, world, _, refs = references
    import klsc_lib.worlds.miniworld.reference_pool as rp

    monkeypatch.setattr(rp, "render_batch", lambda latents: pytest.fail("the pool was scored again"))
    again = feature_references(world, cfg.recipe, refs.units_U, n_pool=N_POOL, batch_size=1024,
                               progress=False)
    assert torch.equal(again.pool.psi_NU, refs.pool.psi_NU)


def test_a_subset_equals_the_references_computed_for_those_features_alone(references):
    cfg, world, _, refs = references
    sub = refs.subset([2, 0])
    alone = feature_references(world, cfg.recipe, refs.units_U[[2, 0]], n_pool=N_POOL, batch_size=1024,
                               progress=False)  # its own cache key: the pool scored again for these two
    assert torch.equal(sub.units_U, alone.units_U) and torch.equal(sub.target_U, alone.target_U)
    torch.testing.assert_close(sub.pool.psi_NU, alone.pool.psi_NU)
    for a, b in zip(sub.summary(), alone.summary()):
        assert a == pytest.approx(b, rel=1e-6)
    for factor, hist in sub.histograms(0).items():
        torch.testing.assert_close(hist, refs.histograms(2)[factor])
    with pytest.raises(IndexError, match="outside the 3 features"):
        refs.subset([3])


def test_keep_drops_a_feature_the_pool_cannot_reach_and_keeps_the_others_unchanged(references, monkeypatch):
    cfg, world, _, refs = references
    import klsc_lib.studies.feature_reference as fr

    real = fr.topk_targets

    def one_out_of_reach(*a, **k):  # the middle feature's level far above anything the pool draws
        search, target_U = real(*a, **k)
        return search, target_U * torch.tensor([1.0, 1e6, 1.0], dtype=target_U.dtype)

    monkeypatch.setattr(fr, "topk_targets", one_out_of_reach)
    kept = feature_references(world, cfg.recipe, refs.units_U, n_pool=N_POOL, batch_size=1024, progress=False,
                              keep=2)
    assert kept.units_U.tolist() == refs.units_U[[0, 2]].tolist()
    for a, b in zip(kept.summary(), refs.subset([0, 2]).summary()):
        assert a == pytest.approx(b, rel=1e-9)
    with pytest.raises(UnreachableTarget, match="only 2 of 3"):
        feature_references(world, cfg.recipe, refs.units_U, n_pool=N_POOL, batch_size=1024, progress=False, keep=3)
