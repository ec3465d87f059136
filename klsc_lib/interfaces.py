"""The two model interfaces every image notebook uses, whatever world it runs in
(embedded mini-world or the paper's models, App J).

- :class:`Prior`: a diffusion prior = an epsilon-predictor on a DDPM schedule plus
  the shape of one sample. Samplers in :mod:`klsc_lib.diffusion` take ``prior.eps``.
- :class:`HookedBackbone`: a vision model with one hook point, returning the input
  and output of the hooked block (paper Sec 3.1, App C: the transcoder maps the
  block input to the block output). Images enter in [-1, 1] (the diffusion range)
  and ``preprocess`` maps them to what the backbone expects (App J.1: [-1,1] ->
  [0,1] -> ImageNet mean/std for DINOv3).

- :class:`ConditionalPrior`: a class-conditional prior p_theta(x | y), the proxy of the
  DiffExplainer-style baseline (App J.3.2).
- :class:`FactorConditionalPrior`: p_theta(x | any subset of generative factors),
  through an embedding vector that a soft prompt can replace (App J.3.2).
- :class:`World`: a hooked backbone, priors and a train / test image set whose items
  carry ground-truth generative factors. :func:`klsc_lib.worlds.load_world` builds one.
- :class:`ImageNetPreprocess`: the paper's [-1, 1] -> ImageNet-normalised input map.

- :class:`DDPMSchedule`: the noise schedule of a prior (Ho et al. 2020; App G, I.3
  eq. 208, Algorithm 1 lines 3-6), a stateless config whose methods are pure functions;
  defaults are the DPS / guided-diffusion ImageNet-256 settings (1000 steps, linear beta
  from 1e-4 to 0.02). The reverse steps live in :mod:`klsc_lib.diffusion.samplers`.

Samplers, caches and notebooks never branch on which concrete model is behind them.
This module imports nothing from :mod:`klsc_lib`: it is the bottom layer every other
one builds on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_IMAGE_SIZE = 256  # App J.1: img_size 256

@dataclass(frozen=True)
class DDPMSchedule:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if not (0 < self.beta_start <= self.beta_end < 1):
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be >= 1")

    @cached_property
    def betas_T(self) -> torch.Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64)

    @cached_property
    def alphas_cumprod_T(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas_T, dim=0)

    def on_device(self, values_T: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``values_T`` on ``device``, copied there once (a copy per call would make the host
        wait for the accelerator at every sampler step)."""
        if values_T.device == device:
            return values_T
        cache = self.__dict__.setdefault("_on_device", {})
        key = (id(values_T), str(device))
        if key not in cache:
            cache[key] = values_T.to(device)
        return cache[key]

    def _gather(self, values_T: torch.Tensor, t_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped to broadcast against ``like`` (B, ...)."""
        out_B = self.on_device(values_T, like.device)[t_B.long().to(like.device)].to(like.dtype)
        return out_B.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """Forward process, eq. (208): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        abar = self._gather(self.alphas_cumprod_T, t_B, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        """Tweedie's estimate (Algorithm 1 line 4), written with eps = -sqrt(1-abar) * score."""
        abar = self._gather(self.alphas_cumprod_T, t_B, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def eps_from_score(self, score: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        abar = self._gather(self.alphas_cumprod_T, t_B, score)
        return -(1 - abar).sqrt() * score

    def score_from_eps(self, eps: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
        abar = self._gather(self.alphas_cumprod_T, t_B, eps)
        return -eps / (1 - abar).sqrt()


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


class ImageNetPreprocess(nn.Module):
    """[-1, 1] -> [0, 1] -> clamp -> (bilinear resize to ``image_size`` if needed) ->
    ImageNet mean / std: the DINOv3 input at guidance time (App J.1). Differentiable."""

    def __init__(self, image_size: int = PAPER_IMAGE_SIZE, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.image_size = image_size
        self.register_buffer("mean_C11", torch.tensor(mean).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("std_C11", torch.tensor(std).reshape(-1, 1, 1), persistent=False)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if x_BCHW.ndim != 4 or x_BCHW.shape[1] != self.mean_C11.shape[0]:
            raise ValueError(f"expected images (B, {self.mean_C11.shape[0]}, H, W) in [-1, 1], got {tuple(x_BCHW.shape)}")
        x = ((x_BCHW + 1) / 2).clamp(0, 1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x - self.mean_C11.to(x)) / self.std_C11.to(x)


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


FactorEmbedder = Callable[[dict[str, torch.Tensor], int], torch.Tensor]  # (factors, batch) -> embedding_BD


@dataclass
class FactorConditionalPrior:
    """p_theta(x | a subset of generative factors), conditioned through an embedding
    vector: ``eps(x_t, t_B, embedding_BD)`` with ``embed(factors, batch)`` the embedding
    of a partial factor setting (a factor left out is "not given"). An optimised vector
    can stand in for ``embed``'s output (the soft prompt of a DiffExplainer-style
    baseline, paper App J.3.2)."""

    eps: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    embed: FactorEmbedder
    schedule: DDPMSchedule
    sample_shape: tuple[int, ...]
    factor_sizes: dict[str, int]
    name: str = "factor_prior"
    clip_x0: tuple[float, float] | None = (-1.0, 1.0)
    guided_eps: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """``eps`` with classifier-free guidance, used by :meth:`given` (default: ``eps``)."""

    def given_embedding(self, embedding_BD: torch.Tensor, guided: bool = False) -> Prior:
        """The prior conditioned on a fixed embedding (batch size = its first dimension);
        ``guided`` samples with :attr:`guided_eps`."""
        if embedding_BD.ndim != 2:
            raise ValueError(f"embedding must be (B, D), got {tuple(embedding_BD.shape)}")
        model = self.guided_eps if guided and self.guided_eps is not None else self.eps

        def eps(x_t: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:
            if x_t.shape[0] != embedding_BD.shape[0]:
                raise ValueError(f"batch of {x_t.shape[0]} images but {embedding_BD.shape[0]} embeddings")
            return model(x_t, t_B, embedding_BD)

        return Prior(eps, self.schedule, self.sample_shape, f"{self.name}|emb", self.clip_x0)

    def given(self, factors: dict[str, torch.Tensor], batch: int) -> Prior:
        """The prior conditioned on ``factors`` (name -> (B,) ids or one id; others not
        given), sampled with classifier-free guidance when the prior has it."""
        return self.given_embedding(self.embed(factors, batch), guided=True)


@dataclass(frozen=True)
class FactorReader:
    """Reads a world's generative factors off images, independently of the explained
    backbone (ground-truth concept accuracy, App L.2), and a second feature space for KID."""

    read: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # images_BCHW -> {factor: value_B}
    features: Callable[[torch.Tensor], torch.Tensor]  # images_BCHW -> features_BD
    name: str


@dataclass(frozen=True)
class PromptProxy:
    """The conditional prior a DiffExplainer-style baseline steers through its prompt
    embedding (App J.3.2): eps given an embedding, and the initial embedding of a batch."""

    eps_given_embedding: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    initial: Callable[[int], torch.Tensor]  # batch -> embedding_BD


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
    factor_prior: FactorConditionalPrior | None = None  # p(x | any subset of factors); mini-world only
    factor_classifier: nn.Module | None = None  # image -> {factor: logits}, separate from the backbone; mini-world only
    key: dict = field(default_factory=dict)  # identity for cache keys: klsc_lib.runtime.world_key(config)
    factor_reader: FactorReader | None = None  # None: read factors from the nearest real images in pixel space
    prompt_proxy: PromptProxy | None = None  # None: no proxy-guidance baseline in this world
    value_names: dict[str, list[str]] = field(default_factory=dict)  # readable factor values, e.g. colour names

    @property
    def image_size(self) -> int:
        return int(self.prior.sample_shape[-1])
