"""Shipped mini-world weights (klsc_lib.worlds.miniworld.shipped): checksums, fp16
round trip, clear errors for corrupt or missing files, and the default world's files."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from klsc_lib.worlds.miniworld import MINIWORLD, build, shipped
from klsc_lib.worlds.miniworld.factor_classifier import factor_accuracy, read_factors
from test_miniworld_build import TINY, forbid


@pytest.fixture
def tiny_shipped(tmp_path, monkeypatch):
    """TINY built into a temporary cache, then shipped into a temporary weights folder."""
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    world = build.load_miniworld(TINY, device="cpu", progress=False)
    folder = build.ship_world(TINY, world)
    return world, folder


def test_a_shipped_world_loads_its_float16_weights_without_training(tiny_shipped, monkeypatch):
    world, folder = tiny_shipped
    manifest = json.loads((folder / "manifest.json").read_text())["sha256"]
    for name, digest in manifest.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    monkeypatch.setattr(build, "train_resumable", forbid)
    monkeypatch.setattr(build, "_measure_quality", forbid)
    again = build.load_miniworld(TINY, device="cpu", progress=False)
    assert again.quality["shipped"] and again.quality["cache_hit"]
    assert again.quality["kid_prior_vs_test"] == world.quality["kid_prior_vs_test"]
    assert "fp16_check" in again.quality
    # the loaded weights are the float16-rounded trained weights, exactly
    rounded = shipped.fp16_round_trip(world.factor_prior.eps)
    for name, value in again.factor_prior.eps.state_dict().items():
        assert torch.equal(value, rounded[name]), name
    x = world.test.images_NCHW[:4]
    with torch.no_grad():
        assert torch.allclose(again.backbone(x), world.backbone(x), atol=0.05)
    assert torch.allclose(again.quality["samples_BCHW"], world.quality["samples_BCHW"][:shipped.NUM_SHIPPED_SAMPLES],
                          atol=1e-3)


def test_corrupt_or_missing_shipped_files_raise_with_the_rebuild_command(tiny_shipped):
    _, folder = tiny_shipped
    prior = folder / "prior.safetensors"
    data = bytearray(prior.read_bytes())
    data[len(data) // 2] ^= 0xFF
    prior.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256.*make miniworld REBUILD=1"):
        build.load_miniworld(TINY, device="cpu", progress=False)
    prior.unlink()
    with pytest.raises(FileNotFoundError, match=r"missing.*make miniworld REBUILD=1"):
        build.load_miniworld(TINY, device="cpu", progress=False)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        shipped.verify(folder)


def test_the_default_world_ships_within_5_mb_and_loads_verified(monkeypatch):
    cfg = MINIWORLD["default"]
    assert shipped.has_shipped(cfg), f"no shipped weights for the default config's hash; {shipped.REBUILD_HINT}"
    folder = shipped.shipped_folder(cfg)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5e6
    monkeypatch.setattr(build, "train_resumable", forbid)
    monkeypatch.setattr(build, "_measure_quality", forbid)
    world = build.load_miniworld(cfg, device="cpu", progress=False)
    assert world.quality["shipped"] and world.quality["config_hash"] == folder.name
    test = world.test
    read = read_factors(world.factor_classifier, test.images_NCHW[:500])
    accuracy = factor_accuracy(read, {k: v[:500] for k, v in test.factors.items()})
    assert min(accuracy.values()) > 0.9, accuracy  # the shipped reader reads held-out images
    with torch.no_grad():
        assert (world.backbone(test.images_NCHW[:500]).argmax(-1) == test.labels_N[:500]).float().mean() > 0.8
