"""Load one of the two worlds the image notebooks run in (issue 4, App J).

A :class:`World` bundles a hooked vision backbone, an unconditional diffusion prior,
optionally a class-conditional prior (the DiffExplainer-style proxy baseline of paper
Sec 3.1 / App J.3.2, emulated in notebook 04), and a train / test image set whose
items carry ground-truth generative factors.

- ``MiniWorldConfig`` (:mod:`klsc_lib.worlds.miniworld`): the embedded mini-world, built in
  code; the default world's weights ship with the package, other configs train on CPU
  (or load from the cache), no downloads.
- ``PaperWorldConfig`` (:mod:`klsc_lib.worlds.zoo`): DINOv3 ConvNeXt-Large hooked at the input
  of ``stages.2.blocks.20`` and the guided-diffusion ImageNet-256 prior (App J.1,
  J.4), from local files.

Notebooks call :func:`load_world` and never branch on which world is behind it.
"""

from __future__ import annotations

from typing import Any

import torch

from klsc_lib.interfaces import World

def load_world(spec: Any, device: str | torch.device = "auto", progress: bool = True) -> World:
    """Build or load the world described by ``spec``.

    ``MiniWorldConfig`` -> the mini-world (trained, or a cache hit under
    ``cache_dir()/miniworld/<config_hash>/``); ``PaperWorldConfig`` -> the paper's
    models from local weight files.
    """
    from klsc_lib.worlds.miniworld.build import load_miniworld
    from klsc_lib.worlds.miniworld.config import MiniWorldConfig

    if isinstance(spec, MiniWorldConfig):
        return load_miniworld(spec, device=device, progress=progress)
    try:
        from klsc_lib.worlds.zoo import PaperWorldConfig, load_paper_world
    except ImportError as err:  # the zoo package is optional for the mini-world
        raise TypeError(f"cannot load world spec of type {type(spec).__name__}: {err}") from err
    if isinstance(spec, PaperWorldConfig):
        return load_paper_world(spec, device=device)
    raise TypeError(f"world spec must be a MiniWorldConfig or a PaperWorldConfig, got {type(spec).__name__}")
