"""Explanation runs (paper Sec 3.1-3.2, App J.2-J.4, L.4): explain a list of units
(transcoder features or backbone neurons) with every method of
:data:`klsc_lib.paper_values.METHODS` on one intrinsic score psi, each method's knob
calibrated per unit to the same target level t (the mean psi of the unit's top-k real
images, Sec 3.2), batched across units (one batch mixes units), and written to the
:class:`~klsc_lib.samples_store.SamplesStore` (units already stored are skipped).

- :func:`topk_targets`: dataset search on the same psi units; t_U and the top images.
- :func:`run_energy_dps`: EnergyDPS (Algorithm 1) as a
  :class:`~klsc_lib.diffusion.guidance.GuidanceConfig` says; with the cap rule
  "calibrated" the per-unit cap c_U is calibrated by the batched bisection of
  :func:`klsc_lib.constraints.calibration.bisect` (common random numbers: every
  evaluation redraws the same per-sample seeds), keeping per unit the sample set
  whose mean psi came closest to t.
- :func:`run_maco`, :func:`run_proxy`: MACO (App J.3.1) and DiffExplainer-style proxy
  guidance (App J.3.2) with the clip cap at t; their knob is the number of
  optimisation steps, chosen per unit in ONE run as the first step whose mean psi
  reaches t (a run of s steps is a prefix of a longer run with the same seeds, so
  this is exact, and cheaper than bisection).
- :func:`explain`: any of the above through the store, returning per-unit psi.

``GuidanceConfig.paper()`` is the authors' release; its cap acts on the BATCH MEAN of
psi (batch 1 per process), ours per sample, which is the same at batch 1 and keeps the
samples of a batch independent. ``GuidanceConfig.fast()`` is ours: respaced DDPM,
batches that mix units, the strength measured in notebook 04.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from klsc_lib.analysis.explanation_metrics import Concepts, PixelKNNReader, unit_concepts
from klsc_lib.analysis.monosemanticity import dataset_factors
from klsc_lib.baselines.dataset_search import DatasetSearchResult, dataset_search
from klsc_lib.baselines.maco import MacoPrior, crop_resize, maco
from klsc_lib.baselines.proxy_guidance import (DDIMChain, class_embedding_table, proxy_guidance,
                                               unet2d_eps_given_embedding)
from klsc_lib.constraints.calibration import bisect
from klsc_lib.diffusion.energy_dps import sample_energy_dps, sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds, unit_seeds
from klsc_lib.energies import Energy, feature_score, neuron_score
from klsc_lib.energies.features import feature_pre_activation
from klsc_lib.energies.reductions import reduce_map
from klsc_lib.interfaces import HookedBackbone, Prior, World
from klsc_lib.paper_values import ENERGYDPS, FEATURE_SCORE
from klsc_lib.sae.artifacts import TranscoderRecipe, load_or_fit_transcoder
from klsc_lib.samples_store import SamplesStore
from klsc_lib.sae.transcoder import Transcoder

UnitKind = Literal["Feature", "Neuron"]


# ---------------------------------------------------------------- units and their psi
@dataclass(frozen=True)
class Units:
    """What is explained: ``kind`` units of ``backbone`` (through ``transcoder`` for
    features), scored by the reduction of App J.2 (eq. 213)."""

    kind: UnitKind
    backbone: HookedBackbone
    transcoder: Transcoder | None = None
    reduction: str = FEATURE_SCORE["reduction"]
    center_frac: float = FEATURE_SCORE["center_frac"]
    alpha: float = FEATURE_SCORE["alpha"]
    image_size: int = 16  # of the world's images (to count the hooked block's channels)

    def __post_init__(self) -> None:
        if self.kind not in ("Feature", "Neuron"):
            raise ValueError(f"unit kind must be 'Feature' or 'Neuron', got {self.kind!r}")
        if self.kind == "Feature" and self.transcoder is None:
            raise ValueError("feature units need the transcoder")

    @property
    def device(self) -> torch.device:
        """Where the backbone (and so the samples) lives."""
        return next(self.backbone.parameters()).device

    @property
    def count(self) -> int:
        if self.kind == "Feature":
            return self.transcoder.cfg.d_sae
        with torch.no_grad():  # the hooked block's output channels
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=next(self.backbone.parameters()).device)
            return int(self.backbone.hook_io(probe)[1].shape[1])

    def check(self, units_U: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``units_U`` as a long tensor; unknown ids raise before anything is sampled."""
        units = torch.as_tensor(units_U)
        if units.ndim != 1 or units.dtype.is_floating_point or units.dtype == torch.bool:
            raise ValueError(f"units must be a 1-D sequence of integer ids, got {units_U!r}")
        n = self.count
        bad = sorted({int(u) for u in units if not 0 <= int(u) < n})
        if bad:
            raise ValueError(f"unknown {self.kind.lower()} ids {bad[:8]}: valid ids are in [0, {n})")
        if len(set(units.tolist())) != len(units):
            raise ValueError("unit ids must be distinct")
        return units.long()

    def energy(self, units_B: torch.Tensor) -> Energy:
        """psi of one unit per sample."""
        kw = dict(reduction=self.reduction, center_frac=self.center_frac, alpha=self.alpha)
        if self.kind == "Feature":
            return feature_score(self.backbone, self.transcoder, units_B, **kw)
        return neuron_score(self.backbone, units_B, **kw)

    def scores(self, units_U: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """x_BCHW -> psi_BU for all U units on every image (dataset search)."""
        def psi_BU(x_BCHW: torch.Tensor) -> torch.Tensor:
            block_in, block_out = self.backbone.hook_io(x_BCHW)
            maps = []
            for u in units_U.tolist():
                if self.kind == "Feature":
                    maps.append(feature_pre_activation(self.transcoder, block_in, torch.tensor(u)))
                else:
                    maps.append(block_out[:, u])
            b, (h, w) = len(x_BCHW), maps[0].shape[-2:]
            map_BUHW = torch.stack(maps, dim=1)
            return reduce_map(map_BUHW.reshape(-1, h, w), self.reduction, self.center_frac,
                              self.alpha).reshape(b, -1)
        return psi_BU


def feature_units(world: World, recipe: TranscoderRecipe, seed: int = 0, device: str | torch.device = "cpu") -> Units:
    """The features of ``recipe``'s transcoder on ``world`` (notebook 03's, loaded from the
    cache or trained now, keyed by ``world.key``), frozen with the backbone."""
    if not world.key:
        raise ValueError(f"world {world.name!r} has no key: set World.key = klsc_lib.runtime.world_key(its config)")
    tc = load_or_fit_transcoder(world, recipe, world_key=world.key, seed=seed, device=device).model
    world.backbone.requires_grad_(False)
    return Units("Feature", world.backbone, tc.requires_grad_(False), image_size=world.image_size)


def topk_targets(units: Units, units_U: torch.Tensor, images_NCHW: torch.Tensor, k: int = 20, k_target: int = 4,
                 batch_size: int = 256) -> tuple[DatasetSearchResult, torch.Tensor]:
    """Dataset search (Sec 3.1 (i)) on the same psi: the top-``k`` images per unit and
    the matched target t_U = mean psi of the top-``k_target`` (Sec 3.2)."""
    device = units.device
    batches = ((torch.arange(s, min(s + batch_size, len(images_NCHW))), images_NCHW[s:s + batch_size].to(device))
               for s in range(0, len(images_NCHW), batch_size))
    res = dataset_search(batches, units.scores(units_U), len(units_U), k=k, disable=True)
    return res, res.psi_UK[:, :k_target].mean(dim=1)


# ---------------------------------------------------------------- configurations
@dataclass(frozen=True)
class MacoConfig:
    """MACO (App J.3.1): at most ``max_steps`` NAdam steps; steps chosen per unit."""

    max_steps: int = 128
    lr: float = 1.0
    crops_per_step: int = 6
    check_every: int = 4


@dataclass(frozen=True)
class ProxyConfig:
    """DiffExplainer-style proxy guidance (App J.3.2): Adam on the prompt embedding
    through a ``chain_steps``-step DDIM chain; steps chosen per unit."""

    max_steps: int = 30
    lr: float = 0.05
    chain_steps: int = 10


# ---------------------------------------------------------------- results
@dataclass
class RunResult:
    """Samples of one method for U units, N per unit (sample b is unit b // N)."""

    method: str
    units_U: torch.Tensor
    images_UNCHW: torch.Tensor
    psi_UN: torch.Tensor
    knob_U: torch.Tensor  # the calibrated knob: cap (EnergyDPS) or optimisation steps
    target_U: torch.Tensor
    seconds: float
    peak_bytes: int

    @property
    def reached_U(self) -> torch.Tensor:
        """Mean psi within 5 % of t."""
        return (self.psi_UN.mean(dim=1) - self.target_U).abs() <= 0.05 * self.target_U.abs()

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds / self.psi_UN.numel()


class CostMeter:
    """Wall time and peak memory (CUDA peak allocation, else the growth of the peak RSS) of
    the work inside ``with CostMeter() as meter:`` (which must end synchronised, e.g. by
    returning CPU tensors): ``meter.seconds``, ``meter.peak_bytes``."""

    def __enter__(self) -> "CostMeter":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.rss0 = _peak_rss()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
        self.peak_bytes = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                           else max(0, _peak_rss() - self.rss0))


