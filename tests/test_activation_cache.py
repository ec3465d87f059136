"""Activation cache (App J.1 training data): atomic float16 shards, manifest checks,
resume after a crash, shuffled bounded-memory loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny_convnext import RandomImages, tiny_backbone
from klsc_lib.sae.activation_cache import (
    ActivationCache, CacheIncompleteError, CacheMismatchError, build_activation_cache,
)

CONFIG = {"backbone": "tiny-convnext", "block": "stages.2.blocks.1", "dataset": "random-13"}


class CrashingImages(RandomImages):
    """Raises when image ``crash_at`` is read (a simulated crash mid-build)."""

    def __init__(self, n, crash_at):
        super().__init__(n)
        self.crash_at = crash_at

    def __getitem__(self, i):
        if i == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        return super().__getitem__(i)


def _build(root, data, **kw):
    return build_activation_cache(tiny_backbone(), data, root, CONFIG, shard_size=4, batch_size=3, progress=False, **kw)


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_cache_holds_float16_hook_activations(tmp_path):
    data = RandomImages(13)
    cache = _build(tmp_path, data)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n_shards"] == 4 and manifest["dtype"] == "float16" and manifest["in_shape"] == [32, 4, 4]
    assert np.load(tmp_path / "shard_00003.in.npy", mmap_mode="r").shape == (1, 32, 4, 4)
    ids = [12, 0, 5]
    expected_in, expected_out = tiny_backbone().hook_io(torch.stack([data[i][0] for i in ids]))
    got = cache.get(ids)
    assert got.ids_B.tolist() == ids
    torch.testing.assert_close(got.in_BCHW, expected_in.half().float())
    torch.testing.assert_close(got.out_BCHW, expected_out.half().float())


def test_resume_after_crash_is_byte_identical(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    _build(full, RandomImages(13))
    with pytest.raises(KeyboardInterrupt):
        _build(crashed, CrashingImages(13, crash_at=9))  # dies inside shard 2
    assert sorted(p.name for p in crashed.iterdir()) == [
        "manifest.json", "shard_00000.in.npy", "shard_00000.out.npy", "shard_00001.in.npy", "shard_00001.out.npy"]
    with pytest.raises(CacheIncompleteError, match="resume"):
        ActivationCache(crashed)
    seen = []
    _build(crashed, RandomImages(13), on_batch=lambda ids, i, o: seen.extend(ids.tolist()))
    assert seen == list(range(8, 13))  # only the missing shards were recomputed
    assert _files(crashed) == _files(full)


def test_mismatched_manifest_raises(tmp_path):
    _build(tmp_path, RandomImages(13))
    with pytest.raises(CacheMismatchError, match="another config"):
        build_activation_cache(tiny_backbone(), RandomImages(13), tmp_path, dict(CONFIG, block="stages.1.blocks.0"),
                               shard_size=4, progress=False)
    with pytest.raises(CacheMismatchError):
        ActivationCache(tmp_path, config=dict(CONFIG, dataset="other"))
    with pytest.raises(FileNotFoundError, match="build_activation_cache"):
        ActivationCache(tmp_path / "nowhere")


def test_shuffled_batches_cover_each_epoch_and_split_ranks(tmp_path):
    cache = _build(tmp_path, RandomImages(13))
    all_in = cache.get(range(13)).in_BCHW
    key = lambda t: t.flatten().sum().item()
    row_of = {round(key(all_in[i]), 3): i for i in range(13)}
    it = cache.shuffled(batch_size=4, seed=0)
    epoch = [next(it) for _ in range(3)]  # 13 // 4 = 3 batches per epoch
    ids = [row_of[round(key(x), 3)] for xb, _ in epoch for x in xb]
    assert len(set(ids)) == 12
    assert ids != sorted(ids)
    # resuming at step 2 gives the same batch as the third one; ranks split the global batch
    torch.testing.assert_close(next(cache.shuffled(4, seed=0, start_step=2))[0], epoch[2][0])
    halves = [next(cache.shuffled(4, seed=0, rank=r, world_size=2))[0] for r in range(2)]
    torch.testing.assert_close(torch.cat(halves), epoch[0][0])
    with pytest.raises(IndexError):
        cache.get([13])
