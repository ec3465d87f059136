"""Build or load a mini-world: data, trained backbone, prior and factor classifier, quality.

The default world's weights ship with the package (:mod:`.shipped`); they are used
whenever they exist for the config's hash, so ``make figures`` never trains it.

Cache layout, ``cache_dir()/miniworld/<miniworld_hash(cfg)>/``:

- ``config.json``                          the config and its hash;
- ``backbone.safetensors``, ``prior.safetensors``, ``factor_classifier.safetensors``: final
  weights (the prior's are its EMA);
- ``ckpt_<kind>*``                         what an unfinished run keeps to resume (removed once ``kind``'s
  final weights are saved): ``ckpt_<kind>.pt``; for a prior with refine stages
  (``PriorConfig.refine``) also ``ckpt_prior_refine<k>.pt`` of the running stage k and the
  EMA weights ``ckpt_prior_stage<k>.safetensors`` that it started from;
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
from klsc_lib.analysis.image_metrics import kid, total_variation
from klsc_lib.worlds.miniworld.config import FORMAT_VERSION, MiniWorldConfig, miniworld_hash
from klsc_lib.worlds.miniworld.data import FACTOR_NAMES, FACTOR_SIZES, IMAGE_SIZE, VALUE_NAMES, MiniWorldDataset
from klsc_lib.worlds.miniworld.models import (NUM_DIGITS, build_convnext, build_unet, hooked_backbone, priors,
                                       schedule_of)
from klsc_lib.worlds.miniworld.training import train_resumable
from klsc_lib.worlds.miniworld.factor_classifier import FactorClassifier, factor_accuracy, factor_loss, read_factors
from klsc_lib.runtime import atomic_path, atomic_write_text, cache_dir, resolve_device, world_key
from klsc_lib.interfaces import FactorReader, HookedBackbone, PromptProxy, World
from klsc_lib.worlds.miniworld import shipped


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
    """Eps-prediction loss (Ho et al. 2020) with factor dropout (see PriorConfig)."""
    schedule = schedule_of(cfg.prior)
    pcfg = cfg.prior

    def loss(unet: nn.Module, gen: torch.Generator) -> torch.Tensor:
        b = pcfg.batch_size
        idx = torch.randint(len(train), (b,), generator=gen)
        t_B = torch.randint(schedule.num_train_timesteps, (b,), generator=gen)
        eps = torch.randn(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        drop_all_B = torch.rand(b, generator=gen) < pcfg.p_uncond
        factors = {}
        for name, k in FACTOR_SIZES.items():
            drop_B = drop_all_B | (torch.rand(b, generator=gen) < pcfg.p_drop_factor)
            factors[name] = torch.where(drop_B, k, train.factors[name][idx]).to(device)
        x_t = schedule.add_noise(train.images_NCHW[idx], eps, t_B)
        pred = unet(x_t.to(device), t_B.to(device), unet.embed(factors, b))
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
    for checkpoint in folder.glob(f"ckpt_{kind}*"):
        checkpoint.unlink()
    # the same state as a cache hit: eval mode, frozen (a freshly built world must compute
    # exactly what a loaded one computes)
    return final.eval().requires_grad_(False)


def _read_marginals(read: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.bincount(read[name], minlength=k).double() for name, k in FACTOR_SIZES.items()}


def _measure_quality(cfg: MiniWorldConfig, world: World, train: MiniWorldDataset, test: MiniWorldDataset,
                     device: torch.device, progress: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """Quality metrics (module :mod:`.quality`) and the prior samples they were measured on:
    ``num_quality_samples`` unconditional samples, ``num_cond_quality_samples`` digit-conditional
    ones (digits cycling) and as many all-factor-conditional ones (factors of test images),
    drawn in one batch by respaced DDPM ancestral sampling (the conditional ones with
    classifier-free guidance at ``cfg.prior.cond_guidance_scale``)."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed + 12345)
    n_u, n_c = cfg.num_quality_samples, cfg.num_cond_quality_samples
    labels_B = torch.arange(n_c) % NUM_DIGITS
    asked = {name: test.factors[name][torch.arange(n_c) % len(test)] for name in FACTOR_NAMES}
    fp = world.factor_prior
    with torch.no_grad():
        emb_BD = torch.cat([fp.embed({}, n_u), fp.embed({"digit": labels_B}, n_c), fp.embed(asked, n_c)])
    x_T = torch.randn(n_u + 2 * n_c, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    schedule = world.prior.schedule

    def model(x: torch.Tensor, t_B: torch.Tensor) -> torch.Tensor:  # conditional rows with guidance
        t_B = t_B.reshape(-1).expand(x.shape[0])
        return torch.cat([fp.eps(x[:n_u], t_B[:n_u], emb_BD[:n_u]),
                          fp.guided_eps(x[n_u:], t_B[n_u:], emb_BD[n_u:])])

    x0 = sample_ddpm(model, x_T, schedule,
                     generator=gen, timesteps=spaced_timesteps(schedule, cfg.quality_sampling_steps),
                     clip_x0=world.prior.clip_x0, disable=not progress).clamp(-1, 1).cpu()
    samples, cond_samples, factor_samples = x0[:n_u], x0[n_u:n_u + n_c], x0[n_u + n_c:]
    bb = world.backbone.cpu()
    p_test, f_test = q.classify(bb, test.images_NCHW)
    p_train, f_train = q.classify(bb, train.images_NCHW[:len(test)])
    p_s, f_s = q.classify(bb, samples)
    p_c, f_c = q.classify(bb, cond_samples)
    world.backbone.to(device)
    reader = world.factor_classifier
    read_test, read_s = read_factors(reader, test.images_NCHW), read_factors(reader, samples)
    read_c, read_f = read_factors(reader, cond_samples), read_factors(reader, factor_samples)
    m_test, m_s = _read_marginals(read_test), _read_marginals(read_s)
    rec = q.recognition(p_s)
    kid_size = max(2, n_u // 2)  # half-size subsets: the std is an error bar of a KID from n_u / 2 samples
    kid_s, kid_s_std = kid(f_s, f_test, subset_size=kid_size)
    kid_c, kid_c_std = kid(f_c, f_test)
    kid_ref, kid_ref_std = kid(f_train[:n_u], f_test, subset_size=kid_size)
    metrics = {
        "backbone_test_accuracy": (p_test.argmax(-1) == test.labels_N).float().mean().item(),
        "backbone_train_accuracy": (p_train.argmax(-1) == train.labels_N[:len(test)]).float().mean().item(),
        "factor_classifier_test_accuracy": factor_accuracy(read_test, test.factors),
        "prior_mean_max_prob": rec["mean_max_prob"], "prior_mean_max_prob_se": rec["mean_max_prob_se"],
        "prior_class_histogram": rec["histogram"],
        "prior_class_tv_to_uniform": rec["tv_to_uniform"],
        "prior_class_normalised_entropy": rec["normalised_entropy"],
        "prior_factor_histograms": {name: m_s[name].long().tolist() for name in FACTOR_NAMES},
        "prior_factor_tv_to_test": {name: total_variation(m_s[name], m_test[name]) for name in FACTOR_NAMES},
        "prior_factor_tv_to_test_sd": {name: q.marginal_tv_sd(read_s[name], read_test[name], FACTOR_SIZES[name],
                                                              seed=cfg.seed) for name in FACTOR_NAMES},
        "test_mean_max_prob": p_test.max(-1).values.mean().item(),
        "kid_prior_vs_test": kid_s, "kid_prior_vs_test_std": kid_s_std,
        "kid_cond_prior_vs_test": kid_c, "kid_cond_prior_vs_test_std": kid_c_std,
        "kid_train_vs_test_reference": kid_ref, "kid_train_vs_test_reference_std": kid_ref_std,
        "kid_subset_size": kid_size,
        "cond_prior_label_agreement": (p_c.argmax(-1) == labels_B).float().mean().item(),
        "cond_prior_digit_accuracy": factor_accuracy(read_c, {"digit": labels_B})["digit"],
        "factor_prior_accuracy": factor_accuracy(read_f, asked),
        "num_quality_samples": n_u, "num_cond_quality_samples": n_c,
        "quality_sampler": f"DDPM ancestral, {cfg.quality_sampling_steps} of "
                           f"{schedule.num_train_timesteps} steps (respaced)",
        "quality_sampling_steps": cfg.quality_sampling_steps,
        "cond_guidance_scale": cfg.prior.cond_guidance_scale,
        "quality_seconds": round(time.perf_counter() - t0, 1),
    }
    metrics["quality_targets"] = q.QUALITY_TARGETS
    metrics["quality_targets_met"] = q.targets_met(metrics)
    return metrics, {"samples_BCHW": samples, "cond_samples_BCHW": cond_samples, "cond_labels_B": labels_B,
                     "factor_samples_BCHW": factor_samples}


def _assemble(cfg: MiniWorldConfig, backbone: HookedBackbone, unet: nn.Module, classifier: FactorClassifier,
              train: MiniWorldDataset, test: MiniWorldDataset) -> World:
    prior, cond_prior, factor_prior = priors(unet, cfg.prior, cfg.name)
    classifier = classifier.eval().requires_grad_(False)
    reader = FactorReader(lambda x: read_factors(classifier, x),
                          lambda x: classifier.features(x.to(next(classifier.parameters()).device)).cpu(),
                          "factor classifier")
    proxy = PromptProxy(factor_prior.eps, lambda b: factor_prior.embed({}, b))  # all factors "not given"
    return World(name=cfg.name, backbone=backbone.eval().requires_grad_(False), prior=prior,
                 cond_prior=cond_prior, train=train, test=test, factor_names=FACTOR_NAMES,
                 num_classes=NUM_DIGITS, factor_prior=factor_prior,
                 factor_classifier=classifier, key=world_key(cfg), factor_reader=reader, prompt_proxy=proxy,
                 value_names=VALUE_NAMES)


def _networks(cfg: MiniWorldConfig, device: torch.device) -> tuple[HookedBackbone, nn.Module, FactorClassifier]:
    """The three networks of ``cfg``, randomly initialised (deterministically in the seed)."""
    backbone = hooked_backbone(_seeded(lambda: build_convnext(cfg.backbone), cfg.seed), cfg.backbone, cfg.name)
    unet = _seeded(lambda: build_unet(cfg.prior), cfg.seed + 1)
    classifier = _seeded(lambda: FactorClassifier(cfg.factor_classifier), cfg.seed + 2)
    return backbone.to(device), unet.to(device), classifier.to(device)


def load_miniworld(cfg: MiniWorldConfig, device: str | torch.device = "auto", progress: bool = True,
                   on_step: Callable[[str, int], None] | None = None, use_shipped: bool = True) -> World:
    """The mini-world of ``cfg``: the weights shipped with the package if there are
    some for its hash (checksums verified, :mod:`.shipped`), else a cache hit if it was
    built before, else built now (training resumes from checkpoints of an interrupted
    run). ``use_shipped=False`` skips the shipped weights (``make miniworld REBUILD=1``).
    ``on_step(kind, step)`` is called after every training step (tests use it to
    simulate a crash)."""
    if not isinstance(cfg, MiniWorldConfig):
        raise TypeError(f"expected a MiniWorldConfig, got {type(cfg).__name__}")
    device = resolve_device(device)
    train = MiniWorldDataset(cfg.n_train, "train", cfg.seed)
    test = MiniWorldDataset(cfg.n_test, "test", cfg.seed)
    backbone, unet, classifier = _networks(cfg, device)
    if use_shipped and shipped.has_shipped(cfg):
        quality, samples = shipped.load_shipped(cfg, {"backbone": backbone.model, "prior": unet,
                                                      "factor_classifier": classifier})
        world = _assemble(cfg, backbone, unet, classifier, train, test)
        world.quality = {**quality, "cache_hit": True, "shipped": True, "trained_now": [], **samples}
        return world
    folder = world_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", json.dumps(
        {"format": FORMAT_VERSION, "hash": miniworld_hash(cfg), **asdict(cfg)}, indent=2) + "\n")
    stored = _read_or_discard(folder / "quality.json", lambda p: json.loads(p.read_text()))
    # cloned: safetensors may memory-map the file, which must not stay tied to the cache
    samples = _read_or_discard(folder / "samples.safetensors",
                               lambda p: {k: v.clone() for k, v in load_file(p).items()})
    stats: dict = {} if stored is None else dict(stored)
    trained_now: list[str] = []

    def hook(kind: str):
        return None if on_step is None else (lambda step: on_step(kind, step))

    bcfg, pcfg, ccfg = cfg.backbone, cfg.prior, cfg.factor_classifier

    def train_backbone(model: nn.Module) -> tuple[nn.Module, list[float]]:
        return train_resumable(
            model, _backbone_loss(train, bcfg.batch_size, backbone.preprocess, device), steps=bcfg.steps,
            lr=bcfg.lr, weight_decay=bcfg.weight_decay, seed=cfg.seed, checkpoint_path=folder / "ckpt_backbone.pt",
            checkpoint_every=cfg.checkpoint_every, desc=f"{cfg.name} backbone", progress=progress,
            on_step=hook("backbone"))

    def train_prior(model: nn.Module) -> tuple[nn.Module, list[float]]:
        loss = _prior_loss(train, cfg, device)
        # (steps, lr, EMA decay, seed) of stage 0 and of each refine stage k = 1, 2, ...
        stages = [(pcfg.steps, pcfg.lr, pcfg.ema_decay, cfg.seed + 1)] + [
            (s.steps, s.lr, s.ema_decay, cfg.seed + 2 + k) for k, s in enumerate(pcfg.refine, start=1)]

        def finished(k: int) -> Path:  # EMA weights after stages 0..k-1, kept until stage k finishes
            return folder / f"ckpt_prior_stage{k}.safetensors"

        start = next((k for k in range(len(stages) - 1, 0, -1)
                      if _read_or_discard(finished(k), lambda p: load_model(model, str(p))) is not None), 0)
        losses: list[float] = []  # of the stages trained in this run (earlier ones finished before)
        for k in range(start, len(stages)):
            steps, lr, ema_decay, seed = stages[k]
            kind = "prior" if k == 0 else f"prior_refine{k}"
            model, stage_losses = train_resumable(
                model.requires_grad_(True), loss, steps=steps, lr=lr, seed=seed,
                checkpoint_path=folder / f"ckpt_{kind}.pt", checkpoint_every=cfg.checkpoint_every,
                ema_decay=ema_decay, ema_power=pcfg.ema_power, desc=f"{cfg.name} {kind.replace('_', ' ')}",
                progress=progress, on_step=hook(kind))
            losses += stage_losses
            if k + 1 < len(stages):
                _save_model(model, finished(k + 1))
                finished(k).unlink(missing_ok=True)  # superseded by the finished stage
                (folder / f"ckpt_{kind}.pt").unlink(missing_ok=True)
        return model, losses

    def train_classifier(model: nn.Module) -> tuple[nn.Module, list[float]]:
        return train_resumable(
            model, factor_loss(train, ccfg.batch_size, device), steps=ccfg.steps, lr=ccfg.lr,
            weight_decay=ccfg.weight_decay, seed=cfg.seed + 2, checkpoint_path=folder / "ckpt_factor_classifier.pt",
            checkpoint_every=cfg.checkpoint_every, desc=f"{cfg.name} factor classifier", progress=progress,
            on_step=hook("factor_classifier"))

    _trained("backbone", backbone.model, folder, train_backbone, stats, trained_now)  # in place
    _trained("prior", unet, folder, train_prior, stats, trained_now)  # in place (EMA weights copied in)
    _trained("factor_classifier", classifier, folder, train_classifier, stats, trained_now)
    world = _assemble(cfg, backbone, unet, classifier, train, test)
    cache_hit = stored is not None and samples is not None and not trained_now
    if not cache_hit:
        metrics, samples = _measure_quality(cfg, world, train, test, device, progress)
        stats.update(metrics, config_hash=miniworld_hash(cfg))
        with atomic_path(folder / "samples.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in samples.items()}, str(tmp))
        atomic_write_text(folder / "quality.json", json.dumps(stats, indent=2) + "\n")
    world.quality = {**stats, "cache_hit": cache_hit, "shipped": False, "trained_now": trained_now, **samples}
    return world


def clear_built(cfg: MiniWorldConfig) -> None:
    """Delete the cached final weights, samples and quality of ``cfg`` (a rebuild
    trains again; checkpoints of an interrupted rebuild are kept and resumed, which
    computes exactly what a run from step 0 computes, :mod:`.training`)."""
    folder = world_folder(cfg)
    for name in [f"{kind}.safetensors" for kind in shipped.KINDS] + ["samples.safetensors", "quality.json"]:
        (folder / name).unlink(missing_ok=True)


@torch.no_grad()
def fp16_check(cfg: MiniWorldConfig, world: World, num_samples: int = 64) -> dict:
    """What rounding the weights to float16 changes: held-out accuracies of the backbone
    and factor classifier, and ``num_samples`` prior samples drawn from the same noise
    by the float32 and the rounded prior (max pixel difference, agreement of the factors
    the classifier reads on them)."""
    cpu = torch.device("cpu")
    backbone, unet, classifier = _networks(cfg, cpu)
    backbone.model.load_state_dict(shipped.fp16_round_trip(world.backbone.model))
    unet.load_state_dict(shipped.fp16_round_trip(world.factor_prior.eps))
    classifier.load_state_dict(shipped.fp16_round_trip(world.factor_classifier))
    rounded = _assemble(cfg, backbone, unet, classifier, world.train, world.test)
    test = world.test
    out = {}
    for name, w in (("float32", world), ("float16", rounded)):
        probs, _ = q.classify(w.backbone.cpu(), test.images_NCHW)
        out[f"backbone_test_accuracy_{name}"] = (probs.argmax(-1) == test.labels_N).float().mean().item()
        out[f"factor_classifier_test_accuracy_{name}"] = factor_accuracy(
            read_factors(w.factor_classifier.cpu(), test.images_NCHW), test.factors)
    draws = {}
    for name, w in (("float32", world), ("float16", rounded)):
        gen = torch.Generator().manual_seed(cfg.seed + 777)
        x_T = torch.randn(num_samples, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
        w.factor_prior.eps.cpu()
        draws[name] = sample_ddpm(w.prior.eps, x_T, w.prior.schedule, generator=gen,
                                  timesteps=spaced_timesteps(w.prior.schedule, cfg.quality_sampling_steps),
                                  clip_x0=w.prior.clip_x0, disable=True).clamp(-1, 1)
    read32, read16 = (read_factors(world.factor_classifier, draws[n]) for n in ("float32", "float16"))
    out["prior_samples_max_abs_pixel_difference"] = (draws["float32"] - draws["float16"]).abs().max().item()
    out["prior_samples_factor_agreement"] = factor_accuracy(read16, read32)
    return out


def ship_world(cfg: MiniWorldConfig, world: World) -> Path:
    """Ship ``world`` (built from ``cfg``) into the package (:func:`shipped.ship`),
    with :func:`fp16_check` added to its quality."""
    numbers = {k: v for k, v in world.quality.items()
               if not isinstance(v, torch.Tensor) and k not in ("cache_hit", "shipped", "trained_now")}
    samples = {k: v for k, v in world.quality.items() if isinstance(v, torch.Tensor)}
    numbers["fp16_check"] = fp16_check(cfg, world)
    models = {"backbone": world.backbone.model, "prior": world.factor_prior.eps,
              "factor_classifier": world.factor_classifier}
    return shipped.ship(cfg, models, numbers, samples)
