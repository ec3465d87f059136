"""The units an explanation run explains (paper Sec 3.1, App J.2): transcoder features
or backbone neurons of one hooked block, each scored by the reduction of eq. 213, as
one batched energy (one unit per sample) and as a dataset-search score of every unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from klsc_lib.energies.base import Energy
from klsc_lib.energies.features import feature_pre_activation, feature_score, neuron_score
from klsc_lib.energies.reductions import reduce_map
from klsc_lib.interfaces import HookedBackbone
from klsc_lib.paper_values import FEATURE_SCORE
from klsc_lib.sae.transcoder import Transcoder

UnitKind = Literal["Feature", "Neuron"]


@dataclass(frozen=True)
class Units:
    """What is explained: ``kind`` units of ``backbone`` (through ``transcoder`` for
    features), scored by the reduction of App J.2 (eq. 213)."""

    kind: UnitKind
    backbone: HookedBackbone
    transcoder: Transcoder | None = None
    reduction: str = FEATURE_SCORE["reduction"]
    center_frac: float = FEATURE_SCORE["center_frac"]
    alpha: float = FEATURE_SCORE["alpha"]
    image_size: int = 16  # of the world's images (to count the hooked block's channels)

    def __post_init__(self) -> None:
        if self.kind not in ("Feature", "Neuron"):
            raise ValueError(f"unit kind must be 'Feature' or 'Neuron', got {self.kind!r}")
        if self.kind == "Feature" and self.transcoder is None:
            raise ValueError("feature units need the transcoder")

    @property
    def device(self) -> torch.device:
        """Where the backbone (and so the samples) lives."""
        return next(self.backbone.parameters()).device

    @property
    def count(self) -> int:
        if self.kind == "Feature":
            return self.transcoder.cfg.d_sae
        with torch.no_grad():  # the hooked block's output channels
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=next(self.backbone.parameters()).device)
            return int(self.backbone.hook_io(probe)[1].shape[1])

    def check(self, units_U: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``units_U`` as a long tensor; unknown ids raise before anything is sampled."""
        units = torch.as_tensor(units_U)
        if units.ndim != 1 or units.dtype.is_floating_point or units.dtype == torch.bool:
            raise ValueError(f"units must be a 1-D sequence of integer ids, got {units_U!r}")
        n = self.count
        bad = sorted({int(u) for u in units if not 0 <= int(u) < n})
        if bad:
            raise ValueError(f"unknown {self.kind.lower()} ids {bad[:8]}: valid ids are in [0, {n})")
        if len(set(units.tolist())) != len(units):
            raise ValueError("unit ids must be distinct")
        return units.long()

    def energy(self, units_B: torch.Tensor) -> Energy:
        """psi of one unit per sample."""
        kw = dict(reduction=self.reduction, center_frac=self.center_frac, alpha=self.alpha)
        if self.kind == "Feature":
            return feature_score(self.backbone, self.transcoder, units_B, **kw)
        return neuron_score(self.backbone, units_B, **kw)

    def scores(self, units_U: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """x_BCHW -> psi_BU for all U units on every image (dataset search)."""
        def psi_BU(x_BCHW: torch.Tensor) -> torch.Tensor:
            block_in, block_out = self.backbone.hook_io(x_BCHW)
            maps = []
            for u in units_U.tolist():
                if self.kind == "Feature":
                    maps.append(feature_pre_activation(self.transcoder, block_in, torch.tensor(u)))
                else:
                    maps.append(block_out[:, u])
            b, (h, w) = len(x_BCHW), maps[0].shape[-2:]
            map_BUHW = torch.stack(maps, dim=1)
            return reduce_map(map_BUHW.reshape(-1, h, w), self.reduction, self.center_frac,
                              self.alpha).reshape(b, -1)
        return psi_BU
