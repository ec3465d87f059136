"""What the feature inspector (:mod:`klsc_lib.viz.inspector`) shows, without widgets:
the ground-truth concept of each feature, the user's notes, the samples stores of a
cache root, the inspector's own EnergyDPS runs, and images as PNG bytes.

- :func:`feature_concepts`: every feature's concept on a world with known factors, by
  the one concept function of notebooks 04 and 05
  (:func:`klsc_lib.explain.true_concepts`: the (factor, value) its top-k real images by
  psi share most, chance-corrected, paper Sec 3.1 (i), App L.1), as labelled rows.
- :class:`FeatureNotes`: a short label per feature in a JSON file (written atomically),
  searchable, exportable as CSV. Notes are the reader's reference concept; they never
  enter rater packets (:mod:`klsc_lib.analysis.raters.packets`).
- :func:`find_stores`: every :class:`~klsc_lib.samples_store.SamplesStore` of one unit
  kind under a root, grouped by method.
- :func:`sample_feature`: a batch of EnergyDPS samples (Algorithm 1, App J.4) for one
  feature under a :class:`~klsc_lib.diffusion.guidance.GuidanceConfig`, with their psi
  and their index score.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.energies import feature_score
from klsc_lib.energies.units import Units
from klsc_lib.explain import true_concepts
from klsc_lib.interfaces import HookedBackbone, Prior, World
from klsc_lib.paper_values import METHODS
from klsc_lib.runtime import atomic_write_text
from klsc_lib.samples_store import STORE_JSON, SamplesStore
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.sae.transcoder import Transcoder


# ---------------------------------------------------------------- concepts
@dataclass(frozen=True)
class Concept:
    """The (factor, value) shared by ``count`` of a feature's ``of`` top images, with
    its chance-corrected purity (0 = chance, 1 = all top images)."""

    factor: str
    value: int
    count: int
    of: int
    purity: float
    label: str  # "colour=red"


def feature_concepts(units: Units, world: World, k: int = 20,
                     value_names: Mapping[str, Sequence[Any]] | None = None) -> dict[int, Concept]:
    """The concept of every unit in ``units`` (a feature id -> :class:`Concept`) as
    notebooks 04 and 05 fix it: :func:`~klsc_lib.explain.true_concepts` with the same
    ``k`` (notebook 04's ``top_k``); ``value_names`` names factor values."""
    found = true_concepts(units, torch.arange(units.count), world, k)
    return {u: Concept(found.factor_U[u], int(found.value_U[u]), int(found.count_U[u]), found.top_k,
                       float(found.purity_U[u]), found.label(u, value_names)) for u in range(units.count)}


# ---------------------------------------------------------------- notes
class FeatureNotes:
    """Short labels per feature id, saved to ``path`` (JSON ``{"feature": "note"}``) on
    every change and read back when opened again."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.notes: dict[int, str] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self.notes = {int(k): str(v) for k, v in raw.items()}
            except (json.JSONDecodeError, AttributeError, ValueError) as err:
                raise ValueError(f"notes file {self.path} is not a JSON object of feature id -> note ({err}); "
                                 "fix or delete it") from err

    def get(self, feature: int) -> str:
        return self.notes.get(int(feature), "")

    def set(self, feature: int, note: str) -> None:
        """Attach ``note`` to ``feature`` (an empty note removes it) and save."""
        note = note.strip()
        if note:
            self.notes[int(feature)] = note
        else:
            self.notes.pop(int(feature), None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({str(k): v for k, v in sorted(self.notes.items())}, indent=2,
                                                ensure_ascii=False) + "\n")

    def search(self, query: str) -> list[int]:
        """Features whose note contains ``query`` (case-insensitive), ascending."""
        q = query.strip().lower()
        return sorted(f for f, n in self.notes.items() if q and q in n.lower())

    def export_csv(self, path: str | Path, concepts: Mapping[int, Concept] | None = None) -> Path:
        """CSV with columns feature, note (and the ground-truth concept when given)."""
        path, concepts = Path(path), concepts or {}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["feature", "note", "concept"])
        for f, note in sorted(self.notes.items()):
            writer.writerow([f, note, concepts[f].label if f in concepts else ""])
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, buf.getvalue())
        return path


# ---------------------------------------------------------------- stores
def find_stores(stores: str | Path | Iterable[SamplesStore], unit_kind: str = "Feature"
                ) -> dict[str, list[SamplesStore]]:
    """Stores of ``unit_kind`` grouped by method (in :data:`METHODS` order): from a root
    folder (every ``<method>-<unit_kind>-<hash>/store.json`` under it) or from stores."""
    if isinstance(stores, (str, Path)):
        root = Path(stores)
        if not root.is_dir():
            raise FileNotFoundError(f"no samples store folder at {root}: run notebook 04 to fill it, or pass "
                                    "SamplesStore objects")
        found = []
        for header in sorted(root.glob(f"*-{unit_kind}-*/{STORE_JSON}")):
            info = json.loads(header.read_text())
            found.append(SamplesStore(info["method"], info["unit_kind"], info["config"], root))
        stores = found
    grouped: dict[str, list[SamplesStore]] = {}
    for store in stores:
        if store.unit_kind == unit_kind:
            grouped.setdefault(store.method, []).append(store)
    return {m: grouped[m] for m in METHODS if m in grouped}


# ---------------------------------------------------------------- scores and sampling
@torch.no_grad()
def peak_code(backbone: HookedBackbone, transcoder: Transcoder, feature: int, images_BCHW: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(peak_B, map_BHW): the feature's TopK code map on each image and its peak, the
    score the top-k index and its histogram hold."""
    device = transcoder.W_enc_FCkk.device
    block_in, _ = backbone.hook_io(images_BCHW.to(device).float(), stop=True)
    map_BHW = transcoder.encode(block_in)[:, feature].float().cpu()
    return map_BHW.flatten(1).amax(1), map_BHW


@dataclass(frozen=True)
class SampleBatch:
    images_BCHW: torch.Tensor  # in [-1, 1], on the CPU
    psi_B: torch.Tensor  # the guided intrinsic score (App J.2)
    peak_B: torch.Tensor  # the index's score (peak TopK code), for the histogram


def sample_feature(prior: Prior, backbone: HookedBackbone, transcoder: Transcoder, feature: int,
                   guidance: GuidanceConfig, seeds: Sequence[int], callback: Callable[[dict], None] | None = None
                   ) -> SampleBatch:
    """EnergyDPS samples of ``feature`` (Algorithm 1, App J.4) as ``guidance`` says (the
    inspector sets its strength and a fixed cap from the sliders), one per seed."""
    units_B = torch.full((len(seeds),), int(feature))
    x_BCHW, psi_B = sample_units(prior, lambda ids: feature_score(backbone, transcoder, ids), units_B, guidance,
                                 seeds, batch_size=len(seeds), device=transcoder.W_enc_FCkk.device, callback=callback)
    return SampleBatch(x_BCHW.float(), psi_B.float(), peak_code(backbone, transcoder, feature, x_BCHW)[0])


# ---------------------------------------------------------------- pictures
def to_png(image_CHW: torch.Tensor, heat_HW: torch.Tensor | None = None, vmax: float | None = None,
           size: int = 88) -> bytes:
    """PNG bytes of an image in [-1, 1], upscaled (nearest) to ``size`` pixels; with
    ``heat_HW`` the greyscale image under an inferno-coloured activation map (bilinear,
    scaled to ``vmax``), as in :class:`~klsc_lib.viz.gallery.FeatureGallery`."""
    from matplotlib import colormaps
    from PIL import Image

    img_CHW = ((image_CHW.detach().float().cpu() + 1) / 2).clamp(0, 1)
    if img_CHW.shape[0] == 1:
        img_CHW = img_CHW.expand(3, -1, -1)
    img_CHW = F.interpolate(img_CHW[None], size=(size, size), mode="nearest")[0]
    if heat_HW is not None:
        scale = max(float(vmax if vmax is not None else heat_HW.max()), 1e-6)
        heat = F.interpolate(heat_HW.detach().float().cpu()[None, None], size=(size, size), mode="bilinear",
                             align_corners=False)[0, 0]
        heat = (heat / scale).clamp(0, 1)
        colour_CHW = torch.from_numpy(colormaps["inferno"](heat.numpy())[..., :3]).permute(2, 0, 1).float()
        grey = img_CHW.mean(0, keepdim=True).expand(3, -1, -1)
        alpha = 0.25 + 0.6 * heat  # where the feature fires, its colour dominates
        img_CHW = (1 - alpha) * grey + alpha * colour_CHW
    buf = io.BytesIO()
    Image.fromarray((img_CHW.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
