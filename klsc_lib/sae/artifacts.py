"""Trained transcoders and their top-k indices as cached artefacts (paper Sec 3.1, App J.1).

:func:`load_or_fit_transcoder` turns a world and a :class:`TranscoderRecipe` into a
trained transcoder: it builds (or opens) the activation caches of the hooked block,
then loads the transcoder from, or trains it into, a hash-named folder::

    $KLSC_CACHE/transcoders/<hash>/
        transcoder.safetensors   state dict (weights and the dataset-norm buffers)
        transcoder.json          model + training config, seed, cache hashes, history,
                                 held-out evaluation, training wall time
        train_state.pt           only while training: optimiser state for resuming
        features_top<k>.safetensors / .json, neurons_top<k>.*   saved top-k indices

``<hash>`` covers everything that determines the weights (activation-cache hash,
model and training configs, global batch, seed). The JSON is written last, so a
folder without it is an unfinished run, which resumes from ``train_state.pt``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from klsc_lib.interfaces import HookedBackbone, World
from klsc_lib.paper_values import TRANSCODER
from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, config_hash
from klsc_lib.sae.activation_cache import ActivationCache, cached_activations
from klsc_lib.sae.topk_index import TopKIndex, index_maps
from klsc_lib.sae.training import EvalResult, History, TrainConfig, evaluate_transcoder, fit_transcoder
from klsc_lib.sae.transcoder import Transcoder, TranscoderConfig

WEIGHTS, META, TRAIN_STATE = "transcoder.safetensors", "transcoder.json", "train_state.pt"


class CorruptArtifactError(RuntimeError):
    """A cached artefact exists but cannot be read."""


@dataclass(frozen=True)
class TranscoderRecipe:
    """Everything that defines a trained transcoder besides the world and the seed
    (the paper's values: :data:`klsc_lib.paper_values.TRANSCODER`)."""

    kernel_size: int
    k: int
    expansion: int  # d_sae = expansion * d_in
    lr: float
    warmup_steps: int
    steps: int
    batch_size: int  # global batch of images per step
    dead_window: int  # steps; a latent silent over a whole window is dead
    n_cache_images: int | None  # training images cached (None: the whole training split)
    n_eval_images: int | None  # held-out images for evaluation and indices (None: whole test split)
    shard_size: int = 1000
    cache_batch_size: int = 250
    aux_k: int = 0  # AuxK (Gao et al. 2024); 0 = off, as in the paper (App J.1)

    def beside_paper(self, block: str, hook_shape: tuple[int, int, int], n_images: int
                     ) -> list[tuple[str, Any, Any]]:
        """(setting, ours, paper's) rows for the settings table of notebook 03 (App J.1)."""
        p = TRANSCODER
        c, h, w = hook_shape
        return [("hook", block, p["hook"]), ("hook map", f"{c}x{h}x{w}", "x".join(map(str, p["hook_shape"]))),
                ("k (TopK)", self.k, p["k"]), ("expansion", self.expansion, p["expansion"]),
                ("kernel", f"{self.kernel_size}x{self.kernel_size}", f"{p['kernel_size']}x{p['kernel_size']}"),
                ("steps x batch", f"{self.steps} x {self.batch_size}", "(not published)"),
                ("images seen", self.steps * self.batch_size, p["num_images"]),
                ("distinct images", n_images, "ImageNet-1K train"), ("lr", self.lr, p["lr"]),
                ("AuxK latents", self.aux_k, "none" if not p["aux_loss"] else "?")]

    def model_config(self, d_in: int, d_out: int) -> TranscoderConfig:
        return TranscoderConfig(d_in=d_in, d_out=d_out, d_sae=self.expansion * d_in, k=self.k,
                                kernel_size=self.kernel_size)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           dead_window=self.dead_window, log_every=max(1, self.steps // 100),
                           checkpoint_every=max(1, self.steps // 10), aux_k=self.aux_k)


@dataclass
class FittedTranscoder:
    model: Transcoder
    history: History
    held_out: EvalResult  # on the first n_eval_images test images
    folder: Path
    train_cache: ActivationCache
    eval_cache: ActivationCache
    train_seconds: float  # wall time of the training run that produced the weights
    backbone: HookedBackbone


def save_transcoder(model: Transcoder, folder: str | Path, meta: Mapping[str, Any]) -> None:
    """Weights (safetensors) then metadata (JSON), each atomically; the JSON marks completion."""
    folder = Path(folder)
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file({n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()}, str(tmp))
    atomic_write_text(folder / META, json.dumps({"config": asdict(model.cfg), **meta}, indent=2, default=str) + "\n")


def load_transcoder(folder: str | Path) -> tuple[Transcoder, dict[str, Any]]:
    """The transcoder and metadata saved in ``folder``; ``FileNotFoundError`` if the run
    never finished, :class:`CorruptArtifactError` if a file cannot be read."""
    folder = Path(folder)
    if not (folder / META).exists() or not (folder / WEIGHTS).exists():
        raise FileNotFoundError(f"no finished transcoder in {folder} (needs {WEIGHTS} and {META}); "
                                "train it with load_or_fit_transcoder")
    try:
        meta = json.loads((folder / META).read_text())
        model = Transcoder(TranscoderConfig(**meta["config"]))
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (SafetensorError, json.JSONDecodeError, KeyError, RuntimeError, TypeError) as err:
        raise CorruptArtifactError(f"transcoder in {folder} is unreadable ({err}); delete the folder to "
                                   "retrain it") from err
    return model.eval(), meta


def transcoder_identity(train: ActivationCache, recipe: TranscoderRecipe, seed: int) -> dict[str, Any]:
    """What determines a transcoder's weights (hashed into its folder name, kept in its JSON):
    the activations, the model and training configs, the global batch and the seed."""
    d_in, d_out = train.manifest["in_shape"][0], train.manifest["out_shape"][0]
    return {"activations": train.manifest["config_hash"], "model": asdict(recipe.model_config(d_in, d_out)),
            "train": asdict(recipe.train_config()), "batch_size": recipe.batch_size, "seed": seed}


def fit_into(folder: Path, train: ActivationCache, held_out: ActivationCache, recipe: TranscoderRecipe, seed: int,
             device: torch.device | str, progress: bool = True, primary: bool = True,
             extra_meta: Mapping[str, Any] | None = None) -> tuple[History, float]:
    """Train the transcoder of ``recipe`` into ``folder`` (resuming from ``train_state.pt``;
    DDP when a process group is up), then, on the ``primary`` process, evaluate it on the
    held-out cache and save it (:func:`save_transcoder`). Returns (history, seconds)."""
    identity = transcoder_identity(train, recipe, seed)
    t0 = time.perf_counter()
    model, history = fit_transcoder(train, TranscoderConfig(**identity["model"]), recipe.train_config(),
                                    recipe.batch_size, seed, device, checkpoint=folder / TRAIN_STATE,
                                    progress=progress)
    seconds = time.perf_counter() - t0
    if primary:
        result = evaluate_transcoder(model, ((b.in_BCHW, b.out_BCHW) for b in held_out.iterate(256)), device)
        save_transcoder(model, folder, {**identity, "held_out_cache": held_out.manifest["config_hash"],
                                        "history": vars(history), "held_out": asdict(result),
                                        "train_seconds": seconds, **(extra_meta or {})})
        (folder / TRAIN_STATE).unlink(missing_ok=True)
    return history, seconds


def transcoder_caches(world: World, recipe: TranscoderRecipe, world_key: Mapping[str, Any],
                      backbone: HookedBackbone | None = None, device: torch.device | str = "cpu",
                      progress: bool = True) -> tuple[ActivationCache, ActivationCache]:
    """Train / held-out activation caches of ``backbone`` (default: the world's) over the
    world's splits. ``world_key`` identifies the world's weights and data (e.g. its
    config hash) so that a rebuilt world never reuses stale activations."""
    backbone = backbone or world.backbone
    kw = dict(shard_size=recipe.shard_size, batch_size=recipe.cache_batch_size, device=device, progress=progress)
    key = dict(world_key, world=world.name)
    train = cached_activations(backbone, world.train, dict(key, split="train"), recipe.n_cache_images, **kw)
    held_out = cached_activations(backbone, world.test, dict(key, split="test"), recipe.n_eval_images, **kw)
    return train, held_out


def load_or_fit_transcoder(world: World, recipe: TranscoderRecipe, *, world_key: Mapping[str, Any],
                           backbone: HookedBackbone | None = None, seed: int = 0,
                           device: torch.device | str = "cpu", progress: bool = True) -> FittedTranscoder:
    """The transcoder of ``recipe`` on ``backbone``'s hooked block (default: the world's):
    loaded from its cache folder, or trained (resuming an interrupted run), evaluated on
    the held-out cache and saved. See the module docstring for the folder layout."""
    backbone = backbone or world.backbone
    train, held_out = transcoder_caches(world, recipe, world_key, backbone, device, progress)
    folder = cache_dir() / "transcoders" / config_hash(transcoder_identity(train, recipe, seed))
    if not (folder / META).exists():
        folder.mkdir(parents=True, exist_ok=True)
        fit_into(folder, train, held_out, recipe, seed, device, progress)
    model, meta = load_transcoder(folder)
    return FittedTranscoder(model.to(device), History(**meta["history"]), EvalResult(**meta["held_out"]), folder,
                            train, held_out, meta["train_seconds"], backbone)


@torch.no_grad()
def load_or_build_index(fitted: FittedTranscoder, which: Literal["features", "neurons"], k: int,
                        batch_size: int = 256) -> TopKIndex:
    """The top-``k`` index (with score histograms) of the held-out cache, saved in the
    transcoder's folder: ``features`` are the transcoder's codes of the cached block
    input, ``neurons`` the channels of the cached block output. One streaming pass."""
    if which not in ("features", "neurons"):
        raise ValueError(f"which must be 'features' or 'neurons', got {which!r}")
    path = fitted.folder / f"{which}_top{k}.safetensors"
    if path.exists() and path.with_suffix(".json").exists():
        return TopKIndex.load(path)
    device = next(fitted.model.parameters()).device
    if which == "features":
        batches = ((b.ids_B, b.in_BCHW) for b in fitted.eval_cache.iterate(batch_size))
        maps_fn, n_units = (lambda x: fitted.model.encode(x.to(device)).cpu()), fitted.model.cfg.d_sae
    else:
        batches = ((b.ids_B, b.out_BCHW) for b in fitted.eval_cache.iterate(batch_size))
        maps_fn, n_units = (lambda x: x), fitted.eval_cache.manifest["out_shape"][0]
    index = index_maps(batches, maps_fn, n_units, k)
    index.save(path, meta={"units": which, "held_out_cache": fitted.eval_cache.manifest["config_hash"],
                           "transcoder": fitted.folder.name})
    return index
