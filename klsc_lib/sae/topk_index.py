"""Streaming per-unit top-k index: "dataset search" as a lookup.

The paper's dataset-search baseline (Sec 3.1 (i), App J.3: top-k ImageNet images by
the intrinsic score) re-scans the whole dataset for every feature (4,252 s per
feature in Table 11). Here, while activations stream past once (during caching, or
one pass of the transcoder over the cache), every unit (feature or neuron) keeps the
k images with the highest score and the position of the peak; a later query is an
array lookup. One entry per image: an image's score is its peak over positions
(or any per-image score the caller passes, e.g. the mix reduction of App J.2).

The same pass fills a per-unit histogram of the image scores on fixed log-spaced
bins (:data:`HIST_EDGES`): bin 0 counts images where the unit stays below 1e-3 (did
not fire), the last bin images at or above 1e3. The index is saved as
``NAME.safetensors`` (tensors) plus ``NAME.json`` (sizes and the caller's
provenance); the JSON is written last, so a crash leaves no loadable half index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from klsc_lib.runtime import atomic_path, atomic_write_text

#: Histogram bin edges of the per-image scores: [1e-3, 1e3] in 48 log-spaced bins, plus
#: one bin below (did not fire) and one above.
HIST_EDGES = torch.logspace(-3, 3, 49, dtype=torch.float64)


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
        self.hist_UB = torch.zeros((n_units, len(HIST_EDGES) + 1), dtype=torch.long)
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
        bins_BU = torch.bucketize(scores_BU.double(), HIST_EDGES, right=True)
        units_BU = torch.arange(self.n_units).expand(b, -1)
        self.hist_UB.view(-1).index_add_(0, (units_BU * self.hist_UB.shape[1] + bins_BU).flatten(),
                                         torch.ones(b * self.n_units, dtype=torch.long))
        ids_UB = torch.as_tensor(image_ids_B, dtype=torch.long).cpu().expand(self.n_units, b)
        pos_UB = torch.zeros_like(ids_UB) if positions_BU is None else positions_BU.cpu().long().T
        self._keep_best(torch.cat([self.scores_UK, scores_BU.T], dim=1), torch.cat([self.ids_UK, ids_UB], dim=1),
                        torch.cat([self.pos_UK, pos_UB], dim=1))

    def _keep_best(self, scores_UN: torch.Tensor, ids_UN: torch.Tensor, pos_UN: torch.Tensor) -> None:
        """Keep the k best candidates per unit: highest score first, equal scores by
        ascending image id, so the result does not depend on the order images came in."""
        by_id_UN = ids_UN.argsort(dim=1, stable=True)
        by_score_UN = scores_UN.gather(1, by_id_UN).argsort(dim=1, descending=True, stable=True)
        keep_UK = by_id_UN.gather(1, by_score_UN)[:, :self.k]
        self.scores_UK, self.ids_UK, self.pos_UK = (t.gather(1, keep_UK) for t in (scores_UN, ids_UN, pos_UN))

    @classmethod
    def merged(cls, parts: "list[TopKIndex]") -> "TopKIndex":
        """One index over the union of the (disjoint) image sets of ``parts`` (e.g. one
        per process): the same top-k and histograms as a single streaming pass."""
        if not parts:
            raise ValueError("merged() needs at least one index")
        first = parts[0]
        for part in parts[1:]:
            if (part.n_units, part.k) != (first.n_units, first.k):
                raise ValueError(f"cannot merge indices of {part.n_units} units / k={part.k} into "
                                 f"{first.n_units} units / k={first.k}")
        index = cls(first.n_units, first.k)
        index.width = max(p.width for p in parts)
        index._keep_best(*(torch.cat([getattr(p, name) for p in parts], dim=1)
                           for name in ("scores_UK", "ids_UK", "pos_UK")))
        index.hist_UB = torch.stack([p.hist_UB for p in parts]).sum(dim=0)
        return index

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

    def histogram(self, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts_B, edges) of ``unit``'s image scores: ``counts_B[0]`` images below
        ``edges[0]`` (did not fire), ``counts_B[i]`` images in ``[edges[i-1], edges[i])``,
        ``counts_B[-1]`` images at or above ``edges[-1]``."""
        return self.hist_UB[self._check_unit(unit)].clone(), HIST_EDGES.clone()

    @property
    def n_images(self) -> int:
        """Images seen so far (every image adds one count to every unit's histogram)."""
        return int(self.hist_UB[0].sum())

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """Write ``path`` (``.safetensors``) and its ``.json`` sidecar, each atomically,
        the JSON last; ``meta`` (JSON-serialisable provenance) goes into the sidecar."""
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file({"scores_UK": self.scores_UK.contiguous(), "ids_UK": self.ids_UK.contiguous(),
                       "pos_UK": self.pos_UK.contiguous(), "hist_UB": self.hist_UB.contiguous(),
                       "hist_edges": HIST_EDGES.clone()}, str(tmp))
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"n_units": self.n_units, "k": self.k, "width": self.width, "n_images": self.n_images,
             "meta": meta or {}}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TopKIndex":
        """Read an index written by :meth:`save`; a missing sidecar (never finished) is a
        ``FileNotFoundError``, an unreadable or inconsistent file a ``ValueError``."""
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if not (path.exists() and sidecar.exists()):
            raise FileNotFoundError(f"no saved top-k index at {path} (needs {path.name} and {sidecar.name}); "
                                    "build it with index_maps(...).save(path) or sae.artifacts.load_or_build_index")
        try:
            info = json.loads(sidecar.read_text())
            tensors = load_file(str(path))
            index = cls(info["n_units"], info["k"])
            for name in ("scores_UK", "ids_UK", "pos_UK", "hist_UB"):
                if tensors[name].shape != getattr(index, name).shape:
                    raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, "
                                     f"expected {tuple(getattr(index, name).shape)}")
                setattr(index, name, tensors[name])
            if not torch.equal(tensors["hist_edges"], HIST_EDGES):
                raise ValueError("histogram edges differ from this version's HIST_EDGES")
        except (SafetensorError, KeyError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"top-k index {path} is corrupt or from another version ({err}); delete {path} "
                             f"and {sidecar.name} to rebuild it") from err
        index.width = int(info["width"])
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


@torch.no_grad()
def rescan_top_ids(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], maps_fn: Callable[[torch.Tensor], torch.Tensor],
                   unit: int, k: int) -> list[int]:
    """Dataset search the paper's way (Table 11): a full pass over ``batches``
    (``(image_ids_B, x)``) scoring one ``unit`` by the peak of ``maps_fn(x)[:, unit]``,
    then the ids of the ``k`` best images, best first. The reference the index is
    checked against."""
    ids, peaks = [], []
    for ids_B, x in batches:
        peaks.append(maps_fn(x)[:, unit].flatten(1).amax(1).float().cpu())
        ids.append(torch.as_tensor(ids_B).cpu())
    ids_N, peak_N = torch.cat(ids), torch.cat(peaks)
    return ids_N[peak_N.topk(min(k, len(peak_N))).indices].tolist()
