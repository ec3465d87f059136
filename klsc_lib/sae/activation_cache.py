"""On-disk cache of hooked-block activations for transcoder training (paper App J.1:
the transcoder is trained on (block input, block output) pairs of the hooked
ConvNeXt block over a large image set; the authors' release).

Layout of a cache folder::

    manifest.json            config + its hash, shapes, dtype, shard size and count
    shard_00000.in.npy       float16 (shard_size, C_in, H, W), memory-mapped on read
    shard_00000.out.npy      float16 (shard_size, C_out, H, W)
    ...

Every shard file is written to a temporary name and renamed (atomic), so a crash
leaves only whole shards; :func:`build_activation_cache` on the same folder and
config resumes at the first missing shard and yields byte-identical files. A folder
whose manifest was written for another config raises :class:`CacheMismatchError`.
Reading goes through ``np.load(mmap_mode="r")``: memory stays at one batch
whatever the dataset size. The normative description of the format is
``klsc_lib/sae/activation_cache_protocol.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from klsc_lib.interfaces import HookedBackbone
from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, config_hash

MANIFEST = "manifest.json"
DTYPE = np.float16


class CacheMismatchError(RuntimeError):
    """The cache folder holds activations made under a different config."""


class CacheIncompleteError(RuntimeError):
    """Some shards are missing (an interrupted build)."""


def _shard_path(root: Path, shard: int, which: str) -> Path:
    return root / f"shard_{shard:05d}.{which}.npy"


def _write_npy_atomically(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=array.shape)
        out[...] = array
        out.flush()
        del out


def _check_manifest(root: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    if manifest["config_hash"] != config_hash(config):
        raise CacheMismatchError(
            f"activation cache {root} was built for another config (hash {manifest['config_hash']}, "
            f"config {manifest['config']}); requested hash {config_hash(config)}, config {config}. "
            "Use another folder for this config, or delete the folder to rebuild it.")
    return manifest


def _complete(root: Path, shard: int) -> bool:
    return _shard_path(root, shard, "in").exists() and _shard_path(root, shard, "out").exists()


def missing_shards(root: str | Path, n_shards: int) -> list[int]:
    """Shards of a cache folder that are not complete yet (both files present), ascending."""
    return [s for s in range(n_shards) if not _complete(Path(root), s)]


def _run(backbone: HookedBackbone, dataset: torch.utils.data.Dataset, ids: range, device: torch.device
         ) -> tuple[torch.Tensor, torch.Tensor]:
    images_BCHW = torch.stack([dataset[i][0] for i in ids]).to(device)
    in_BCHW, out_BCHW = backbone.hook_io(images_BCHW)
    return in_BCHW.float().cpu(), out_BCHW.float().cpu()


@torch.no_grad()
def ensure_manifest(backbone: HookedBackbone, dataset: torch.utils.data.Dataset, root: str | Path,
                    config: dict[str, Any], shard_size: int = 256, device: torch.device | str = "cpu"
                    ) -> dict[str, Any]:
    """The manifest of ``root`` for ``config`` (plus ``shard_size`` and ``n_images``):
    read and checked (:class:`CacheMismatchError` for another config), or written
    atomically after a probe of two images. Shards are written by :func:`write_shards`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_images = len(dataset)
    if n_images == 0:
        raise ValueError("cannot cache activations of an empty dataset")
    config = dict(config, shard_size=shard_size, n_images=n_images)
    manifest = _check_manifest(root, config)
    if manifest is None:
        in_BCHW, out_BCHW = _run(backbone, dataset, range(min(2, n_images)), torch.device(device))
        manifest = {"config": config, "config_hash": config_hash(config), "n_images": n_images,
                    "shard_size": shard_size, "n_shards": math.ceil(n_images / shard_size),
                    "dtype": np.dtype(DTYPE).name, "in_shape": list(in_BCHW.shape[1:]),
                    "out_shape": list(out_BCHW.shape[1:])}
        atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


