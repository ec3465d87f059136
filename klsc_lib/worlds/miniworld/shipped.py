"""The default mini-world's weights, shipped in git under ``weights/<config hash>/``.

Files (written by :func:`ship`, ``make miniworld REBUILD=1``):

- ``backbone.safetensors``, ``prior.safetensors``, ``factor_classifier.safetensors``:
  the trained weights in float16 (``fp16_check`` in ``quality.json`` measures what the
  rounding changes);
- ``samples.safetensors``: the first :data:`NUM_SHIPPED_SAMPLES` quality samples of each kind (float16);
- ``quality.json``: the quality measured when the world was built;
- ``manifest.json`` (written last): the sha256 of every other file.

:func:`load_shipped` checks every checksum before it reads a byte of weights, so a
corrupt or missing file raises an error that says how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from klsc_lib.runtime import atomic_path, atomic_write_text
from klsc_lib.worlds.miniworld.config import MiniWorldConfig, miniworld_hash

WEIGHTS_DIR = Path(__file__).parent / "weights"
KINDS = ("backbone", "prior", "factor_classifier")
NUM_SHIPPED_SAMPLES = 128
REBUILD_HINT = "run `make miniworld REBUILD=1` to retrain the default mini-world and rewrite its shipped files"


def shipped_folder(cfg: MiniWorldConfig) -> Path:
    return WEIGHTS_DIR / miniworld_hash(cfg)


def has_shipped(cfg: MiniWorldConfig) -> bool:
    """Whether weights for ``cfg`` ship with the package (its manifest exists)."""
    return (shipped_folder(cfg) / "manifest.json").exists()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify(folder: Path) -> dict[str, str]:
    """The manifest of ``folder`` after checking that every file it lists exists and
    has its recorded sha256; raises FileNotFoundError / ValueError otherwise."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"no shipped mini-world manifest at {manifest_path}; {REBUILD_HINT}")
    try:
        files = json.loads(manifest_path.read_text())["sha256"]
    except (ValueError, KeyError) as err:
        raise ValueError(f"shipped manifest {manifest_path} is malformed ({err}); {REBUILD_HINT}") from err
    for name, expected in files.items():
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"shipped mini-world file {path} is missing; {REBUILD_HINT}")
        if sha256(path) != expected:
            raise ValueError(f"shipped mini-world file {path} fails its sha256 check (corrupt or edited); "
                             f"{REBUILD_HINT}")
    return files


def load_shipped(cfg: MiniWorldConfig, models: dict[str, nn.Module]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Load the shipped weights of ``cfg`` into ``models`` (kind -> module, float32 in
    place) after :func:`verify`; returns (quality, samples as float32)."""
    folder = shipped_folder(cfg)
    verify(folder)
    for kind, model in models.items():
        load_model(model, str(folder / f"{kind}.safetensors"), strict=True)
        model.eval().requires_grad_(False)
    quality = json.loads((folder / "quality.json").read_text())
    samples = {k: (v.float() if v.is_floating_point() else v).clone()
               for k, v in load_file(folder / "samples.safetensors").items()}
    return quality, samples


def ship(cfg: MiniWorldConfig, models: dict[str, nn.Module], quality: dict, samples: dict[str, torch.Tensor],
         folder: Path | None = None) -> Path:
    """Write ``models`` (float16), the first samples, ``quality`` and the manifest
    into the shipped folder of ``cfg`` (or ``folder``); returns the folder. The old
    manifest is removed first, so an interrupted write never looks shipped."""
    folder = Path(folder) if folder is not None else shipped_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    for kind in KINDS:
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in models[kind].state_dict().items()}
        with atomic_path(folder / f"{kind}.safetensors") as tmp:
            save_file(state, str(tmp))
    small = {k: (v[:NUM_SHIPPED_SAMPLES].half() if v.is_floating_point() else v[:NUM_SHIPPED_SAMPLES]).contiguous()
             for k, v in samples.items()}
    with atomic_path(folder / "samples.safetensors") as tmp:
        save_file(small, str(tmp))
    atomic_write_text(folder / "quality.json", json.dumps(quality, indent=2) + "\n")
    names = [f"{kind}.safetensors" for kind in KINDS] + ["samples.safetensors", "quality.json"]
    atomic_write_text(folder / "manifest.json", json.dumps(
        {"config_hash": miniworld_hash(cfg), "sha256": {n: sha256(folder / n) for n in names}}, indent=2) + "\n")
    return folder


def fp16_round_trip(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float tensor rounded through float16 (what ships)."""
    return {k: (v.half().to(v.dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
