"""Settings of the mini-world (issue 4): data, backbone, prior, quality checks.

One frozen :class:`MiniWorldConfig` describes a whole world; its
:func:`miniworld_hash` names the cache folder ``cache_dir()/miniworld/<hash>/``, so a
changed setting never reuses a stale artefact. ``MINIWORLD`` holds the two sizes the
notebooks use (profile ``paper`` uses the paper's models instead, :mod:`klsc_lib.worlds.zoo`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from klsc_lib.runtime import config_hash

# Bump when a code change alters what a config trains into (data rendering, model
# wiring, training loop), so old cache folders are not reused.
FORMAT_VERSION = 3


@dataclass(frozen=True)
class BackboneConfig:
    """A narrow, shallow timm ConvNeXt (the block type of DINOv3 ConvNeXt, App J.1).

    The 16x16 world image is upsampled (bilinear, inside ``preprocess``) to
    ``input_size``. With a stride-1 stem (``patch_size=1``) timm's ConvNeXt runs stage
    k at ``input_size / 2**k`` (a stride-2 stem is followed by a stride-2 stage 0, so it
    halves everything twice), so stage 2 (the third) is 8x8 for the default 32 px
    input: the hook is 64x8x8, stride 2 in world pixels (the paper's: 768x16x16 at
    256 px, stride 16)."""

    dims: tuple[int, ...] = (16, 32, 64, 128)
    depths: tuple[int, ...] = (1, 1, 3, 1)
    input_size: int = 32
    patch_size: int = 1
    hook_block: str = "stages.2.blocks.2"  # input of the last block of stage 2 (paper: block 20 of 27)
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05


@dataclass(frozen=True)
class RefineStage:
    """One more training stage of the prior (:class:`PriorConfig`)."""

    steps: int
    lr: float
    ema_decay: float = 0.9995  # maximum decay of the stage's fresh EMA


@dataclass(frozen=True)
class PriorConfig:
    """A small diffusers ``UNet2DModel`` eps-predictor on the world's 16x16x3 images,
    conditioned on any subset of the generative factors.

    Each factor has an embedding table with one extra "not given" row; the embeddings
    are summed and added to the timestep embedding (diffusers' ``class_embed_type=
    "identity"``). Training drops all factors with probability ``p_uncond`` (Ho &
    Salimans 2022) and otherwise each factor independently with probability
    ``p_drop_factor``, so every subset of factors is trained: with no factor the
    network is the unconditional prior p(x), with the digit alone the class-conditional
    prior p(x | y) of the DiffExplainer-style proxy baseline (paper App J.3.2), and an
    embedding vector can replace the factor embeddings (a soft prompt)."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention: bool = True  # self-attention at the middle resolution (8x8)
    layers_per_block: int = 1
    norm_groups: int = 8
    num_train_timesteps: int = 1000  # paper App J.4: 1000-step linear schedule
    beta_start: float = 1e-4
    beta_end: float = 0.02
    steps: int = 7000
    batch_size: int = 128
    lr: float = 1e-3
    # EnergyDPS guides the unconditional prior, so it gets the largest share of training
    p_uncond: float = 0.4
    p_drop_factor: float = 0.3
    ema_decay: float = 0.9995  # maximum decay of diffusers' EMAModel (with warm-up)
    ema_power: float = 0.75
    # further stages, each from the previous stage's EMA weights: a fresh AdamW and EMA,
    # warm-up and cosine decay again (warm restarts, Loshchilov & Hutter 2017), so a longer
    # schedule can extend a finished one
    refine: tuple[RefineStage, ...] = ()
    # classifier-free guidance scale of the digit- and factor-conditional priors (Ho &
    # Salimans 2022): eps_u + w (eps_c - eps_u); sampling only, training ignores it
    cond_guidance_scale: float = 4.0


@dataclass(frozen=True)
class FactorClassifierConfig:
    """A small CNN reading all five factors of a world image (:mod:`.factor_classifier`)."""

    channels: tuple[int, ...] = (32, 64, 128)
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05


@dataclass(frozen=True)
class MiniWorldConfig:
    name: str
    seed: int = 0
    n_train: int = 20_000
    n_test: int = 2_000
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    factor_classifier: FactorClassifierConfig = field(default_factory=FactorClassifierConfig)
    num_quality_samples: int = 1000  # unconditional prior samples for KID / recognition / factor marginals
    num_cond_quality_samples: int = 100  # digit-conditional and all-factor-conditional samples (each)
    quality_sampling_steps: int = 100  # respaced DDPM ancestral steps for the quality samples
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if self.n_train < self.backbone.batch_size or self.n_train < self.prior.batch_size:
            raise ValueError(f"n_train={self.n_train} is smaller than a training batch")
        if self.num_quality_samples < 4 or self.num_cond_quality_samples < 1:
            raise ValueError("KID needs at least 4 prior samples and at least 1 conditional sample")


def miniworld_hash(cfg: MiniWorldConfig) -> str:
    """Cache key of ``cfg`` (every field, plus :data:`FORMAT_VERSION`)."""
    return config_hash({"format": FORMAT_VERSION, **asdict(cfg)})


MINIWORLD = {
    # CI: a tiny world in well under a minute on 2 cores. The short 100-step schedule
    # (betas scaled by 10 so abar_T stays ~0) keeps sampling cheap; it is a smoke test.
    "smoke": MiniWorldConfig(
        name="miniworld-smoke", n_train=1024, n_test=256,
        backbone=BackboneConfig(dims=(8, 16, 32, 64), input_size=16, steps=150, batch_size=64),
        prior=PriorConfig(channels=(16, 32, 32), attention=False, norm_groups=8, num_train_timesteps=100,
                          beta_start=1e-3, beta_end=0.2, steps=120, batch_size=64, ema_decay=0.9),
        factor_classifier=FactorClassifierConfig(channels=(8, 16, 32), steps=60, batch_size=64),
        num_quality_samples=32, num_cond_quality_samples=20, quality_sampling_steps=50, checkpoint_every=40),
    # shipped in weights/<hash>/ (make miniworld REBUILD=1): a wider UNet (1.74 M parameters), batches of 512,
    # 4900 + 1600 + 2600 + 3600 prior steps; trained on one H100 (stages 0-2) and one H200 (stage 3)
    # (README: how the default world was built)
    "default": MiniWorldConfig(name="miniworld", prior=PriorConfig(
        channels=(40, 80, 80), batch_size=512, steps=4900,
        refine=(RefineStage(1600, 1e-4, ema_decay=0.9999), RefineStage(2600, 3e-4, ema_decay=0.9999),
                RefineStage(3600, 3e-4, ema_decay=0.9999)))),
}
