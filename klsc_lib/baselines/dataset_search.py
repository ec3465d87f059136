"""Dataset search (paper Sec 3.1 (i), App J.3): the top-k images of a dataset by the
SAME psi the generative methods use, per unit, and the mean psi of that top-k set,
which is the matched target level t of Sec 3.2 that MACO, proxy guidance and EnergyDPS
are calibrated to.

One streaming pass over ``(image_ids_B, x_BCHW)`` batches; the scores go through
:class:`klsc_lib.sae.topk_index.TopKIndex`, and only the images still in some unit's
top k are kept in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from klsc_lib.baselines.image_common import EnergyFn
from klsc_lib.sae.topk_index import TopKIndex

UnitsEnergyFn = Callable[[torch.Tensor], torch.Tensor]  # x_BCHW in [-1, 1] -> psi_BU, one column per unit


def stack_energies(energies: Sequence[EnergyFn]) -> UnitsEnergyFn:
    """One ``x -> psi_BU`` from U single-unit energies (column u = energies[u])."""
    if not energies:
        raise ValueError("need at least one energy")
    return lambda x_BCHW: torch.stack([e(x_BCHW) for e in energies], dim=1)


@dataclass
class DatasetSearchResult:
    psi_UK: torch.Tensor  # float32, best first
    ids_UK: torch.Tensor  # image ids
    images_UKCHW: torch.Tensor  # the images, in [-1, 1]

    @property
    def target_U(self) -> torch.Tensor:
        """Mean psi of each unit's top-k set: the matched target t (Sec 3.2)."""
        return self.psi_UK.mean(dim=1)


@torch.no_grad()
def dataset_search(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], energy: UnitsEnergyFn, n_units: int,
                   k: int = 4, disable: bool | None = None) -> DatasetSearchResult:
    """Scan ``batches`` of ``(image_ids_B, x_BCHW)`` once; ``energy(x)`` gives psi (B, U)
    for the U = ``n_units`` units (wrap single energies with :func:`stack_energies`).
    Image ids must be unique; k = 4 is what raters are shown (App K)."""
    index = TopKIndex(n_units, k)
    kept: dict[int, torch.Tensor] = {}
    seen_ids: set[int] = set()
    for ids_B, x_BCHW in tqdm(batches, disable=disable, desc="dataset search"):
        ids_B = torch.as_tensor(ids_B, dtype=torch.long).cpu()
        psi_BU = energy(x_BCHW).float()
        if psi_BU.shape != (x_BCHW.shape[0], n_units) or ids_B.shape != (x_BCHW.shape[0],):
            raise ValueError(f"batch of {x_BCHW.shape[0]} images: expected psi ({x_BCHW.shape[0]}, {n_units}) and "
                             f"{x_BCHW.shape[0]} ids, got psi {tuple(psi_BU.shape)} and ids {tuple(ids_B.shape)}")
        if not torch.isfinite(psi_BU).all():
            bad = (~torch.isfinite(psi_BU)).any(dim=1)
            raise FloatingPointError(f"dataset search: non-finite psi for image ids {ids_B[bad.cpu()].tolist()}")
        batch_ids = ids_B.tolist()
        if len(set(batch_ids)) != len(batch_ids) or not seen_ids.isdisjoint(batch_ids):
            repeated = sorted({i for i in batch_ids if i in seen_ids or batch_ids.count(i) > 1})
            raise ValueError(f"image ids must be unique across the dataset; repeated: {repeated}")
        seen_ids.update(batch_ids)
        index.update_scores(psi_BU, ids_B)
        kept.update(zip(batch_ids, x_BCHW.detach().cpu()))
        alive = set(index.ids_UK.flatten().tolist())
        kept = {i: img for i, img in kept.items() if i in alive}
    if len(seen_ids) < k:
        raise ValueError(f"the dataset has {len(seen_ids)} images, fewer than k = {k}")
    images = torch.stack([torch.stack([kept[i] for i in row]) for row in index.ids_UK.tolist()])
    return DatasetSearchResult(index.scores_UK.float(), index.ids_UK.clone(), images)
