"""The two model interfaces every image notebook uses, whatever world it runs in
(embedded mini-world or the paper's models, RM §13).

- :class:`Prior`: a diffusion prior = an epsilon-predictor on a DDPM schedule plus
  the shape of one sample. Samplers in :mod:`klsc_lib.diffusion` take ``prior.eps``.
- :class:`HookedBackbone`: a vision model with one hook point, returning the input
  and output of the hooked block (paper Sec 3.1, App C: the transcoder maps the
  block input to the block output). Images enter in [-1, 1] (the diffusion range)
  and ``preprocess`` maps them to what the backbone expects (RM §13 J.1: [-1,1] ->
  [0,1] -> ImageNet mean/std for DINOv3).

Samplers, caches and notebooks never branch on which concrete model is behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from klsc_lib.diffusion.schedule import DDPMSchedule

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t_B) -> eps, same shape as x_t


@dataclass
class Prior:
    """A diffusion prior p_theta (paper Sec 2.3)."""

    eps: EpsModel
    schedule: DDPMSchedule
    sample_shape: tuple[int, ...]  # (C, H, W) for images, (D,) for vectors
    name: str = "prior"
    clip_x0: tuple[float, float] | None = (-1.0, 1.0)  # guided-diffusion clip_denoised; None for the GMM


class _StopForward(Exception):
    """Raised by the output hook to skip the rest of the network."""


class HookedBackbone(nn.Module):
    """Wrap ``model`` and capture the input/output of the sub-module named ``block``
    (a dotted path such as ``"stages.2.blocks.20"``)."""

    def __init__(self, model: nn.Module, block: str, preprocess: Callable[[torch.Tensor], torch.Tensor],
                 name: str = "backbone"):
        super().__init__()
        self.model = model
        self.block_name = block
        self.preprocess = preprocess
        self.name = name
        try:
            self.block = model.get_submodule(block)
        except AttributeError as err:
            raise ValueError(f"backbone {name!r} has no sub-module {block!r}") from err

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Logits (or the model's usual output) for images in [-1, 1]."""
        return self.model(self.preprocess(x_BCHW))

    def hook_io(self, x_BCHW: torch.Tensor, stop: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(block input, block output) for images in [-1, 1]; gradients flow through both.
        With ``stop`` the forward pass ends at the hooked block."""
        captured: dict[str, torch.Tensor] = {}

        def hook(_module, inputs, output):
            captured["in"], captured["out"] = inputs[0], output
            if stop:
                raise _StopForward

        handle = self.block.register_forward_hook(hook)
        try:
            self.model(self.preprocess(x_BCHW))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "in" not in captured:
            raise RuntimeError(f"block {self.block_name!r} of {self.name!r} was not called in the forward pass")
        return captured["in"], captured["out"]
