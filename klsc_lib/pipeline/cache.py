"""Stage ``cache``: hooked-block activations of the train and held-out images, split
by rank (paper App J.1; format: ``klsc_lib/sae/activation_cache_protocol.md``).

Rank 0 writes (or checks) each split's manifest; every rank lists the missing shards,
then writes every ``world_size``-th of them; complete shards are skipped on a rerun.
Shard ``s`` always holds images ``s*S ... (s+1)*S - 1``, so the folder is byte-identical
whatever the number of ranks.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.worlds import WorldSpec, images, rank_backbone
from klsc_lib.sae.activation_cache import ActivationCache, ensure_manifest, missing_shards, write_shards

SPLITS = ("train", "test")


def cache_root(out: str | Path, split: str) -> Path:
    return Path(out) / "cache" / split


def run_cache(spec: WorldSpec, out: str | Path, ranks: D.Ranks, n_images: int | None, n_eval_images: int | None,
              shard_size: int, batch_size: int, progress: bool = True) -> dict:
    """Cache both splits (the first ``n_images`` train / ``n_eval_images`` held-out
    images; None = all). Returns this rank's count of freshly computed images and seconds."""
    net = rank_backbone(spec, ranks)
    computed, t0 = 0, time.perf_counter()
    for split, n in (("train", n_images), ("test", n_eval_images)):
        data = images(spec, split)
        if n is not None:
            data = torch.utils.data.Subset(data, range(min(n, len(data))))
        root = cache_root(out, split)
        config = dict(spec.key(), split=split, backbone=net.name, block=net.block_name)
        manifest = D.primary_first(ranks, lambda: ensure_manifest(net, data, root, config, shard_size, ranks.device))
        todo = missing_shards(root, manifest["n_shards"])
        D.barrier()  # every rank has listed the same missing shards before any is written
        mine = D.my_share(todo, ranks)
        bar = D.Progress(ranks, f"cache {split}", manifest["n_shards"], len(mine),
                         lambda: manifest["n_shards"] - len(missing_shards(root, manifest["n_shards"])),
                         disable=not progress)
        write_shards(net, data, root, mine, batch_size, ranks.device, progress=False, on_shard=lambda s: bar.step())
        bar.close()
        computed += sum(min(shard_size, manifest["n_images"] - s * shard_size) for s in mine)
        D.barrier()
        if ranks.is_primary:
            ActivationCache(root, config)  # raises if a shard is missing or the config differs
    return {"images_this_rank": computed, "seconds": time.perf_counter() - t0}
