"""Pieces of the pipeline that need no process group: the exact merge of per-rank
top-k indices, shard subsets of the activation cache, per-feature seeds, the rank
split, feature choice and the CLI's config file."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from _tiny_convnext import RandomImages, tiny_backbone
from klsc_lib.diffusion.guidance import sample_seeds
from klsc_lib.pipeline.__main__ import parse_args
from klsc_lib.pipeline.distributed import Ranks, my_share
from klsc_lib.pipeline.sample import choose_features
from klsc_lib.pipeline.train import history_csv
from klsc_lib.sae.activation_cache import (ActivationCache, CacheIncompleteError, build_activation_cache,
                                           ensure_manifest, missing_shards, write_shards)
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.sae.training import History


def _ranks(rank: int, world_size: int) -> Ranks:
    return Ranks(rank, world_size, rank, torch.device("cpu"))


def test_merged_parts_equal_one_streaming_pass_even_with_ties():
    g = torch.Generator().manual_seed(0)
    # integer-valued maps: many exact ties between images, and units that never fire (all 0)
    maps_NUHW = torch.randint(0, 4, (40, 6, 3, 3), generator=g).float()
    maps_NUHW[:, 5] = 0
    whole = TopKIndex(6, 7)
    for start in range(0, 40, 8):
        whole.update_maps(maps_NUHW[start:start + 8], torch.arange(start, start + 8))
    parts = [TopKIndex(6, 7) for _ in range(3)]
    for b, start in enumerate(range(0, 40, 8)):  # batches dealt round-robin to 3 "ranks", in another order
        parts[b % 3].update_maps(maps_NUHW[start:start + 8].flip(0), torch.arange(start, start + 8).flip(0))
    merged = TopKIndex.merged(parts)
    for name in ("scores_UK", "ids_UK", "pos_UK", "hist_UB"):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    # independent fact: the best image of a unit is the lowest id among those with the highest peak
    peak_NU = maps_NUHW.flatten(2).amax(2)
    for u in range(6):
        best = peak_NU[:, u].max()
        assert merged.top_ids(u)[0] == int(torch.nonzero(peak_NU[:, u] == best)[0])
    assert merged.top_ids(5) == list(range(7)) and merged.n_images == 40
    with pytest.raises(ValueError, match="cannot merge"):
        TopKIndex.merged([TopKIndex(6, 7), TopKIndex(6, 8)])


def test_shard_subsets_written_apart_equal_one_build(tmp_path):
    backbone, data = tiny_backbone(), RandomImages(20, size=32)
    whole = build_activation_cache(backbone, data, tmp_path / "whole", {"t": 1}, shard_size=6, batch_size=4,
                                   progress=False)
    manifest = ensure_manifest(backbone, data, tmp_path / "split", {"t": 1}, shard_size=6)
    assert manifest == whole.manifest and missing_shards(tmp_path / "split", 4) == [0, 1, 2, 3]
    write_shards(backbone, data, tmp_path / "split", [3, 1], batch_size=4, progress=False)
    assert missing_shards(tmp_path / "split", 4) == [0, 2]
    with pytest.raises(CacheIncompleteError):
        ActivationCache(tmp_path / "split")
    seen = []
    write_shards(backbone, data, tmp_path / "split", [0, 1, 2, 3], batch_size=4, progress=False,
                 on_shard=seen.append)
    assert seen == [0, 2]  # complete shards are skipped
    for path in sorted((tmp_path / "whole").glob("shard_*")):
        assert path.read_bytes() == (tmp_path / "split" / path.name).read_bytes(), path.name


def test_sample_seeds_depend_only_on_seed_unit_and_sample_index():
    assert sample_seeds(0, 7, 3) == sample_seeds(0, 7, 5)[:3]
    assert sample_seeds(0, 7, 2, start=3) == sample_seeds(0, 7, 5)[3:]
    seeds = {s for f in range(50) for s in sample_seeds(0, f, 4)} | set(sample_seeds(1, 0, 4))
    assert len(seeds) == 50 * 4 + 4 and all(0 <= s < 2**63 for s in seeds)


def test_rank_shares_partition_the_items():
    items = list(range(11))
    shares = [my_share(items, _ranks(r, 3)) for r in range(3)]
    assert sorted(sum(shares, [])) == items and [len(s) for s in shares] == [4, 4, 3]


def test_choose_features_checks_ids_and_draws_only_firing_features():
    index = TopKIndex(10, 2)
    scores_BU = torch.zeros(3, 10)
    scores_BU[:, [1, 4, 8]] = torch.tensor([1.0, 2.0, 3.0])
    index.update_scores(scores_BU, torch.arange(3))
    assert choose_features(index, [8, 1, 8], None, 0) == [1, 8]
    assert set(choose_features(index, None, 3, 0)) == {1, 4, 8}
    assert len(choose_features(index, None, 2, 5)) == 2
    with pytest.raises(ValueError, match="unknown feature ids"):
        choose_features(index, [10], None, 0)
    with pytest.raises(ValueError, match="only 3 features fire"):
        choose_features(index, None, 4, 0)
    with pytest.raises(ValueError, match="either"):
        choose_features(index, None, None, 0)


def test_history_csv_round_trips():
    history = History(step=[0, 5], loss=[2.0, 1.5], fvu=[0.9, 0.5], l0=[4.0, 4.0], dead_frac=[float("nan"), 0.25],
                      lr=[1e-3, 5e-4])
    rows = list(csv.DictReader(io.StringIO(history_csv(history))))
    assert [int(r["step"]) for r in rows] == [0, 5] and float(rows[1]["dead_frac"]) == 0.25
    assert float(rows[1]["lr"]) == 5e-4


def test_config_file_supplies_defaults_and_flags_win(tmp_path):
    config = tmp_path / "run.json"
    config.write_text('{"n-images": 12, "shard_size": 4}')
    args = parse_args(["cache", "--out", str(tmp_path), "--config", str(config), "--shard-size", "8"])
    assert (args.n_images, args.shard_size) == (12, 8)
    config.write_text('{"steps": 3}')
    with pytest.raises(SystemExit):
        parse_args(["cache", "--out", str(tmp_path), "--config", str(config)])  # steps is a train option
