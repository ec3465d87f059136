"""The embedded mini-world (issue 4): a procedural image world with known generative
factors (:mod:`.data`), a slim timm ConvNeXt backbone and a small factor-conditioned
diffusers UNet prior (:mod:`.models`), an all-factor classifier (:mod:`.factor_classifier`),
trained on CPU, resumably (:mod:`.training`), cached by config hash (:mod:`.build`),
the default world's weights shipped in git (:mod:`.shipped`), with quality metrics
(:mod:`.quality`).

``klsc_lib.worlds.load_world(MINIWORLD["default"])`` is the usual entry point; it
imports :mod:`.build` (timm, diffusers) only when a mini-world is loaded.
"""

from klsc_lib.worlds.miniworld.config import (MINIWORLD, BackboneConfig, FactorClassifierConfig, MiniWorldConfig,
                                              PriorConfig, RefineStage, miniworld_hash)

__all__ = ["MINIWORLD", "BackboneConfig", "FactorClassifierConfig", "MiniWorldConfig", "PriorConfig", "RefineStage",
           "miniworld_hash"]
