"""What the image baselines (App J.3) share beyond the core: the energy type they read,
uniform noise per sample and a forward-hook output replacement. The clip cap is
:func:`klsc_lib.energies.caps.capped_objective`, the NaN check
:func:`klsc_lib.energies.checked_psi`, and per-sample generators / normal noise those of
:mod:`klsc_lib.diffusion.samplers` (``resolve_generators``, ``initial_noise``), so a batch
of B explanations equals B single runs.

An energy is any callable ``energy(x_BCHW) -> psi_B`` on images in [-1, 1] (the
diffusion range) whose i-th output depends on the i-th image only (Sec 3.1: the
intrinsic score psi of one feature, or one feature per sample).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

EnergyFn = Callable[[torch.Tensor], torch.Tensor]  # x_BCHW in [-1, 1] -> psi_B


def rand_per_sample(generators: Sequence[torch.Generator], shape: tuple[int, ...],
                    device: torch.device | str) -> torch.Tensor:
    """(B, *shape) uniform on [0, 1), row i drawn from generator i."""
    return torch.stack([torch.rand(shape, generator=g, device=g.device) for g in generators]).to(device)


@contextlib.contextmanager
def replaced_output(module: nn.Module, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, ``module``'s output ``out`` is replaced by ``edit(out)`` (a forward
    hook): how a learnable embedding is fed to a model that only takes ids."""
    handle = module.register_forward_hook(lambda _module, _inputs, out: edit(out))
    try:
        yield
    finally:
        handle.remove()
