"""Streaming top-k index == brute-force dataset search (paper Sec 3.1 (i), Table 11)."""

from __future__ import annotations

import pytest
import torch

from _tiny_convnext import RandomImages, tiny_backbone
from klsc_lib.sae.activation_cache import build_activation_cache
from klsc_lib.sae.topk_index import HIST_EDGES, TopKIndex, index_maps, rescan_top_ids


def _brute_force(maps_NUHW: torch.Tensor, k: int):
    peak_NU, pos_NU = maps_NUHW.flatten(2).max(dim=2)
    order_UK = peak_NU.T.argsort(dim=1, descending=True)[:, :k]
    return order_UK, peak_NU.T.gather(1, order_UK), pos_NU.T.gather(1, order_UK)


def test_streaming_equals_brute_force_on_random_maps():
    maps = torch.randn(57, 9, 3, 5, generator=torch.Generator().manual_seed(0))
    index = TopKIndex(n_units=9, k=6)
    for start in range(0, 57, 10):  # uneven last batch
        index.update_maps(maps[start:start + 10], torch.arange(start, min(start + 10, 57)))
    ids, scores, pos = _brute_force(maps, 6)
    for u in range(9):
        hits = index.lookup(u)
        assert [h.image_id for h in hits] == ids[u].tolist()
        assert [h.score for h in hits] == pytest.approx(scores[u].tolist())
        assert [h.position for h in hits] == [divmod(p, 5) for p in pos[u].tolist()]


def test_index_streamed_while_caching_equals_rescan(tmp_path):
    backbone, data = tiny_backbone(), RandomImages(23)
    index = TopKIndex(n_units=32, k=4)  # neurons = channels of the block output
    build_activation_cache(backbone, data, tmp_path, {"test": "index"}, shard_size=8, batch_size=5, progress=False,
                           on_batch=lambda ids, i, o: index.update_maps(o, ids))
    with torch.no_grad():
        _, out = backbone.hook_io(torch.stack([data[i][0] for i in range(23)]))
    ids, _, _ = _brute_force(out, 4)
    assert all(index.top_ids(u) == ids[u].tolist() for u in range(32))


def test_fewer_images_than_k_and_save_load(tmp_path):
    index = TopKIndex(n_units=2, k=5)
    index.update_scores(torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([7, 8]))
    assert index.top_ids(0) == [8, 7] and index.top_ids(1) == [8, 7]
    index.save(tmp_path / "idx.safetensors", meta={"what": "test"})
    again = TopKIndex.load(tmp_path / "idx.safetensors")
    assert again.lookup(1) == index.lookup(1)
    assert torch.equal(again.hist_UB, index.hist_UB) and again.n_images == 2


def test_histogram_counts_every_image_in_its_log_bin():
    maps = torch.randn(40, 3, 2, 2, generator=torch.Generator().manual_seed(1)).exp() * 10 - 5  # some below 0
    maps[:, 2] = 0.0  # a unit that never fires
    maps[0, 1, 0, 0] = 5e3  # above the last edge
    index = index_maps(((torch.arange(i, min(i + 16, 40)), maps[i:i + 16]) for i in range(0, 40, 16)), lambda x: x, 3, 4)
    peaks_NU = maps.flatten(2).amax(2).double()
    edges = [-float("inf")] + HIST_EDGES.tolist() + [float("inf")]
    for u in range(3):
        counts, _ = index.histogram(u)
        expected = [int(((peaks_NU[:, u] >= lo) & (peaks_NU[:, u] < hi)).sum()) for lo, hi in zip(edges, edges[1:])]
        assert counts.tolist() == expected
        assert counts.sum() == 40
    assert index.histogram(2)[0][0] == 40 and index.histogram(1)[0][-1] == 1


def test_saved_index_refuses_a_missing_sidecar_and_a_corrupt_file(tmp_path):
    index = TopKIndex(n_units=2, k=3)
    index.update_scores(torch.rand(4, 2), torch.arange(4))
    path = tmp_path / "idx.safetensors"
    index.save(path)
    path.with_suffix(".json").unlink()  # as if the writer died between the two files
    with pytest.raises(FileNotFoundError, match="no saved top-k index"):
        TopKIndex.load(path)
    index.save(path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="corrupt.*delete"):
        TopKIndex.load(path)


def test_rescan_finds_the_index_top_images():
    maps = torch.randn(30, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    batches = lambda: ((torch.arange(i, min(i + 7, 30)), maps[i:i + 7]) for i in range(0, 30, 7))
    index = index_maps(batches(), lambda x: x, 4, 5)
    assert all(rescan_top_ids(batches(), lambda x: x, u, 5) == index.top_ids(u) for u in range(4))


def test_unknown_unit_and_bad_batches_raise():
    index = TopKIndex(n_units=3, k=2)
    with pytest.raises(KeyError, match="units 0..2"):
        index.lookup(3)
    with pytest.raises(KeyError):
        index.lookup(-1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        index.update_maps(torch.randn(2, 4, 2, 2), torch.arange(2))
    with pytest.raises(ValueError, match="NaN"):
        index.update_scores(torch.full((1, 3), float("nan")), torch.arange(1))