def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------- EnergyDPS
def run_energy_dps(prior: Prior, units: Units, units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor,
                   n_per_unit: int, cfg: GuidanceConfig, seed: int = 0, batch_size: int = 64,
                   disable: bool | None = None) -> RunResult:
    """EnergyDPS for every unit with the cap set by ``cfg.cap_rule``: "calibrated" bisects
    c_U so that the mean psi of each unit's samples reaches t_U (``cfg.calib_iters``
    halvings of [lo t, hi t]; targets outside the attainable range keep the closest end);
    "target" caps at t_U; "fixed" and "none" sample once as the rule says. The knob is
    the cap used (inf when uncapped)."""
    units_U = units.check(units_U)
    target_U = torch.as_tensor(target_U, dtype=torch.float32)
    u, n = len(units_U), n_per_unit
    units_B = units_U.repeat_interleave(n)
    seeds = unit_seeds(seed, units_U, n)
    best = {"gap": torch.full((u,), torch.inf), "x": None, "psi": torch.zeros(u, n), "knob": torch.zeros(u)}
    memo: dict[tuple | None, torch.Tensor] = {}
    calibrate = cfg.cap_rule == "calibrated"
    bar = tqdm(desc=f"EnergyDPS ({u} units x {n})", disable=disable, total=2 + cfg.calib_iters if calibrate else 1)

    def mean_psi(cap_U: torch.Tensor | None) -> torch.Tensor:
        """Mean psi per unit at caps ``cap_U`` (None: the cap the rule sets)."""
        key = None if cap_U is None else tuple(cap_U.tolist())
        if key not in memo:
            cap_B = None if cap_U is None else cap_U.float().repeat_interleave(n)
            x, psi = sample_units(prior, units.energy, units_B, cfg, seeds, cap_B, batch_size=batch_size,
                                  device=units.device)
            psi_UN = psi.reshape(u, n)
            gap = (psi_UN.mean(1) - target_U).abs()
            better = gap < best["gap"]
            knob_U = cap_U.float() if cap_U is not None else torch.full((u,), cfg.cap if cfg.cap is not None
                                                                         else torch.inf)
            best["x"] = x.reshape(u, n, *x.shape[1:]) if best["x"] is None else torch.where(
                better[:, None, None, None, None], x.reshape(u, n, *x.shape[1:]), best["x"])
            best["psi"] = torch.where(better[:, None], psi_UN, best["psi"])
            best["knob"] = torch.where(better, knob_U, best["knob"])
            best["gap"] = torch.minimum(gap, best["gap"])
            memo[key] = psi_UN.mean(1).double()
            bar.update()
        return memo[key]

    with CostMeter() as meter:
        if cfg.cap_rule == "target":
            mean_psi(target_U.double())
        elif not calibrate:  # "fixed" (paper) or "none"
            mean_psi(None)
        else:
            ends = (cfg.cap_bracket[0] * target_U).double(), (cfg.cap_bracket[1] * target_U).double()
            lo, hi = torch.minimum(*ends), torch.maximum(*ends)  # ordered for a negative t too
            f_lo, f_hi = mean_psi(lo), mean_psi(hi)
            reachable = torch.minimum(torch.maximum(target_U.double(), torch.minimum(f_lo, f_hi)),
                                      torch.maximum(f_lo, f_hi))
            flat = f_lo > f_hi  # psi fell as the cap rose (sampling noise): keep the better end, no bisection
            bisect(lambda cap_U: torch.where(flat, reachable, mean_psi(cap_U)), reachable, lo, hi, tol=0.0,
                   max_iter=cfg.calib_iters, what="EnergyDPS cap")
    bar.close()
    return RunResult("EnergyDPS", units_U, best["x"], best["psi"], best["knob"], target_U, meter.seconds,
                     meter.peak_bytes)


