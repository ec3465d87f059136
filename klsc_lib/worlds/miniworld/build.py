"""Build or load a mini-world: data, trained backbone, trained prior, quality.

Cache layout, ``cache_dir()/miniworld/<miniworld_hash(cfg)>/``:

- ``config.json``                          the config and its hash;
- ``backbone.safetensors``, ``prior.safetensors``   final weights (the prior's are its EMA);
- ``ckpt_backbone.pt``, ``ckpt_prior.pt``  checkpoints of an unfinished run (resumed, then removed);
- ``samples.safetensors``, ``quality.json``  quality samples and metrics, written last.

A second load with the same config is a cache hit: nothing is trained or sampled. A
weights or quality file that cannot be read is deleted with a warning and rebuilt
(a clean retrain of that part): the cache only holds derived data.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from klsc_lib.diffusion.samplers import sample_ddpm, spaced_timesteps
import klsc_lib.worlds.miniworld.quality as q
from klsc_lib.worlds.miniworld.config import FORMAT_VERSION, MiniWorldConfig, miniworld_hash
from klsc_lib.worlds.miniworld.data import FACTOR_NAMES, IMAGE_SIZE, MiniWorldDataset
from klsc_lib.worlds.miniworld.models import (NULL_LABEL, NUM_DIGITS, build_convnext, build_unet, hooked_backbone, priors,
                                       schedule_of)
from klsc_lib.worlds.miniworld.training import train_resumable
from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, resolve_device
from klsc_lib.interfaces import World


def world_folder(cfg: MiniWorldConfig) -> Path:
    return cache_dir() / "miniworld" / miniworld_hash(cfg)


def _read_or_discard(path: Path, read: Callable[[Path], object]) -> object | None:
    """``read(path)``, or None (deleting the file with a warning) if it is unreadable."""
    if not path.exists():
        return None
    try:
        return read(path)
    except Exception as err:
        warnings.warn(f"cached file {path} is unreadable ({type(err).__name__}: {err}); "
                      "deleting it and rebuilding that part of the mini-world", stacklevel=3)
        path.unlink()
        return None


def _seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``make()`` with the global torch RNG seeded (and restored afterwards), so a
    config always starts from the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _save_model(model: nn.Module, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def _backbone_loss(train: MiniWorldDataset, batch_size: int, preprocess: nn.Module, device: torch.device):
    def loss(model: nn.Module, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        x_BCHW, y_B = train.images_NCHW[idx].to(device), train.labels_N[idx].to(device)
        return F.cross_entropy(model(preprocess(x_BCHW)), y_B)
    return loss


def _prior_loss(train: MiniWorldDataset, cfg: MiniWorldConfig, device: torch.device):
    """Eps-prediction loss (Ho et al. 2020) with class dropout (see PriorConfig)."""
    schedule = schedule_of(cfg.prior)

    def loss(unet: nn.Module, gen: torch.Generator) -> torch.Tensor:
        b = cfg.prior.batch_size
        idx = torch.randint(len(train), (b,), generator=gen)
        t_B = torch.randint(schedule.num_train_timesteps, (b,), generator=gen)
        eps = torch.randn(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        drop_B = torch.rand(b, generator=gen) < cfg.prior.p_uncond
        y_B = torch.where(drop_B, NULL_LABEL, train.labels_N[idx])
        x_t = schedule.add_noise(train.images_NCHW[idx], eps, t_B)
        pred = unet(x_t.to(device), t_B.to(device), class_labels=y_B.to(device)).sample
        return F.mse_loss(pred, eps.to(device))
    return loss


def _trained(kind: str, model: nn.Module, folder: Path, train: Callable[[nn.Module], tuple[nn.Module, list[float]]],
             stats: dict, trained_now: list[str]) -> nn.Module:
    """Final weights of ``kind`` from the cache, else trained (resumably), cached and
    listed in ``trained_now``."""
    path = folder / f"{kind}.safetensors"
    if _read_or_discard(path, lambda p: load_model(model, str(p), strict=True)) is not None:
        return model.eval().requires_grad_(False)
    trained_now.append(kind)
    t0, c0 = time.perf_counter(), time.process_time()
    final, losses = train(model)
    stats[f"train_seconds_{kind}"] = round(time.perf_counter() - t0, 1)
    stats[f"train_cpu_seconds_{kind}"] = round(time.process_time() - c0, 1)  # wall time is inflated by other load
    stats[f"final_loss_{kind}"] = sum(losses[-50:]) / len(losses[-50:])
    stats[f"num_params_{kind}"] = sum(p.numel() for p in final.parameters())
    _save_model(final, path)
    (folder / f"ckpt_{kind}.pt").unlink(missing_ok=True)
    return final


def _measure_quality(cfg: MiniWorldConfig, world: World, train: MiniWorldDataset, test: MiniWorldDataset,
                     device: torch.device, progress: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """Quality metrics (module :mod:`.quality`) and the prior samples they were measured on."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    n_u, n_c = cfg.num_quality_samples, cfg.num_cond_quality_samples
    labels_B = torch.arange(n_c) % NUM_DIGITS
    # One batch: the first n_u rows use the null label (unconditional), the rest the digit labels.
    y_B = torch.cat([torch.full((n_u,), NULL_LABEL), labels_B]).to(device)
    x_T = torch.randn(n_u + n_c, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    schedule = world.prior.schedule
    x0 = sample_ddpm(lambda x, t_B: world.cond_prior.eps(x, t_B, y_B), x_T, schedule,
                     generator=gen, timesteps=spaced_timesteps(schedule, cfg.quality_sampling_steps),
                     clip_x0=world.prior.clip_x0, disable=not progress).clamp(-1, 1).cpu()
    samples, cond_samples = x0[:n_u], x0[n_u:]
    bb = world.backbone.cpu()
    p_test, f_test = q.classify(bb, test.images_NCHW)
    p_train, f_train = q.classify(bb, train.images_NCHW[:len(test)])
    p_s, f_s = q.classify(bb, samples)
    p_c, f_c = q.classify(bb, cond_samples)
    world.backbone.to(device)
    rec = q.recognition(p_s)
    kid_s, kid_s_std = q.kid(f_s, f_test)
    kid_c, kid_c_std = q.kid(f_c, f_test)
    kid_ref, kid_ref_std = q.kid(f_train[:n_u], f_test)
    metrics = {
        "backbone_test_accuracy": (p_test.argmax(-1) == test.labels_N).float().mean().item(),
        "backbone_train_accuracy": (p_train.argmax(-1) == train.labels_N[:len(test)]).float().mean().item(),
        "prior_mean_max_prob": rec["mean_max_prob"],
        "prior_class_histogram": rec["histogram"],
        "prior_class_tv_to_uniform": rec["tv_to_uniform"],
        "prior_class_normalised_entropy": rec["normalised_entropy"],
        "test_mean_max_prob": p_test.max(-1).values.mean().item(),
        "kid_prior_vs_test": kid_s, "kid_prior_vs_test_std": kid_s_std,
        "kid_cond_prior_vs_test": kid_c, "kid_cond_prior_vs_test_std": kid_c_std,
        "kid_train_vs_test_reference": kid_ref, "kid_train_vs_test_reference_std": kid_ref_std,
        "cond_prior_label_agreement": (p_c.argmax(-1) == labels_B).float().mean().item(),
        "num_quality_samples": n_u, "num_cond_quality_samples": n_c,
        "quality_sampling_steps": cfg.quality_sampling_steps,
        "quality_seconds": round(time.perf_counter() - t0, 1),
    }
    return metrics, {"samples_BCHW": samples, "cond_samples_BCHW": cond_samples, "cond_labels_B": labels_B}


def load_miniworld(cfg: MiniWorldConfig, device: str | torch.device = "auto", progress: bool = True,
                   on_step: Callable[[str, int], None] | None = None) -> World:
    """The mini-world of ``cfg``: a cache hit if it was built before, else built now
    (training resumes from checkpoints of an interrupted run). ``on_step(kind, step)``
    is called after every training step (tests use it to simulate a crash)."""
    if not isinstance(cfg, MiniWorldConfig):
        raise TypeError(f"expected a MiniWorldConfig, got {type(cfg).__name__}")
    device = resolve_device(device)
    folder = world_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(
        {"format": FORMAT_VERSION, "hash": miniworld_hash(cfg), **asdict(cfg)}, indent=2) + "\n")
    train = MiniWorldDataset(cfg.n_train, "train", cfg.seed)
    test = MiniWorldDataset(cfg.n_test, "test", cfg.seed)
    stored = _read_or_discard(folder / "quality.json", lambda p: json.loads(p.read_text()))
    # cloned: safetensors may memory-map the file, which must not stay tied to the cache
    samples = _read_or_discard(folder / "samples.safetensors",
                               lambda p: {k: v.clone() for k, v in load_file(p).items()})
    stats: dict = {} if stored is None else dict(stored)
    trained_now: list[str] = []

    def hook(kind: str):
        return None if on_step is None else (lambda step: on_step(kind, step))

    bcfg, pcfg = cfg.backbone, cfg.prior
    backbone = hooked_backbone(_seeded(lambda: build_convnext(bcfg), cfg.seed), bcfg, cfg.name).to(device)

    def train_backbone(model: nn.Module) -> tuple[nn.Module, list[float]]:
        return train_resumable(
            model, _backbone_loss(train, bcfg.batch_size, backbone.preprocess, device), steps=bcfg.steps,
            lr=bcfg.lr, weight_decay=bcfg.weight_decay, seed=cfg.seed, checkpoint_path=folder / "ckpt_backbone.pt",
            checkpoint_every=cfg.checkpoint_every, desc=f"{cfg.name} backbone", progress=progress,
            on_step=hook("backbone"))

    def train_prior(model: nn.Module) -> tuple[nn.Module, list[float]]:
        return train_resumable(
            model, _prior_loss(train, cfg, device), steps=pcfg.steps, lr=pcfg.lr, seed=cfg.seed + 1,
            checkpoint_path=folder / "ckpt_prior.pt", checkpoint_every=cfg.checkpoint_every,
            ema_decay=pcfg.ema_decay, desc=f"{cfg.name} prior", progress=progress, on_step=hook("prior"))

    _trained("backbone", backbone.model, folder, train_backbone, stats, trained_now)  # in place (no EMA)
    unet = _trained("prior", _seeded(lambda: build_unet(pcfg), cfg.seed + 1).to(device), folder,
                    train_prior, stats, trained_now)
    prior, cond_prior = priors(unet, pcfg, cfg.name)
    world = World(name=cfg.name, backbone=backbone.eval().requires_grad_(False), prior=prior,
                  cond_prior=cond_prior, train=train, test=test, factor_names=FACTOR_NAMES,
                  num_classes=NUM_DIGITS)
    cache_hit = stored is not None and samples is not None and not trained_now
    if not cache_hit:
        metrics, samples = _measure_quality(cfg, world, train, test, device, progress)
        stats.update(metrics, config_hash=miniworld_hash(cfg))
        with atomic_path(folder / "samples.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in samples.items()}, str(tmp))
        atomic_write_text(folder / "quality.json", json.dumps(stats, indent=2) + "\n")
    world.quality = {**stats, "cache_hit": cache_hit, "trained_now": trained_now, **samples}
    return world
