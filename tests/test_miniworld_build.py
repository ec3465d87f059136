"""Building, caching and resuming a mini-world (klsc_lib.worlds.miniworld.build, .training).

A tiny config (seconds) checks the cache and resume logic; the smoke config checks
that the CI world builds from nothing through the public ``load_world``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from klsc_lib.worlds.miniworld import (MINIWORLD, BackboneConfig, FactorClassifierConfig, MiniWorldConfig, PriorConfig,
                                      RefineStage, build, miniworld_hash)
from klsc_lib.worlds.miniworld.training import train_resumable
from klsc_lib.worlds import load_world

TINY = MiniWorldConfig(
    name="miniworld-tiny", n_train=256, n_test=64,
    backbone=BackboneConfig(dims=(8, 16, 32, 64), input_size=16, steps=30, batch_size=32),
    prior=PriorConfig(channels=(16, 32, 32), attention=False, num_train_timesteps=50, beta_start=2e-3,
                      beta_end=0.3, steps=40, batch_size=32, ema_decay=0.9),
    factor_classifier=FactorClassifierConfig(channels=(4, 8, 8), steps=20, batch_size=32),
    num_quality_samples=8, num_cond_quality_samples=4, quality_sampling_steps=10, checkpoint_every=10)
KINDS = ("backbone", "prior", "factor_classifier")
TIMING = ("train_seconds", "train_cpu_seconds", "quality_seconds")


class Crash(Exception):
    """A simulated kill in the middle of training."""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path))
    return tmp_path


def cached_weights(cfg: MiniWorldConfig) -> dict[str, dict[str, torch.Tensor]]:
    folder = build.world_folder(cfg)  # cloned: load_file may memory-map the file
    return {kind: {k: v.clone() for k, v in load_file(folder / f"{kind}.safetensors").items()} for kind in KINDS}


def numbers(quality: dict) -> dict:
    """The measured quality, without timings, tensors and load bookkeeping."""
    return {k: v for k, v in quality.items() if not isinstance(v, torch.Tensor)
            and not k.startswith(TIMING) and k not in ("cache_hit", "trained_now")}


def assert_same_weights(a: dict, b: dict) -> None:
    for kind in KINDS:
        assert a[kind].keys() == b[kind].keys()
        for name in a[kind]:
            assert torch.equal(a[kind][name], b[kind][name]), f"{kind}.{name}"


def forbid(*_args, **_kwargs):
    raise AssertionError("a cache hit must not train or sample")


@pytest.mark.slow
def test_smoke_world_builds_from_nothing_then_loads_as_a_cache_hit(cache, monkeypatch):
    cfg = MINIWORLD["smoke"]
    world = load_world(cfg, device="cpu", progress=False)
    assert world.quality["trained_now"] == list(KINDS) and not world.quality["cache_hit"]
    x = world.test.images_NCHW[:3]
    t_B = torch.tensor([0, 50, 99])
    assert world.backbone(x).shape == (3, world.num_classes)
    block_in, block_out = world.backbone.hook_io(x)
    assert block_in.shape == block_out.shape == (3, cfg.backbone.dims[2], 4, 4)
    assert world.prior.eps(x, t_B).shape == world.cond_prior.given(torch.tensor([1, 2, 3])).eps(x, t_B).shape
    q = world.quality
    assert q["backbone_test_accuracy"] > 0.2  # chance is 0.1
    assert 0 <= q["prior_class_tv_to_uniform"] <= 1 and sum(q["prior_class_histogram"]) == cfg.num_quality_samples
    assert q["samples_BCHW"].shape == (cfg.num_quality_samples, 3, 16, 16)
    assert q["config_hash"] == miniworld_hash(cfg)
    first = cached_weights(cfg)

    monkeypatch.setattr(build, "train_resumable", forbid)
    monkeypatch.setattr(build, "_measure_quality", forbid)
    again = load_world(cfg, device="cpu", progress=False)
    assert again.quality["cache_hit"] and again.quality["trained_now"] == []
    assert numbers(again.quality) == numbers(q)
    assert torch.equal(again.quality["samples_BCHW"], q["samples_BCHW"])
    with torch.no_grad():
        assert torch.equal(again.prior.eps(x, t_B), world.prior.eps(x, t_B))
        assert torch.equal(again.backbone(x), world.backbone(x))
    assert_same_weights(first, cached_weights(cfg))


def test_interrupted_training_resumes_from_its_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "uninterrupted"))
    reference = build.load_miniworld(TINY, device="cpu", progress=False)
    reference_weights = cached_weights(TINY)

    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "interrupted"))
    seen: list[tuple[str, int]] = []

    def crash_at(kind: str, step: int):
        def on_step(k: str, s: int) -> None:
            seen.append((k, s))
            if (k, s) == (kind, step):
                raise Crash
        return on_step

    with pytest.raises(Crash):  # killed in the backbone, after its checkpoint at step 20
        build.load_miniworld(TINY, device="cpu", progress=False, on_step=crash_at("backbone", 25))
    folder = build.world_folder(TINY)
    assert (folder / "ckpt_backbone.pt").exists() and not (folder / "backbone.safetensors").exists()
    seen.clear()
    with pytest.raises(Crash):  # resumes the backbone at step 21, then is killed in the prior
        build.load_miniworld(TINY, device="cpu", progress=False, on_step=crash_at("prior", 35))
    assert seen[0] == ("backbone", 21) and seen[-1] == ("prior", 35)
    seen.clear()
    resumed = build.load_miniworld(TINY, device="cpu", progress=False, on_step=crash_at("none", 0))
    assert seen[0] == ("prior", 31) and resumed.quality["trained_now"] == ["prior", "factor_classifier"]
    assert sorted(p.name for p in folder.iterdir()) == ["backbone.safetensors", "config.json",
                                                        "factor_classifier.safetensors", "prior.safetensors",
                                                        "quality.json", "samples.safetensors"]
    assert folder.name == miniworld_hash(TINY) == reference.quality["config_hash"]
    assert_same_weights(reference_weights, cached_weights(TINY))
    assert resumed.quality["final_loss_prior"] == reference.quality["final_loss_prior"]
    assert resumed.quality["backbone_test_accuracy"] == reference.quality["backbone_test_accuracy"]
    assert torch.equal(resumed.quality["samples_BCHW"], reference.quality["samples_BCHW"])


def test_refine_stages_start_from_the_previous_stage_and_resume_exactly(tmp_path, monkeypatch):
    one_stage = dataclasses.replace(TINY, prior=dataclasses.replace(TINY.prior, refine=(RefineStage(20, 5e-4),)))
    refined = dataclasses.replace(TINY, prior=dataclasses.replace(
        TINY.prior, refine=(RefineStage(20, 5e-4), RefineStage(20, 2e-4, ema_decay=0.95))))
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "unrefined"))
    build.load_miniworld(TINY, device="cpu", progress=False)
    unrefined_prior = cached_weights(TINY)["prior"]
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "one_stage"))
    build.load_miniworld(one_stage, device="cpu", progress=False)
    one_stage_prior = cached_weights(one_stage)["prior"]
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "uninterrupted"))
    reference = build.load_miniworld(refined, device="cpu", progress=False)
    reference_weights = cached_weights(refined)

    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "interrupted"))
    seen: list[tuple[str, int]] = []
    crash_at = [("prior_refine1", 15), ("prior_refine2", 15)]  # each once

    def on_step(kind: str, step: int) -> None:
        seen.append((kind, step))
        if (kind, step) in crash_at:
            crash_at.remove((kind, step))
            raise Crash
    folder = build.world_folder(refined)

    def assert_stage_file(k: int, expected: dict[str, torch.Tensor]) -> None:
        stage = load_file(folder / f"ckpt_prior_stage{k}.safetensors")
        assert stage.keys() == expected.keys() and all(torch.equal(stage[n], expected[n]) for n in stage)

    with pytest.raises(Crash):  # killed in the first refine stage, after its checkpoint at step 10
        build.load_miniworld(refined, device="cpu", progress=False, on_step=on_step)
    assert ("prior", 40) in seen and not (folder / "ckpt_prior.pt").exists()
    assert_stage_file(1, unrefined_prior)  # what the first refine stage starts from
    seen.clear()
    with pytest.raises(Crash):  # resumed, then killed in the second refine stage
        build.load_miniworld(refined, device="cpu", progress=False, on_step=on_step)
    assert seen[0] == ("prior_refine1", 11) and ("prior_refine2", 15) in seen
    assert not (folder / "ckpt_prior_stage1.safetensors").exists() and not (folder / "ckpt_prior_refine1.pt").exists()
    assert_stage_file(2, one_stage_prior)  # the second starts from the one-stage world's prior
    seen.clear()
    resumed = build.load_miniworld(refined, device="cpu", progress=False, on_step=on_step)
    assert seen[0] == ("prior_refine2", 11) and resumed.quality["trained_now"] == ["prior", "factor_classifier"]
    assert not list(folder.glob("ckpt_*"))
    assert_same_weights(reference_weights, cached_weights(refined))
    assert any(not torch.equal(reference_weights["prior"][k], one_stage_prior[k]) for k in one_stage_prior)
    assert torch.equal(resumed.quality["samples_BCHW"], reference.quality["samples_BCHW"])


def test_corrupt_cache_files_are_rebuilt_cleanly(cache):
    build.load_miniworld(TINY, device="cpu", progress=False)
    folder, weights = build.world_folder(TINY), cached_weights(TINY)
    prior_file = folder / "prior.safetensors"
    truncated = prior_file.read_bytes()[:1000]
    prior_file.unlink()
    prior_file.write_bytes(truncated)
    with pytest.warns(UserWarning, match="prior.safetensors is unreadable"):
        world = build.load_miniworld(TINY, device="cpu", progress=False)
    assert world.quality["trained_now"] == ["prior"] and not world.quality["cache_hit"]
    assert_same_weights(weights, cached_weights(TINY))  # the retrain is deterministic

    (folder / "quality.json").write_text("{not json")
    with pytest.warns(UserWarning, match="quality.json is unreadable"):
        world = build.load_miniworld(TINY, device="cpu", progress=False)
    assert world.quality["trained_now"] == [] and not world.quality["cache_hit"]
    assert "kid_prior_vs_test" in world.quality and build.load_miniworld(TINY, progress=False).quality["cache_hit"]


def test_a_truncated_checkpoint_restarts_training_from_step_zero(tmp_path):
    def run(on_step=None) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        target = torch.tensor([[1.0, -2.0, 0.5]])

        def loss(m, gen):
            x = torch.randn(16, 3, generator=gen)
            return (m(x) - x @ target.T).pow(2).mean()

        final, _ = train_resumable(model, loss, steps=12, lr=0.05, seed=3, checkpoint_path=tmp_path / "ckpt.pt",
                                   checkpoint_every=4, progress=False, on_step=on_step)
        return final

    reference = run()
    (tmp_path / "ckpt.pt").unlink(missing_ok=True)

    def crash(step):
        if step == 10:
            raise Crash
    with pytest.raises(Crash):
        run(crash)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    steps: list[int] = []
    with pytest.warns(UserWarning, match="restarts from step 0"):
        final = run(steps.append)
    assert steps[0] == 1 and steps[-1] == 12
    assert torch.equal(final.weight, reference.weight) and torch.equal(final.bias, reference.bias)
