"""How the networks of guided sampling run (paper App L.4, Table 11: cost per sample),
separate from what is sampled.

:class:`Speed` holds the options; :meth:`Speed.prior` and :meth:`Speed.energy` wrap a
:class:`~klsc_lib.interfaces.Prior` and an energy so that every network call runs with
them, and :meth:`Speed.math` sets the matmul precision around a sampling run:

- ``tf32``: TensorFloat-32 matmuls and convolutions on CUDA (10-bit mantissa inputs,
  float32 accumulation); no effect on CPU.
- ``autocast``: run the denoiser and the energy's networks under ``torch.autocast`` in
  bfloat16 (or float16); their outputs are cast back to float32, so Tweedie's x0-hat,
  the sampler's arithmetic and the state x_t stay float32.
- ``channels_last``: inputs (and, through :func:`to_channels_last`, weights) in NHWC,
  the layout of cuDNN's fastest convolutions.
- ``compile``: ``torch.compile`` each network call (compiled once per model and
  method); where compilation fails the call runs eagerly, with one warning.

:meth:`Speed.off` (the default everywhere) changes nothing: with it the wrapped prior and
energy return the same tensors, bit for bit. :meth:`Speed.fast` turns everything on but
compilation; it is opt-in because it did not pay on the paper's models (see its docstring).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from klsc_lib.energies.base import Energy, ScoreFn, as_energy
from klsc_lib.interfaces import Prior

AutocastDtype = Literal["bfloat16", "float16"]


@dataclass(frozen=True)
class Speed:
    """Execution options of the networks in a guided sampler (see module docstring)."""

    tf32: bool = False
    autocast: AutocastDtype | None = None
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.autocast not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast must be None, 'bfloat16' or 'float16', got {self.autocast!r}")

    @classmethod
    def off(cls) -> "Speed":
        """Eager float32: the reference every fast path is measured against."""
        return cls()

    @classmethod
    def fast(cls, compile: bool = False) -> "Speed":
        """bf16 autocast, TF32, channels_last (and ``torch.compile`` if asked): opt-in. Measured
        on one H200 at paper scale (``benchmarks/bench_paper_scale.py``), eager bf16 was 1.66x
        SLOWER than float32 at batch 1 (the guided-diffusion UNet is GroupNorm- and launch-bound:
        casts and layout copies cost more than the faster convolutions save) and no faster
        batched, so no device runs it by default."""
        return cls(tf32=True, autocast="bfloat16", channels_last=True, compile=compile)

    @property
    def is_off(self) -> bool:
        return self == Speed.off()

    def without_compile(self) -> "Speed":
        return replace(self, compile=False)

    @contextlib.contextmanager
    def math(self) -> Iterator[None]:
        """TF32 on (if asked) and cuDNN's kernel autotuning (for any fast path) for the
        duration; the previous settings restored after."""
        flags = torch.backends.cuda.matmul, torch.backends.cudnn
        old = flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark
        if self.tf32:
            flags[0].allow_tf32 = flags[1].allow_tf32 = True
        if not self.is_off:
            flags[1].benchmark = True  # cuDNN picks the fastest kernel per shape (shapes repeat every step)
        try:
            yield
        finally:
            flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark = old

    def _run(self, fn: Callable[..., object]) -> Callable[..., object]:
        """``fn(x, *rest)`` with this speed's input layout, autocast and compilation; every
        floating output tensor cast back to float32."""
        if self.is_off:
            return fn
        call = _compiled(fn) if self.compile else fn
        dtype = None if self.autocast is None else getattr(torch, self.autocast)

        def run(x: torch.Tensor, *rest, **kw):
            if self.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
                out = call(x, *rest, **kw)
            return _float32(out)

        return run

    def prior(self, prior: Prior) -> Prior:
        """``prior`` whose eps-model (and learned variance, if it has one) runs with these options."""
        if self.is_off:
            return prior
        eps = _FastEps(prior.eps, self._run(prior.eps),
                       self._run(prior.eps.eps_and_log_variance) if hasattr(prior.eps, "eps_and_log_variance")
                       else None)
        return replace(prior, eps=eps)

    def energy(self, energy: Energy | ScoreFn) -> Energy:
        """``energy`` evaluated with these options (psi returned in float32)."""
        energy = as_energy(energy)
        if self.is_off:
            return energy
        return Energy(self._run(energy), energy.name)


class _FastEps:
    """An eps-model run through :meth:`Speed._run`; keeps ``eps_and_log_variance`` when the
    wrapped model has it (the samplers look for that attribute)."""

    def __init__(self, model: Callable, eps: Callable, eps_and_log_variance: Callable | None):
        self.model, self._eps = model, eps
        if eps_and_log_variance is not None:
            self.eps_and_log_variance = eps_and_log_variance

    def __call__(self, x_t: torch.Tensor, t_B: torch.Tensor, **kw) -> torch.Tensor:
        return self._eps(x_t, t_B, **kw)


def _float32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_float32(o) for o in out)
    return out


_COMPILED: "weakref.WeakKeyDictionary[object, dict[str, Callable]]" = weakref.WeakKeyDictionary()


def _compiled(fn: Callable) -> Callable:
    """``torch.compile(fn)``, built once per underlying object and method; falls back to
    ``fn`` (with one warning) where compilation is unavailable or fails."""
    owner, name = getattr(fn, "__self__", fn), getattr(fn, "__name__", "__call__")
    known = _COMPILED.setdefault(owner, {})
    if name in known:
        return known[name]
    try:
        compiled = torch.compile(fn, dynamic=False)
    except Exception as err:  # e.g. no C compiler, unsupported platform
        warnings.warn(f"torch.compile unavailable ({err}); running eagerly", RuntimeWarning, stacklevel=3)
        compiled = fn
    failed: list[bool] = []

    def call(*args, **kw):
        if not failed:
            try:
                return compiled(*args, **kw)
            except Exception as err:  # a graph dynamo cannot trace: eager from now on
                failed.append(True)
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly",
                              RuntimeWarning, stacklevel=2)
        return fn(*args, **kw)

    known[name] = call
    return call


def to_channels_last(*modules: nn.Module | None) -> None:
    """Store the 4-D weights of ``modules`` in NHWC (in place; values unchanged)."""
    for module in modules:
        if isinstance(module, nn.Module):
            module.to(memory_format=torch.channels_last)
