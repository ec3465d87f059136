"""A large pool of fresh draws from the mini-world's own generator (:mod:`.data`), scored
batch by batch: the prior p of the exact reference
(:mod:`klsc_lib.constraints.exact_reference`, paper App H.2: self-normalised importance
sampling with proposal p).

Every image is a pure function of its latents, so the pool keeps the latents (factors,
glyph, crop) and the scores psi_NU, not the pixels; :meth:`ScoredPool.images` re-renders
any subset (e.g. q*'s resampled indices). Batch ``b`` draws its latents from its own seed,
disjoint from the seeds of the world's train / test sets, and is written to
``$KLSC_CACHE/reference_pool/<hash>/`` atomically as soon as it is scored, so an
interrupted run resumes where it stopped and a changed setting never reuses a stale pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from tqdm.auto import tqdm

from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, config_hash
from klsc_lib.worlds.miniworld.data import WorldSample, render_batch, sample_latents

POOL_SEED_BASE = 1_000_003  # batch b of pool seed s uses generator seed POOL_SEED_BASE * (s + 1) + b


@dataclass(frozen=True)
class ScoredPool:
    """N generator draws: their latents and the scores psi_NU of U units."""

    psi_NU: torch.Tensor
    latents: WorldSample

    def __len__(self) -> int:
        return len(self.psi_NU)

    @property
    def factors(self) -> dict[str, torch.Tensor]:
        return self.latents.factors

    def images(self, idx_M: torch.Tensor) -> torch.Tensor:
        """(M, 3, 16, 16) images of the pool points ``idx_M``, re-rendered from their latents."""
        idx_M = torch.as_tensor(idx_M).long()
        sub = WorldSample({k: v[idx_M] for k, v in self.latents.factors.items()}, self.latents.glyph_N[idx_M],
                          self.latents.crop_N2[idx_M])
        return render_batch(sub)


def pool_batch_latents(b: int, batch_size: int, n: int, split: str, seed: int) -> WorldSample:
    """Latents of batch ``b`` of an ``n``-draw pool (the last batch may be short)."""
    size = min(batch_size, n - b * batch_size)
    if size < 1:
        raise ValueError(f"batch {b} is past the end of a pool of {n} draws in batches of {batch_size}")
    return sample_latents(size, split, POOL_SEED_BASE * (seed + 1) + b)


def _score_batch(psi_BU: Callable[[torch.Tensor], torch.Tensor], latents: WorldSample, b: int,
                 device: torch.device | str) -> torch.Tensor:
    with torch.no_grad():
        psi = psi_BU(render_batch(latents).to(device)).float().cpu()
    n = len(latents.glyph_N)
    if psi.ndim != 2 or psi.shape[0] != n:
        raise ValueError(f"the score function must return psi_BU of shape ({n}, U), got {tuple(psi.shape)}")
    if not torch.isfinite(psi).all():
        raise ValueError(f"non-finite scores in pool batch {b}; fix the score function before caching a pool")
    return psi


def score_pool(psi_BU: Callable[[torch.Tensor], torch.Tensor], key: Mapping[str, Any], n: int = 100_000,
               batch_size: int = 2048, split: str = "train", seed: int = 0, device: torch.device | str = "cpu",
               progress: bool = True) -> ScoredPool:
    """Draw ``n`` images from the generator (``split``'s glyphs, uniform factors), score
    them with ``psi_BU`` (images in [-1, 1] on ``device`` -> (B, U)) batch by batch, and
    cache each batch. ``key`` (JSON-serialisable) must identify the score function, e.g.
    the world's and transcoder's config hashes and the unit ids: it names the cache."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    config = {"key": dict(key), "n": n, "batch_size": batch_size, "split": split, "seed": seed}
    folder = cache_dir() / "reference_pool" / config_hash(config)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(config, sort_keys=True, default=str, indent=1))
    n_batches = -(-n // batch_size)
    paths = [folder / f"batch_{b:05d}.pt" for b in range(n_batches)]
    todo = [b for b, p in enumerate(paths) if not p.exists()]
    for b in tqdm(todo, desc="reference pool", initial=n_batches - len(todo), total=n_batches, disable=not progress):
        latents = pool_batch_latents(b, batch_size, n, split, seed)
        psi = _score_batch(psi_BU, latents, b, device)
        with atomic_path(paths[b]) as tmp:
            torch.save({"psi_BU": psi, "factors": latents.factors, "glyph_N": latents.glyph_N,
                        "crop_N2": latents.crop_N2}, tmp)
    parts = [torch.load(p) for p in paths]
    latents = WorldSample({k: torch.cat([q["factors"][k] for q in parts]) for k in parts[0]["factors"]},
                          torch.cat([q["glyph_N"] for q in parts]), torch.cat([q["crop_N2"] for q in parts]))
    return ScoredPool(torch.cat([q["psi_BU"] for q in parts]), latents)
