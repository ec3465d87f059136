"""Resumable, deterministic training loop shared by the backbone and the prior.

Every step draws its batch indices, noise and timesteps from its own generator seeded
by ``(seed, step)``, and the checkpoint holds model, optimizer and EMA state, so a run
resumed from step s computes exactly what an uninterrupted run computes from step s.
Checkpoints are written atomically (:func:`klsc_lib.runtime.atomic_path`) every
``checkpoint_every`` steps; a corrupt checkpoint is discarded (with a warning) and
training restarts from step 0.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import torch
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from klsc_lib.runtime import atomic_path

LossFn = Callable[[nn.Module, torch.Generator], torch.Tensor]  # (model, step generator) -> scalar loss


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step (independent of where a run was resumed)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def warmup_cosine_lr(base_lr: float, step: int, steps: int, warmup: int = 50, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``floor * base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated / corrupt file: start again rather than fail
        warnings.warn(f"discarding unreadable checkpoint {path} ({type(err).__name__}: {err}); "
                      "training restarts from step 0", stacklevel=3)
        path.unlink()
        return None


def train_resumable(model: nn.Module, loss_fn: LossFn, *, steps: int, lr: float, seed: int,
                    checkpoint_path: Path, checkpoint_every: int, weight_decay: float = 0.0,
                    ema_decay: float | None = None, ema_power: float = 0.75, desc: str = "train",
                    progress: bool = True,
                    on_step: Callable[[int], None] | None = None) -> tuple[nn.Module, list[float]]:
    """Train ``model`` in place for ``steps`` AdamW steps (resuming from
    ``checkpoint_path`` if present) and return ``(final model, loss per step)``: the
    EMA weights (diffusers' ``EMAModel`` with warm-up ``1 - (1 + step)^-ema_power``,
    at most ``ema_decay``) copied into ``model`` when ``ema_decay`` is set. ``on_step(step)`` is called
    after each step (tests use it to simulate a crash)."""
    checkpoint_path = Path(checkpoint_path)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = (EMAModel(model.parameters(), decay=ema_decay, use_ema_warmup=True, power=ema_power)
           if ema_decay is not None else None)
    start, losses = 0, []
    state = _load_checkpoint(checkpoint_path)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start, losses = int(state["step"]), list(state["losses"].tolist())
    model.train()
    for step in tqdm(range(start, steps), desc=desc, initial=start, total=steps, disable=not progress):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(lr, step, steps)
        loss = loss_fn(model, step_generator(seed, step))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if ema is not None:
            ema.step(model.parameters())
        done = step + 1
        if done % checkpoint_every == 0 and done < steps:
            with atomic_path(checkpoint_path) as tmp:
                torch.save({"step": done, "model": model.state_dict(), "opt": opt.state_dict(),
                            "ema": ema.state_dict() if ema is not None else {},
                            "losses": torch.tensor(losses, dtype=torch.float64)}, tmp)
        if on_step is not None:
            on_step(done)
    if ema is not None:
        ema.copy_to(model.parameters())
    return model.eval().requires_grad_(False), losses
