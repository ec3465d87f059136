"""The embedded mini-world (issue 4): a procedural image world with known generative
factors (:mod:`.data`), a slim timm ConvNeXt backbone and a small diffusers UNet prior
(:mod:`.models`) trained on CPU, resumably (:mod:`.training`), cached by config hash
(:mod:`.build`), with quality metrics (:mod:`.quality`).

``load_world(MINIWORLD["default"])`` (:mod:`klsc_lib.world`) is the usual entry point.
"""

from klsc_lib.miniworld.config import MINIWORLD, BackboneConfig, MiniWorldConfig, PriorConfig, miniworld_hash

__all__ = ["MINIWORLD", "BackboneConfig", "MiniWorldConfig", "PriorConfig", "load_miniworld", "miniworld_hash"]


def load_miniworld(*args, **kwargs):
    """See :func:`klsc_lib.miniworld.build.load_miniworld` (imported lazily: it pulls in
    timm and diffusers)."""
    from klsc_lib.miniworld.build import load_miniworld as _load

    return _load(*args, **kwargs)