# ---------------------------------------------------------------- MACO and proxy guidance
class _FirstReach:
    """Per unit, the images of the first optimisation step whose mean psi over the
    unit's samples reaches t (else the step closest to t)."""

    def __init__(self, target_U: torch.Tensor, n: int):
        self.t, self.n = target_U, n
        u = len(target_U)
        self.done = torch.zeros(u, dtype=torch.bool)
        self.gap = torch.full((u,), torch.inf)
        self.step = torch.zeros(u)
        self.x = self.psi = None

    def offer(self, step: int, x_BCHW: torch.Tensor, psi_B: torch.Tensor) -> None:
        u = len(self.t)
        x, psi = x_BCHW.detach().cpu().reshape(u, self.n, *x_BCHW.shape[1:]), psi_B.detach().cpu().reshape(u, self.n)
        mean = psi.mean(1)
        take = ~self.done & (((mean - self.t).abs() < self.gap) | (mean >= self.t))
        if self.x is None:
            self.x, self.psi = x.clone(), psi.clone()
        self.x[take], self.psi[take], self.step[take] = x[take], psi[take], float(step)
        self.gap = torch.where(take, (mean - self.t).abs(), self.gap)
        self.done |= mean >= self.t


def _optimisation_setup(units: Units, units_U, target_U, n: int):
    """Checked units, targets, one unit per sample, their energy and the step picker."""
    units_U = units.check(units_U)
    target_U = torch.as_tensor(target_U, dtype=torch.float32)
    units_B = units_U.repeat_interleave(n)
    return units_U, target_U, units_B, units.energy(units_B), _FirstReach(target_U, n)


