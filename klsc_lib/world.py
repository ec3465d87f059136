"""One interface for the two worlds the image notebooks run in (issue 4, RM §13).

A :class:`World` bundles a hooked vision backbone, an unconditional diffusion prior,
optionally a class-conditional prior (the DiffExplainer-style proxy baseline of paper
Sec 3.1 / App J.3.2, emulated in notebook 04), and a train / test image set whose
items carry ground-truth generative factors.

- ``MiniWorldConfig`` (:mod:`klsc_lib.miniworld`): the embedded mini-world, built in
  code and trained on CPU (or loaded from the cache), no downloads.
- ``PaperWorldConfig`` (:mod:`klsc_lib.zoo`): DINOv3 ConvNeXt-Large hooked at the input
  of ``stages.2.blocks.20`` and the guided-diffusion ImageNet-256 prior (RM §13 J.1,
  J.4), from local files.

Notebooks call :func:`load_world` and never branch on which world is behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from klsc_lib.diffusion.schedule import DDPMSchedule
from klsc_lib.interfaces import HookedBackbone, Prior

CondEpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t_B, y_B) -> eps


@dataclass
class ConditionalPrior:
    """A class-conditional diffusion prior p_theta(x | y): ``eps(x_t, t_B, y_B)``.

    Used as the proxy-guided baseline (DiffExplainer, paper App J.3.2): generation is
    steered by a proxy (a class label) instead of the intrinsic score itself.
    """

    eps: CondEpsModel
    schedule: DDPMSchedule
    sample_shape: tuple[int, ...]
    num_classes: int
    name: str = "cond_prior"
    clip_x0: tuple[float, float] | None = (-1.0, 1.0)

    def given(self, y_B: torch.Tensor) -> Prior:
        """The conditional prior with the labels fixed, as a plain :class:`Prior`
        (so the samplers in :mod:`klsc_lib.diffusion` run it unchanged)."""
        y_B = torch.as_tensor(y_B).long()
        if y_B.ndim != 1 or (y_B.numel() and (y_B.min() < 0 or y_B.max() >= self.num_classes)):
            raise ValueError(f"labels must be a 1-D tensor of class ids in [0, {self.num_classes}), got {y_B}")

        def eps(x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
            if x_t.shape[0] != y_B.shape[0]:
                raise ValueError(f"batch of {x_t.shape[0]} images but {y_B.shape[0]} labels")
            return self.eps(x_t, t_B, y_B.to(x_t.device))

        return Prior(eps, self.schedule, self.sample_shape, f"{self.name}|y", self.clip_x0)


@dataclass
class World:
    """Backbone + priors + data of one world (see module docstring)."""

    name: str
    backbone: HookedBackbone  # images in [-1, 1] of side image_size; preprocess does resize / normalisation
    prior: Prior  # unconditional eps-model, sample_shape (C, image_size, image_size)
    cond_prior: ConditionalPrior | None  # None at paper scale
    train: torch.utils.data.Dataset  # items: (image_CHW in [-1, 1], factors: dict[str, int])
    test: torch.utils.data.Dataset
    factor_names: tuple[str, ...]  # ground-truth generative factors
    num_classes: int  # classes of the backbone's head
    quality: dict = field(default_factory=dict)  # quality metrics measured when built / loaded

    @property
    def image_size(self) -> int:
        return int(self.prior.sample_shape[-1])


def load_world(spec: Any, device: str | torch.device = "auto", progress: bool = True) -> World:
    """Build or load the world described by ``spec``.

    ``MiniWorldConfig`` -> the mini-world (trained, or a cache hit under
    ``cache_dir()/miniworld/<config_hash>/``); ``PaperWorldConfig`` -> the paper's
    models from local weight files.
    """
    from klsc_lib.miniworld import MiniWorldConfig, load_miniworld

    if isinstance(spec, MiniWorldConfig):
        return load_miniworld(spec, device=device, progress=progress)
    try:
        from klsc_lib.zoo import PaperWorldConfig, load_paper_world
    except ImportError as err:  # the zoo package is optional for the mini-world
        raise TypeError(f"cannot load world spec of type {type(spec).__name__}: {err}") from err
    if isinstance(spec, PaperWorldConfig):
        return load_paper_world(spec, device=device)
    raise TypeError(f"world spec must be a MiniWorldConfig or a PaperWorldConfig, got {type(spec).__name__}")


def _image_grid(images_BCHW: torch.Tensor, ncol: int) -> torch.Tensor:
    """Tile images in [-1, 1] into one (H', W', C) array in [0, 1] with 1-pixel gaps."""
    b, c, h, w = images_BCHW.shape
    nrow = math.ceil(b / ncol)
    grid = torch.ones(c, nrow * (h + 1) + 1, ncol * (w + 1) + 1)
    for i, img in enumerate(images_BCHW.detach().float().cpu().clamp(-1, 1)):
        r, q = divmod(i, ncol)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = (img + 1) / 2
    return grid.permute(1, 2, 0).squeeze(-1)


def record_world(report, world: World, num_images: int = 32) -> None:
    """Write ``world.quality`` as metrics (prefixed ``world/``; tensors skipped) and one
    PNG (``world``) into a :class:`klsc_lib.report.Report`: held-out world images beside
    the prior samples the quality was measured on (``quality["samples_BCHW"]`` and
    ``quality["cond_samples_BCHW"]``, where the builder kept them)."""
    import matplotlib.pyplot as plt

    report.metric("world/name", world.name)
    for key, value in world.quality.items():
        if not isinstance(value, torch.Tensor):
            report.metric(f"world/{key}", value)
    n = min(num_images, len(world.test))
    panels = []
    if n:  # the paper world has no images unless an image folder is configured
        panels.append(("world images (held-out test set)", torch.stack([world.test[i][0] for i in range(n)]), 8))
    n = n or num_images
    if isinstance(world.quality.get("samples_BCHW"), torch.Tensor):
        panels.append((f"unconditional prior samples\n({world.prior.name})", world.quality["samples_BCHW"][:n], 8))
    if isinstance(world.quality.get("cond_samples_BCHW"), torch.Tensor) and world.cond_prior is not None:
        k = world.cond_prior.num_classes
        panels.append((f"class-conditional samples\n(column j: class j of {k})",
                       world.quality["cond_samples_BCHW"][: (n // k) * k or k], k))
    if not panels:
        return
    grids = [(title, _image_grid(batch, ncol=ncol).numpy()) for title, batch, ncol in panels]
    cell = 0.42 / 17  # inches per grid pixel: every panel shows its images at the same scale
    widths = [g.shape[1] for _, g in grids]
    fig, axes = plt.subplots(1, len(grids), figsize=(cell * sum(widths) + 0.3 * len(grids),
                                                     cell * max(g.shape[0] for _, g in grids) + 1.0),
                             squeeze=False, width_ratios=widths, layout="constrained")
    for ax, (title, grid) in zip(axes[0], grids):
        ax.imshow(grid, interpolation="nearest", cmap="gray")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"World {world.name!r}")
    report.savefig(fig, "world")
    plt.close(fig)
