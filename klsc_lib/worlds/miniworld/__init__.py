"""The embedded mini-world (issue 4): a procedural image world with known generative
factors (:mod:`.data`), a slim timm ConvNeXt backbone and a small diffusers UNet prior
(:mod:`.models`) trained on CPU, resumably (:mod:`.training`), cached by config hash
(:mod:`.build`), with quality metrics (:mod:`.quality`).

``klsc_lib.worlds.load_world(MINIWORLD["default"])`` is the usual entry point; it
imports :mod:`.build` (timm, diffusers) only when a mini-world is loaded.
"""

from klsc_lib.worlds.miniworld.config import MINIWORLD, BackboneConfig, MiniWorldConfig, PriorConfig, miniworld_hash

__all__ = ["MINIWORLD", "BackboneConfig", "MiniWorldConfig", "PriorConfig", "miniworld_hash"]