def run_maco(maco_prior: MacoPrior, units: Units, units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor,
             n_per_unit: int, image_size: int, cfg: MacoConfig = MacoConfig(), seed: int = 0,
             disable: bool | None = None) -> RunResult:
    """MACO with the clip cap at t_U; per unit, the first checked step whose mean psi
    (of the centre crop the method returns) reaches t_U."""
    units_U, target_U, units_B, energy, pick = _optimisation_setup(units, units_U, target_U, n_per_unit)
    n, device = n_per_unit, units.device
    maco_prior = MacoPrior(maco_prior.colour_CC.to(device), maco_prior.magnitude_CHF.to(device))

    def centre(image_BCHW: torch.Tensor) -> torch.Tensor:
        b = len(image_BCHW)
        return crop_resize(image_BCHW, torch.full((b, 1, 2), 0.5, device=device),
                           torch.full((b, 1), 0.25, device=device), image_size)[:, 0]

    def callback(info: dict) -> None:
        if info["i"] % cfg.check_every == 0:
            with torch.no_grad():
                x = centre(info["x_BCHW"])
                pick.offer(info["i"], x, energy(x))

    with CostMeter() as meter:
        res = maco(energy, maco_prior, len(units_B), image_size, cfg.max_steps, cap_B=target_U.repeat_interleave(n),
                   lr=cfg.lr, crops_per_step=cfg.crops_per_step, seeds=unit_seeds(seed, units_U, n), device=device,
                   callback=callback, disable=disable)
        pick.offer(cfg.max_steps, res.x_BCHW, res.psi_B)
    return RunResult("MACO", units_U, pick.x, pick.psi, pick.step, target_U, meter.seconds, meter.peak_bytes)


