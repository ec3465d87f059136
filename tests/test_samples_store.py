"""The samples store (notebooks 04-05, feature inspector): round trips, atomic writes,
stable config hashes, clear errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from klsc_lib import samples_store
from klsc_lib.samples_store import MissingSamplesError, SamplesStore

CONFIG = {"steps": 1000, "cap": 15.0, "prior": "imagenet256", "n_images": 4}


def test_round_trip_keeps_images_to_float16_and_everything_else_exactly(tmp_path):
    store = SamplesStore("EnergyDPS", "Feature", CONFIG, root=tmp_path)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    psi = torch.randn(4, generator=g)
    traj = torch.randn(5, 4, generator=g, dtype=torch.float64)
    store.put(81, images, psi, extras={"psi_TB": traj}, meta={"seeds": [45, 46, 47, 48], "wall_time_s": 3.5})
    got = store.get(81)
    assert got.images_BCHW.dtype == torch.float16 and torch.equal(got.images_BCHW, images.half())
    torch.testing.assert_close(got.images_BCHW.float(), images, rtol=0, atol=2 ** -10)  # float16 spacing in [-1, 1]
    assert torch.equal(got.psi_B, psi) and torch.equal(got.extras["psi_TB"], traj)
    assert got.meta == {"seeds": [45, 46, 47, 48], "wall_time_s": 3.5}
    assert store.has(81) and not store.has(82) and store.units() == [81]
    reopened = SamplesStore("EnergyDPS", "Feature", dict(reversed(list(CONFIG.items()))), root=tmp_path)
    assert reopened.folder == store.folder and reopened.units() == [81]  # key order does not matter


def test_a_crash_mid_write_leaves_no_visible_entry(tmp_path, monkeypatch):
    store = SamplesStore("MACO", "Neuron", CONFIG, root=tmp_path)
    before = sorted(p.name for p in store.folder.iterdir())

    def dying_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(samples_store, "save_file", dying_save)
    with pytest.raises(OSError, match="disk full"):
        store.put(3, torch.zeros(2, 3, 4, 4), torch.zeros(2))
    assert not store.has(3) and store.units() == []
    assert sorted(p.name for p in store.folder.iterdir()) == before  # no temporary file left either


def test_config_hash_is_the_sha256_of_sorted_json_and_names_the_folder(tmp_path):
    store = SamplesStore("TopK", "Feature", CONFIG, root=tmp_path)
    blob = json.dumps({"method": "TopK", "unit_kind": "Feature", "config": CONFIG}, sort_keys=True,
                      separators=(",", ":"))
    assert store.hash == hashlib.sha256(blob.encode()).hexdigest()[:12]
    assert store.folder == tmp_path / f"TopK-Feature-{store.hash}"
    assert SamplesStore("TopK", "Feature", dict(CONFIG, cap=20.0), root=tmp_path).hash != store.hash
    assert SamplesStore("TopK", "Neuron", CONFIG, root=tmp_path).hash != store.hash
    assert json.loads((store.folder / "store.json").read_text())["config"] == CONFIG


def test_unknown_method_kind_unit_and_missing_samples_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'DEXTER'.*EnergyDPS"):
        SamplesStore("DEXTER", "Feature", CONFIG, root=tmp_path)
    with pytest.raises(ValueError, match="unknown unit kind"):
        SamplesStore("MACO", "Channel", CONFIG, root=tmp_path)
    store = SamplesStore("DiffExplainer", "Feature", CONFIG, root=tmp_path)
    store.put(5, torch.zeros(2, 3, 4, 4), torch.ones(2))
    with pytest.raises(KeyError) as err:
        store.get(9)
    assert isinstance(err.value, MissingSamplesError)
    assert "no DiffExplainer samples for feature 9" in str(err.value) and "[5]" in str(err.value)
    assert ".put(9, images, psi)" in str(err.value)
    with pytest.raises(ValueError, match="psi"):
        store.put(1, torch.zeros(2, 3, 4, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="reserved"):
        store.put(1, torch.zeros(2, 3, 4, 4), torch.zeros(2), extras={"psi_B": torch.zeros(2)})
    with pytest.raises(ValueError, match="non-negative int"):
        store.has(-1)
    (store.folder / "feature_000007.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(ValueError, match="corrupt"):
        store.get(7)


def test_open_without_create_finds_a_written_store_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MACO feature samples store"):
        SamplesStore("MACO", "Feature", CONFIG, root=tmp_path, create=False)
    assert list(tmp_path.iterdir()) == []  # nothing was written
    SamplesStore("MACO", "Feature", CONFIG, root=tmp_path).put(3, torch.zeros(1, 3, 4, 4), torch.zeros(1))
    assert SamplesStore("MACO", "Feature", CONFIG, root=tmp_path, create=False).units() == [3]


def test_reach_reads_levels_and_stopping_steps_from_the_store(tmp_path):
    """notebook 04's budget report: 2 of 3 units reach 0.9 t, 1 reaches t (at step 40); the
    unit that never reached t stored the step closest to it, which is not a step to t."""
    from klsc_lib.studies.nb04_energydps import reach

    store = SamplesStore("MACO", "Feature", CONFIG, root=tmp_path)
    img = torch.zeros(2, 3, 4, 4)
    for unit, psi, step in ((1, [1.0, 0.9], 8), (2, [0.5, 0.5], 100), (3, [2.0, 2.2], 40)):
        store.put(unit, img, torch.tensor(psi), extras={"knob": torch.tensor([float(step)])})
    got = reach(store, torch.tensor([1, 2, 3]), torch.tensor([1.0, 1.0, 2.0]), budget=128)
    assert got["share_at_0.9t"] == pytest.approx(2 / 3) and got["share_at_t"] == pytest.approx(1 / 3)
    assert got["steps_to_t_median"] == 40 and got["budget"] == 128
