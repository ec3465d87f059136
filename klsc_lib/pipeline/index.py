"""Stage ``index``: the top-k images of every transcoder feature (or backbone neuron)
over the held-out cache (paper Sec 3.1 (i), App J.3 dataset search as a lookup).

Each rank indexes every ``world_size``-th shard and saves its part; rank 0 merges the
parts exactly (:meth:`klsc_lib.sae.topk_index.TopKIndex.merged`: equal scores ordered by
image id), so the index equals a single streaming pass. Finished parts are kept on a
rerun; the final index is ``OUT/index/<units>_top<k>.safetensors`` (+ ``.json``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.cache import cache_root
from klsc_lib.pipeline.train import transcoder_dir
from klsc_lib.sae.activation_cache import ActivationCache
from klsc_lib.sae.artifacts import load_transcoder
from klsc_lib.sae.topk_index import TopKIndex, index_maps

UNITS = ("features", "neurons")


def index_path(out: str | Path, units: str, k: int) -> Path:
    return Path(out) / "index" / f"{units}_top{k}.safetensors"


def _done(path: Path) -> bool:
    return path.exists() and path.with_suffix(".json").exists()


@torch.no_grad()
def run_index(out: str | Path, ranks: D.Ranks, k: int, units: Literal["features", "neurons"] = "features",
              batch_size: int = 256, progress: bool = True) -> dict:
    if units not in UNITS:
        raise ValueError(f"--units must be one of {UNITS}, got {units!r}")
    final = index_path(out, units, k)
    if _done(final):
        return {"status": "already indexed", "path": str(final)}
    held_out = ActivationCache(cache_root(out, "test"))
    model, _ = load_transcoder(transcoder_dir(out))
    model.to(ranks.device)
    if units == "features":
        which, n_units = "in", model.cfg.d_sae
        maps_fn = lambda x: model.encode(x.to(ranks.device)).cpu()  # noqa: E731
    else:
        which, n_units, maps_fn = "out", held_out.manifest["out_shape"][0], (lambda x: x)  # noqa: E731
    parts_dir = final.parent / "parts"
    part = parts_dir / f"{final.stem}_rank{ranks.rank}of{ranks.world_size}.safetensors"
    shards = D.my_share(range(held_out.manifest["n_shards"]), ranks)
    if not _done(part):
        size, n = held_out.shard_size, held_out.n_images
        ids = np.concatenate([np.arange(s * size, min((s + 1) * size, n)) for s in shards] or [np.zeros(0, int)])
        batches = ((b.ids_B, getattr(b, f"{which}_BCHW")) for b in held_out.iterate(batch_size, ids))
        batches = tqdm(batches, desc=f"index {units} rank {ranks.rank}", total=-(-len(ids) // batch_size),
                       position=ranks.rank, disable=not progress)
        index_maps(batches, maps_fn, n_units, k).save(part, meta={"shards": shards})
    D.barrier()
    if ranks.is_primary:
        parts = [TopKIndex.load(parts_dir / f"{final.stem}_rank{r}of{ranks.world_size}.safetensors")
                 for r in range(ranks.world_size)]
        merged = TopKIndex.merged(parts)
        if merged.n_images != held_out.n_images:
            raise RuntimeError(f"the index parts cover {merged.n_images} images, the held-out cache has "
                               f"{held_out.n_images}; delete {parts_dir} and rerun the index stage")
        merged.save(final, meta={"units": units, "held_out_cache": held_out.manifest["config_hash"],
                                 "transcoder": str(transcoder_dir(out))})
        shutil.rmtree(parts_dir)
    D.barrier()
    return {"status": "indexed", "path": str(final), "shards": len(shards)}
