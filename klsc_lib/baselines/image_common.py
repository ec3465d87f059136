"""What the image baselines (App J.3) share: the energy they all read, the clip cap
(paper App J.2: loss = -min(psi, c), zero gradient once psi >= c), NaN checks, and one random
generator per sample so that a batch of B explanations equals B single runs.

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


def as_cap(cap_B: float | torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
    """The per-sample cap as a (B,) tensor on ``like``'s device; +inf for no cap."""
    if cap_B is None:
        return torch.full((batch,), torch.inf, device=like.device, dtype=like.dtype)
    cap_B = torch.as_tensor(cap_B, device=like.device, dtype=like.dtype)
    if cap_B.ndim == 0:
        cap_B = cap_B.expand(batch)
    if cap_B.shape != (batch,):
        raise ValueError(f"cap_B must be a scalar or one cap per sample ({batch},), got {tuple(cap_B.shape)}")
    return cap_B


def capped(psi_B: torch.Tensor, cap_B: torch.Tensor) -> torch.Tensor:
    """min(psi, c): the clip objective of App J.2; its gradient is 0 once psi >= c."""
    return torch.minimum(psi_B, cap_B)


def checked_psi(energy: EnergyFn, x_BCHW: torch.Tensor, step: int, method: str) -> torch.Tensor:
    """``energy(x)`` checked to be (B,) and finite; a NaN / inf names the step and samples."""
    psi_B = energy(x_BCHW)
    if psi_B.shape != (x_BCHW.shape[0],):
        raise ValueError(f"{method}: energy must map a batch of {x_BCHW.shape[0]} images to psi of shape "
                         f"({x_BCHW.shape[0]},), got {tuple(psi_B.shape)}")
    bad = ~torch.isfinite(psi_B)
    if bad.any():
        raise FloatingPointError(f"{method}: energy returned non-finite psi at optimisation step {step} for samples "
                                 f"{bad.nonzero().flatten().tolist()}; check the energy on these images (e.g. a "
                                 "division by a vanishing norm) or lower the learning rate")
    return psi_B


def sample_generators(n: int, seeds: Sequence[int] | None = None,
                      generators: Sequence[torch.Generator] | None = None) -> list[torch.Generator]:
    """One generator per sample: ``generators`` as given, else CPU generators seeded
    with ``seeds`` (default 0..n-1). Sample i draws only from generator i."""
    if generators is not None and seeds is not None:
        raise ValueError("pass seeds or generators, not both")
    if generators is None:
        seeds = range(n) if seeds is None else seeds
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    generators = list(generators)
    if len(generators) != n:
        raise ValueError(f"need one seed / generator per sample: {n} samples, {len(generators)} given")
    return generators


def randn_per_sample(generators: Sequence[torch.Generator], shape: tuple[int, ...],
                     device: torch.device | str) -> torch.Tensor:
    """(B, *shape) standard normal, row i drawn from generator i (on its own device)."""
    return torch.stack([torch.randn(shape, generator=g, device=g.device) for g in generators]).to(device)


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