@torch.no_grad()
def write_shards(backbone: HookedBackbone, dataset: torch.utils.data.Dataset, root: str | Path,
                 shards: list[int], batch_size: int = 64, device: torch.device | str = "cpu",
                 progress: bool = True,
                 on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                 on_shard: Callable[[int], None] | None = None) -> None:
    """Compute and store the given ``shards`` of the cache in ``root`` (its manifest
    must exist); complete ones are skipped, so several processes may each write their
    own subset. ``on_shard(shard)`` is called after each shard is stored."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text())
    n_images, shard_size, device = manifest["n_images"], manifest["shard_size"], torch.device(device)
    if len(dataset) != n_images:
        raise CacheMismatchError(f"the manifest of {root} counts {n_images} images, the dataset has {len(dataset)}")
    todo = [s for s in shards if not _complete(root, s)]
    for shard in tqdm(todo, desc="activation cache", unit="shard", disable=not progress):
        lo, hi = shard * shard_size, min((shard + 1) * shard_size, n_images)
        ins, outs = [], []
        for start in range(lo, hi, batch_size):
            ids = range(start, min(start + batch_size, hi))
            in_BCHW, out_BCHW = _run(backbone, dataset, ids, device)
            if on_batch is not None:
                on_batch(torch.tensor(list(ids)), in_BCHW, out_BCHW)
            ins.append(in_BCHW)
            outs.append(out_BCHW)
        for which, parts in (("out", outs), ("in", ins)):
            array = torch.cat(parts).numpy().astype(DTYPE)
            if not np.isfinite(array).all():
                raise OverflowError(f"hook activations of shard {shard} overflow float16; rescale them before caching")
            _write_npy_atomically(_shard_path(root, shard, which), array)
        if on_shard is not None:
            on_shard(shard)


def build_activation_cache(backbone: HookedBackbone, dataset: torch.utils.data.Dataset, root: str | Path,
                           config: dict[str, Any], shard_size: int = 256, batch_size: int = 64,
                           device: torch.device | str = "cpu", progress: bool = True,
                           on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                           ) -> "ActivationCache":
    """Run ``backbone`` over ``dataset`` (items ``(image_CHW, factors)``) and store the
    hooked block's input/output in float16 shards under ``root``.

    ``config`` must describe everything that determines the activations (backbone,
    block, dataset, image count...); it is hashed into the manifest. Existing whole
    shards are kept (resume). ``on_batch(image_ids_B, in_BCHW, out_BCHW)`` sees every
    freshly computed batch (e.g. to stream a :class:`klsc_lib.sae.topk_index.TopKIndex`).
    """
    manifest = ensure_manifest(backbone, dataset, root, config, shard_size, device)
    write_shards(backbone, dataset, root, list(range(manifest["n_shards"])), batch_size, device, progress, on_batch)
    return ActivationCache(root)


def cached_activations(backbone: HookedBackbone, dataset: torch.utils.data.Dataset, config: dict[str, Any],
                       n_images: int | None = None, **kwargs: Any) -> "ActivationCache":
    """The cache of the first ``n_images`` items of ``dataset`` (all if None) under
    ``cache_dir()/activations/<hash of config>/``: built, resumed or simply opened."""
    if n_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(n_images, len(dataset))))
    config = dict(config, block=backbone.block_name, backbone=backbone.name)
    root = cache_dir() / "activations" / config_hash(dict(config, n_images=len(dataset)))
    return build_activation_cache(backbone, dataset, root, config, **kwargs)


@dataclass(frozen=True)
class CachedBatch:
    ids_B: torch.Tensor
    in_BCHW: torch.Tensor
    out_BCHW: torch.Tensor


class ActivationCache:
    """Read side of a complete cache folder (memory-mapped shards)."""

    def __init__(self, root: str | Path, config: dict[str, Any] | None = None):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"no activation cache at {self.root} (missing {MANIFEST}); "
                                    "build it with build_activation_cache")
        self.manifest = json.loads(path.read_text())
        if config is not None:
            _check_manifest(self.root, dict(config, shard_size=self.shard_size, n_images=self.n_images))
        missing = missing_shards(self.root, self.manifest["n_shards"])
        if missing:
            raise CacheIncompleteError(f"activation cache {self.root} misses shards {missing[:5]}...; "
                                       "run build_activation_cache again with the same config to resume")
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    @property
    def n_images(self) -> int:
        return self.manifest["n_images"]

    @property
    def shard_size(self) -> int:
        return self.manifest["shard_size"]

    def __len__(self) -> int:
        return self.n_images

    def _map(self, shard: int, which: str) -> np.ndarray:
        key = (shard, which)
        if key not in self._maps:
            self._maps[key] = np.load(_shard_path(self.root, shard, which), mmap_mode="r")
        return self._maps[key]

    def get(self, ids: torch.Tensor | np.ndarray | list[int]) -> CachedBatch:
        """Activations of the given image ids, as float32 tensors, in the given order."""
        ids_B = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids_B.size and (ids_B.min() < 0 or ids_B.max() >= self.n_images):
            raise IndexError(f"image ids must be in [0, {self.n_images}), got {ids_B.min()}..{ids_B.max()}")
        shards, rows = np.divmod(ids_B, self.shard_size)
        parts = {}
        for which in ("in", "out"):
            shape = tuple(self.manifest[f"{which}_shape"])
            out = np.empty((ids_B.size, *shape), dtype=np.float32)
            for s in np.unique(shards):
                sel = np.nonzero(shards == s)[0]
                out[sel] = self._map(int(s), which)[rows[sel]]
            parts[which] = torch.from_numpy(out)
        return CachedBatch(torch.from_numpy(ids_B), parts["in"], parts["out"])

    def iterate(self, batch_size: int, ids: np.ndarray | None = None) -> Iterator[CachedBatch]:
        """Images in order (or the given ids), ``batch_size`` at a time."""
        ids = np.arange(self.n_images) if ids is None else np.asarray(ids)
        for start in range(0, len(ids), batch_size):
            yield self.get(ids[start:start + batch_size])

    def shuffled(self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless (in, out) batches, shuffled across shards: each epoch is a fresh
        permutation (seeded by ``seed`` and the epoch), cut into global batches of
        ``batch_size`` (the incomplete tail dropped). Rank ``r`` of ``world_size`` gets
        the r-th equal slice of every global batch (DDP); ``start_step`` resumes."""
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} must be divisible by world_size {world_size}")
        per_epoch = self.n_images // batch_size
        if per_epoch == 0:
            raise ValueError(f"batch_size {batch_size} exceeds the {self.n_images} cached images")
        local = batch_size // world_size
        step = start_step
        while True:
            epoch, offset = divmod(step, per_epoch)
            perm = torch.randperm(self.n_images, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            for b in range(offset, per_epoch):
                global_ids = perm[b * batch_size:(b + 1) * batch_size]
                batch = self.get(global_ids[rank * local:(rank + 1) * local])
                yield batch.in_BCHW, batch.out_BCHW
            step = (epoch + 1) * per_epoch

    def sample(self, n: int, seed: int = 0) -> CachedBatch:
        """``n`` random cached images (for data-dependent initialisation)."""
        ids = torch.randperm(self.n_images, generator=torch.Generator().manual_seed(seed))[:n]
        return self.get(ids.sort().values)
