from __future__ import annotations

import pytest
import torch

from klsc_lib.profiles import get_profile
from klsc_lib.runtime import atomic_path, cache_dir, config_hash, resolve_device, seed_everything


def test_config_hash_is_order_independent_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_atomic_path_commits_only_on_success(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]


def test_resolve_device_auto_and_explicit():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


def test_seed_everything_is_reproducible():
    a = torch.randn(3, generator=seed_everything(7))
    b = torch.randn(3, generator=seed_everything(7))
    assert torch.equal(a, b)


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KLSC_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()


def test_unknown_profile_and_notebook_are_clear_errors():
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("01_gmm_constraints", "fast")
    with pytest.raises(ValueError, match="no profiles for notebook"):
        get_profile("99_nothing", "smoke")