def world_reader(world: World, n_reference: int = 5000
                 ) -> tuple[Callable[[torch.Tensor], dict], Callable[[torch.Tensor], torch.Tensor], str]:
    """(factor reader, second feature space, its name) for concept accuracy and KID,
    independent of the explained backbone: the world's all-factor classifier (its
    heads, its penultimate layer) when it has one, else nearest real images in pixel
    space and pixels."""
    clf = getattr(world, "factor_classifier", None)
    if clf is None:
        n = min(len(world.train), n_reference)
        ref = torch.stack([world.train[i][0] for i in range(n)])
        return PixelKNNReader(ref, dataset_factors(world.train, world.factor_names, n=n)), lambda x: x.flatten(1), \
            "pixels"
    from klsc_lib.worlds.miniworld.factor_classifier import read_factors

    device = next(clf.parameters()).device
    clf.eval().requires_grad_(False)
    return (lambda x: read_factors(clf, x)), (lambda x: clf.features(x.to(device)).cpu()), "factor classifier"


def _concepts_of(search: DatasetSearchResult, world: World, half: int) -> Concepts:
    """Concepts of the searched units, over the first ``half`` of ``world.test``."""
    sizes = {n: int(v.max()) + 1 for n, v in dataset_factors(world.train, world.factor_names).items()}
    return unit_concepts(search.ids_UK.numpy(), dataset_factors(world.test, world.factor_names, n=half), sizes)


def true_concepts(units: Units, units_U: Sequence[int] | torch.Tensor, world: World, k: int = 20) -> Concepts:
    """Each unit's true concept as notebook 04 fixes it (Sec 3.2-3.3): the best factor by
    chance-corrected purity over the unit's top-``k`` images in the first half of
    ``world.test`` (:func:`~klsc_lib.analysis.explanation_metrics.unit_concepts`)."""
    half = len(world.test) // 2
    search, _ = topk_targets(units, units.check(units_U), torch.stack([world.test[i][0] for i in range(half)]), k=k)
    return _concepts_of(search, world, half)


@dataclass
class UnitDraw:
    """Notebook 04's units (:func:`draw_units`): ids, targets t_U, their top-k real
    images (:class:`DatasetSearchResult`) and ground-truth concepts."""

    units_U: torch.Tensor
    target_U: torch.Tensor
    search: DatasetSearchResult
    concepts: Concepts
    drawn: int
    eligible: int


def draw_units(units: Units, world: World, n_units: int, generator: torch.Generator, k: int = 20,
               k_target: int = 4) -> UnitDraw:
    """``n_units`` random units that fire on all of their top-``k`` images in the first
    half of ``world.test`` (drawn from ``4 n_units`` random ids, kept in draw order):
    dataset search on the same psi, the matched target t_U = mean psi of the top
    ``k_target`` (Sec 3.2) and each unit's concept (as :func:`true_concepts`)."""
    half = len(world.test) // 2
    pool = torch.randperm(units.count, generator=generator)[:4 * n_units]
    search, t_pool = topk_targets(units, pool, torch.stack([world.test[i][0] for i in range(half)]), k=k,
                                  k_target=k_target)
    eligible = (search.psi_UK[:, -1] > 0).nonzero().flatten()
    keep = eligible[:n_units]
    kept = DatasetSearchResult(search.psi_UK[keep], search.ids_UK[keep], search.images_UKCHW[keep])
    return UnitDraw(pool[keep], t_pool[keep], kept, _concepts_of(kept, world, half), len(pool), len(eligible))


def world_proxy(world: World) -> tuple[Callable, Callable[[int], torch.Tensor]]:
    """(eps_given_embedding, initial embedding of a batch) of the world's conditional
    prior: a factor-conditional prior's embedding (all factors "not given") when the
    world has one, else the class-conditional UNet's class embedding (mean over classes)."""
    factor_prior = getattr(world, "factor_prior", None)
    if factor_prior is not None:
        return factor_prior.eps, lambda b: factor_prior.embed({}, b)
    if world.cond_prior is None:
        raise ValueError(f"world {world.name!r} has no conditional prior for the proxy baseline")
    unet = inspect.getclosurevars(world.cond_prior.eps).nonlocals.get("unet")
    if unet is None:
        raise ValueError("the world's conditional prior does not expose its UNet; give eps_given_embedding directly")
    table = class_embedding_table(unet)
    return unet2d_eps_given_embedding(unet), lambda b: table[:-1].mean(0).expand(b, -1).clone()


