"""On-disk store of explanation samples: per unit (a transcoder feature or a backbone
neuron), the images a method produced for it and their intrinsic scores psi (paper
Sec 3, App J.2-J.4; the methods of :data:`klsc_lib.paper_values.METHODS`).

One store = one sampling config of one method on one unit kind::

    $KLSC_CACHE/samples/<method>-<unit_kind>-<hash>/
        store.json                     method, unit kind, config, its hash
        feature_000081.safetensors     images_BCHW (float16), psi_B (float32), extras;
                                       per-unit JSON metadata (seeds, wall time) in the header

Every file is written under a temporary name and renamed, so a crash leaves no
visible entry. The normative description is ``klsc_lib/samples_store_protocol.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from klsc_lib.paper_values import METHODS, UNIT_KINDS
from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, config_hash

STORE_JSON = "store.json"
RESERVED = ("images_BCHW", "psi_B")


class MissingSamplesError(KeyError):
    """The store has no samples for the requested unit."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Samples:
    images_BCHW: torch.Tensor  # in [-1, 1]
    psi_B: torch.Tensor  # intrinsic score of each image (App J.2)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. trajectories, per-step psi
    meta: dict[str, Any] = field(default_factory=dict)  # seeds, wall time, anything JSON


class SamplesStore:
    """Samples of one ``method`` (one of ``METHODS``) on one ``unit_kind`` ("Feature" or
    "Neuron") under one sampling ``config`` (JSON-serialisable; hashed into the folder
    name, so a changed setting never reuses stale samples). With ``create=False`` a store
    that was never written raises :class:`FileNotFoundError` instead of being created."""

    def __init__(self, method: str, unit_kind: str, config: Mapping[str, Any], root: str | Path | None = None,
                 create: bool = True):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS} (klsc_lib.paper_values.METHODS)")
        if unit_kind not in UNIT_KINDS:
            raise ValueError(f"unknown unit kind {unit_kind!r}; expected one of {UNIT_KINDS}")
        self.method, self.unit_kind, self.config = method, unit_kind, dict(config)
        self.hash = config_hash({"method": method, "unit_kind": unit_kind, "config": self.config})
        root = Path(root) if root is not None else cache_dir() / "samples"
        self.folder = root / f"{method}-{unit_kind}-{self.hash}"
        header = {"method": method, "unit_kind": unit_kind, "config": self.config, "config_hash": self.hash}
        path = self.folder / STORE_JSON
        if path.exists():
            found = json.loads(path.read_text())
            if found.get("config_hash") != self.hash:
                raise ValueError(f"{self.folder} holds samples of another config ({found}); delete it or use "
                                 "another root")
        elif not create:
            raise FileNotFoundError(f"no {method} {unit_kind.lower()} samples store at {self.folder}; create it by "
                                    "running the notebook that samples this method")
        else:
            atomic_write_text(path, json.dumps(header, indent=2, sort_keys=True, default=str) + "\n")

    def _path(self, unit: int) -> Path:
        if not (isinstance(unit, int) and not isinstance(unit, bool) and unit >= 0):
            raise ValueError(f"unit must be a non-negative int, got {unit!r}")
        return self.folder / f"{self.unit_kind.lower()}_{unit:06d}.safetensors"

    def put(self, unit: int, images_BCHW: torch.Tensor, psi_B: torch.Tensor,
            extras: Mapping[str, torch.Tensor] | None = None, meta: Mapping[str, Any] | None = None) -> Path:
        """Store (or replace) the samples of ``unit`` atomically; images are kept in float16."""
        path = self._path(unit)
        if images_BCHW.ndim != 4 or psi_B.shape != (images_BCHW.shape[0],):
            raise ValueError(f"expected images (B, C, H, W) and psi (B,), got {tuple(images_BCHW.shape)} and "
                             f"{tuple(psi_B.shape)}")
        extras = dict(extras or {})
        if clash := set(extras) & set(RESERVED):
            raise ValueError(f"extra tensor names {sorted(clash)} are reserved")
        tensors = {"images_BCHW": images_BCHW.detach().to("cpu", torch.float16).contiguous(),
                   "psi_B": psi_B.detach().to("cpu", torch.float32).contiguous(),
                   **{n: t.detach().cpu().contiguous() for n, t in extras.items()}}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"meta": json.dumps(dict(meta or {}), default=str)})
        return path

    def has(self, unit: int) -> bool:
        return self._path(unit).exists()

    def get(self, unit: int) -> Samples:
        """The samples of ``unit``; :class:`MissingSamplesError` (a ``KeyError``) if absent."""
        path = self._path(unit)
        if not path.exists():
            held = self.units()
            raise MissingSamplesError(
                f"no {self.method} samples for {self.unit_kind.lower()} {unit} in {self.folder} (it holds "
                f"{len(held)} units{': ' + str(held[:10]) if held else ''}); create them with "
                f"SamplesStore({self.method!r}, {self.unit_kind!r}, config).put({unit}, images, psi), e.g. by "
                "running the notebook that samples this method")
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {n: f.get_tensor(n) for n in f.keys()}
                meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        except (SafetensorError, json.JSONDecodeError) as err:
            raise ValueError(f"samples file {path} is corrupt ({err}); delete it and sample the unit again") from err
        images_BCHW, psi_B = tensors.pop("images_BCHW"), tensors.pop("psi_B")
        return Samples(images_BCHW, psi_B, tensors, meta)

    def units(self) -> list[int]:
        """Ids of the stored units, ascending."""
        pattern = re.compile(rf"{self.unit_kind.lower()}_(\d+)\.safetensors")
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := pattern.fullmatch(p.name)))

    def __repr__(self) -> str:
        return f"SamplesStore({self.method!r}, {self.unit_kind!r}, hash={self.hash}, units={len(self.units())})"
