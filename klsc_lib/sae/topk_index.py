"""Streaming per-unit top-k index: "dataset search" as a lookup.

The paper's dataset-search baseline (Sec 3.1 (i), App J.3: top-k ImageNet images by
the intrinsic score) re-scans the whole dataset for every feature (4,252 s per
feature in Table 11). Here, while activations stream past once (during caching, or
one pass of the transcoder over the cache), every unit (feature or neuron) keeps the
k images with the highest score and the position of the peak; a later query is an
array lookup. One entry per image: an image's score is its peak over positions
(or any per-image score the caller passes, e.g. the mix reduction of RM §13 J.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from klsc_lib.runtime import atomic_path


@dataclass(frozen=True)
class TopHit:
    score: float
    image_id: int
    position: tuple[int, int]  # (h, w) of the peak


class TopKIndex:
    """Top-``k`` (score, image id, peak position) for each of ``n_units`` units."""

    def __init__(self, n_units: int, k: int):
        if n_units < 1 or k < 1:
            raise ValueError(f"n_units and k must be positive, got {n_units}, {k}")
        self.n_units, self.k = n_units, k
        self.scores_UK = torch.full((n_units, k), -torch.inf)
        self.ids_UK = torch.full((n_units, k), -1, dtype=torch.long)
        self.pos_UK = torch.zeros((n_units, k), dtype=torch.long)  # flattened h * W + w
        self.width = 1

    @torch.no_grad()
    def update_maps(self, acts_BUHW: torch.Tensor, image_ids_B: torch.Tensor) -> None:
        """Add a batch of activation maps; an image's score is its peak over positions."""
        if acts_BUHW.ndim != 4 or acts_BUHW.shape[1] != self.n_units:
            raise ValueError(f"expected maps (B, {self.n_units}, H, W), got {tuple(acts_BUHW.shape)}")
        self.width = acts_BUHW.shape[3]
        peak_BU, pos_BU = acts_BUHW.detach().float().cpu().flatten(2).max(dim=2)
        self.update_scores(peak_BU, image_ids_B, pos_BU)

    @torch.no_grad()
    def update_scores(self, scores_BU: torch.Tensor, image_ids_B: torch.Tensor,
                      positions_BU: torch.Tensor | None = None) -> None:
        """Add per-image scores (and flattened peak positions) of a batch."""
        scores_BU = scores_BU.detach().float().cpu()
        b = scores_BU.shape[0]
        if scores_BU.shape != (b, self.n_units) or len(image_ids_B) != b:
            raise ValueError(f"expected scores (B, {self.n_units}) and B image ids, got {tuple(scores_BU.shape)} "
                             f"and {len(image_ids_B)} ids")
        if torch.isnan(scores_BU).any():
            raise ValueError("scores contain NaN")
        ids_UB = torch.as_tensor(image_ids_B, dtype=torch.long).cpu().expand(self.n_units, b)
        pos_UB = torch.zeros_like(ids_UB) if positions_BU is None else positions_BU.cpu().long().T
        scores = torch.cat([self.scores_UK, scores_BU.T], dim=1)
        keep = scores.topk(self.k, dim=1).indices
        self.scores_UK = scores.gather(1, keep)
        self.ids_UK = torch.cat([self.ids_UK, ids_UB], dim=1).gather(1, keep)
        self.pos_UK = torch.cat([self.pos_UK, pos_UB], dim=1).gather(1, keep)

    def _check_unit(self, unit: int) -> int:
        if not (isinstance(unit, (int, np.integer)) and 0 <= unit < self.n_units):
            raise KeyError(f"unknown unit id {unit!r}: this index holds units 0..{self.n_units - 1}")
        return int(unit)

    def lookup(self, unit: int) -> list[TopHit]:
        """The top-k images of ``unit``, best first (fewer if fewer images were seen)."""
        u = self._check_unit(unit)
        hits = []
        for score, image_id, pos in zip(self.scores_UK[u].tolist(), self.ids_UK[u].tolist(), self.pos_UK[u].tolist()):
            if image_id >= 0:
                hits.append(TopHit(score, image_id, divmod(pos, self.width)))
        return hits

    def top_ids(self, unit: int) -> list[int]:
        return [h.image_id for h in self.lookup(unit)]

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, scores=self.scores_UK.numpy(), ids=self.ids_UK.numpy(), pos=self.pos_UK.numpy(),
                         width=np.array(self.width))

    @classmethod
    def load(cls, path: str | Path) -> "TopKIndex":
        data = np.load(path)
        index = cls(*data["scores"].shape)
        index.scores_UK = torch.from_numpy(data["scores"])
        index.ids_UK = torch.from_numpy(data["ids"])
        index.pos_UK = torch.from_numpy(data["pos"])
        index.width = int(data["width"])
        return index


@torch.no_grad()
def index_maps(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], maps_fn: Callable[[torch.Tensor], torch.Tensor],
               n_units: int, k: int) -> TopKIndex:
    """One streaming pass: ``batches`` yields ``(image_ids_B, x)``; ``maps_fn(x)`` gives
    the units' activation maps (B, U, H, W) (e.g. transcoder codes of cached block
    inputs, or the cached block output itself for neurons)."""
    index = TopKIndex(n_units, k)
    for ids_B, x in batches:
        index.update_maps(maps_fn(x), ids_B)
    return index