def run_proxy(eps_given_embedding: Callable, emb_init: Callable[[int], torch.Tensor], prior: Prior, units: Units,
              units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor, n_per_unit: int,
              cfg: ProxyConfig = ProxyConfig(), seed: int = 0, disable: bool | None = None) -> RunResult:
    """DiffExplainer-style proxy guidance with the clip cap at t_U (one prompt
    embedding per sample); per unit, the first step whose mean psi reaches t_U."""
    units_U, target_U, units_B, energy, pick = _optimisation_setup(units, units_U, target_U, n_per_unit)
    n, device = n_per_unit, units.device
    with CostMeter() as meter:
        res = proxy_guidance(energy, eps_given_embedding, emb_init(len(units_B)).to(device), prior.sample_shape,
                             DDIMChain.from_schedule(prior.schedule, cfg.chain_steps), cfg.max_steps, lr=cfg.lr,
                             cap_B=target_U.repeat_interleave(n), clip_x0=prior.clip_x0,
                             seeds=unit_seeds(seed, units_U, n),
                             callback=lambda info: pick.offer(info["i"], info["x_BCHW"], info["psi_B"]),
                             disable=disable)
        pick.offer(cfg.max_steps, res.x_BCHW, res.psi_B)
    return RunResult("DiffExplainer", units_U, pick.x, pick.psi, pick.step, target_U, meter.seconds,
                     meter.peak_bytes)


# ---------------------------------------------------------------- through the store
def store_config(method: str, cfg, n_per_unit: int, seed: int, world_key: dict) -> dict:
    """The store key of a run: the method's settings, sample count, seed and world."""
    settings = asdict(cfg) if cfg is not None else {}
    return {"method": method, "settings": settings, "n_per_unit": n_per_unit, "seed": seed, **world_key}


def explain(store: SamplesStore, run: Callable[[torch.Tensor, torch.Tensor], RunResult],
            units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor) -> dict[int, torch.Tensor]:
    """psi of every unit's samples: from ``store`` where present, else from
    ``run(missing_units, their_targets)`` (one batched call), written to the store
    with the knob, the target and the cost per sample."""
    units_U = torch.as_tensor(units_U).long()
    target_U = torch.as_tensor(target_U, dtype=torch.float32)
    missing = [i for i, unit in enumerate(units_U.tolist()) if not store.has(unit)]
    if missing:
        res = run(units_U[missing], target_U[missing])
        per = res.seconds_per_sample
        for j, unit in enumerate(res.units_U.tolist()):
            store.put(unit, res.images_UNCHW[j], res.psi_UN[j],
                      extras={"knob": res.knob_U[j:j + 1], "target": res.target_U[j:j + 1]},
                      meta={"seconds_per_sample": per, "peak_bytes_per_sample": res.peak_bytes / res.psi_UN.numel(),
                            "batched_units": len(missing)})
    return {unit: store.get(unit).psi_B for unit in units_U.tolist()}


