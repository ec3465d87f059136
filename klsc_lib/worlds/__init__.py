"""The worlds the notebooks run in (paper App H-I toy and Sec 3 images).

- :mod:`~klsc_lib.worlds.gmm`: the 2-D Gaussian mixture prior of the toy (App H, I).
- :mod:`~klsc_lib.worlds.miniworld`: the embedded mini-world (procedural images with
  ground-truth factors, a slim ConvNeXt, a small DDPM prior), no downloads.
- :mod:`~klsc_lib.worlds.zoo`: the paper's models (DINOv3 ConvNeXt-L, guided-diffusion
  ImageNet-256) from local files.

:func:`load_world` turns a ``MiniWorldConfig`` or ``PaperWorldConfig`` into a
:class:`klsc_lib.interfaces.World`.
"""

from klsc_lib.worlds.loader import load_world

__all__ = ["load_world"]