def explain_neurons(store: SamplesStore, world: World, n_units: int, generator: torch.Generator,
                    images_NCHW: torch.Tensor, n_per_unit: int, cfg: GuidanceConfig, seed: int = 0,
                    batch_size: int = 64, k_target: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """EnergyDPS on ``n_units`` random backbone neurons (the hooked block's output
    channels; paper Table 7), each with the cap at its own t_U (mean psi of its
    top-``k_target`` images among ``images_NCHW``), through ``store``; returns
    (neuron ids, t_U, psi per neuron)."""
    neurons = Units("Neuron", world.backbone, image_size=world.image_size)
    units_U = torch.randperm(neurons.count, generator=generator)[:n_units]
    _, target_U = topk_targets(neurons, units_U, images_NCHW, k=k_target, k_target=k_target)
    run = lambda u, t: run_energy_dps(world.prior, neurons, u, t, n_per_unit, cfg, seed, batch_size)  # noqa: E731
    return units_U, target_U, explain(store, run, units_U, target_U)


def stored_samples(store: SamplesStore, units_U: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images_UNCHW as float32, psi_UN) of ``units_U`` from ``store``, in that order."""
    got = [store.get(int(u)) for u in units_U]
    return torch.stack([s.images_BCHW.float() for s in got]), torch.stack([s.psi_B for s in got])


# ---------------------------------------------------------------- notebook 04's studies
def strength_ablation(prior: Prior, units: Units, units_B: torch.Tensor, cfg: GuidanceConfig,
                      multiples: Sequence[float], seeds: Sequence[int], kid_of: Callable[[torch.Tensor], float],
                      batch_size: int = 64) -> list[tuple[float, float, float]]:
    """Strength ablation (App L.2.3, Table 10): uncapped EnergyDPS at each multiple of
    ``cfg.strength`` (0 = the unguided prior), from the same seeds; rows
    ``(multiple, mean psi, kid_of(samples))``."""
    rows = []
    for m in tqdm(multiples, desc="strength ablation", disable=None):
        uncapped = replace(cfg, strength=m * cfg.strength, cap_rule="none", cap=None)
        x, psi = sample_units(prior, units.energy, units_B, uncapped, seeds, batch_size=batch_size, device=units.device)
        rows.append((float(m), float(psi.mean()), float(kid_of(x))))
    return rows


@dataclass
class DriftRow:
    """One task weight of the object-drift study (App L.5)."""

    omega: float
    images_BCHW: torch.Tensor
    mean_psi: float
    p_task: float


def object_drift(prior: Prior, units: Units, unit: int, cap: float, task: Energy,
                 p_task: Callable[[torch.Tensor], torch.Tensor], omegas: Sequence[float], cfg: GuidanceConfig,
                 seed: int = 0, n_samples: int = 4) -> list[DriftRow]:
    """Object drift (Sec 2.2.3, App L.5): EnergyDPS on psi + omega g (g a task term,
    e.g. a class logit), one row per omega from the same ``n_samples`` seeds of ``unit``. The combined score's
    cap grows with it (c (1 + omega)) and the strength shrinks (scale / (1 + omega)), so
    omega moves the balance, not the overall pull; each row reports psi alone and
    ``p_task`` (e.g. the probability of the task class)."""
    psi, seeds = units.energy(units.check([unit]).expand(n_samples)), sample_seeds(seed, unit, n_samples)
    rows = []
    for w in omegas:
        x = sample_energy_dps(prior, psi + w * task, replace(cfg, cap_rule="fixed", cap=cap * (1 + w)),
                              lam_B=cfg.step_scale(prior.schedule) / (1 + w), generators=list(seeds),
                              device=units.device, disable=True)
        with torch.no_grad():
            rows.append(DriftRow(float(w), x.cpu(), float(psi(x).mean()), float(p_task(x).mean())))
    return rows


def matched_cost(prior: Prior, units: Units, units_U: torch.Tensor, target_U: torch.Tensor, n_per_unit: int,
                 fast: GuidanceConfig, paper: GuidanceConfig, seed: int = 0, batch_size: int = 64
                 ) -> dict[str, RunResult]:
    """Cost of the fast configuration against ``paper`` at matched activation (App L.4):
    ``paper`` runs once with the cap at t_U; the fast configuration is calibrated
    (:func:`run_energy_dps`, ``"fast_calibration"``: every pass timed) to the mean psi
    the paper configuration reached per unit, then run once more at the calibrated caps
    (``"fast"``: the cost of one sample once a unit's cap is known). Same seeds
    throughout; every result's ``target_U`` is t_U."""
    ref = run_energy_dps(prior, units, units_U, target_U, n_per_unit, replace(paper, cap_rule="target", cap=None),
                         seed, batch_size)
    calib = run_energy_dps(prior, units, units_U, ref.psi_UN.mean(dim=1), n_per_unit,
                           replace(fast, cap_rule="calibrated", cap=None), seed, batch_size)
    units_B, cap_B = units.check(units_U).repeat_interleave(n_per_unit), calib.knob_U.repeat_interleave(n_per_unit)
    with CostMeter() as meter:
        x, psi = sample_units(prior, units.energy, units_B, replace(fast, cap_rule="calibrated", cap=None),
                              unit_seeds(seed, units_U, n_per_unit), cap_B, batch_size=batch_size, device=units.device)
    one = RunResult("EnergyDPS", calib.units_U, x.reshape(calib.images_UNCHW.shape), psi.reshape(calib.psi_UN.shape),
                    calib.knob_U, target_U.float(), meter.seconds, meter.peak_bytes)
    ref.target_U = calib.target_U = target_U.float()
    return {"paper_config": ref, "fast": one, "fast_calibration": calib}
