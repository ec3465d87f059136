"""Explanation runs (paper Sec 3.1-3.2, App J.2-J.4, L.4): explain a list of units
(transcoder features or backbone neurons) with every method of
:data:`klsc_lib.paper_values.METHODS` on one intrinsic score psi, each method's knob
calibrated per unit to the same target level t (the mean psi of the unit's top-k real
images, Sec 3.2), batched across units (one batch mixes units), and written to the
:class:`~klsc_lib.samples_store.SamplesStore` (units already stored are skipped).

- :func:`topk_targets`: dataset search on the same psi units; t_U and the top images.
- :func:`true_concepts`: a unit's ground-truth concept on a world with known factors, the
  one definition notebooks 04-05 and the feature inspector share.
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

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from klsc_lib.analysis.explanation_metrics import Concepts, unit_concepts
from klsc_lib.analysis.monosemanticity import dataset_factors
from klsc_lib.baselines.dataset_search import DatasetSearchResult, dataset_search
from klsc_lib.baselines.maco import MacoPrior, crop_resize, maco
from klsc_lib.baselines.proxy_guidance import DDIMChain, classifier_free, proxy_guidance
from klsc_lib.constraints.calibration import bisect
from klsc_lib.diffusion.energy_dps import sample_units
from klsc_lib.diffusion.guidance import SEED_SCHEME, GuidanceConfig, sample_seeds, unit_seeds
from klsc_lib.diffusion.twisted_smc import sample_twisted_smc
from klsc_lib.energies.units import Units
from klsc_lib.interfaces import Prior, PromptProxy, World
from klsc_lib.runtime import CostMeter
from klsc_lib.sae.artifacts import TranscoderRecipe, load_or_fit_transcoder
from klsc_lib.samples_store import SamplesStore


# ---------------------------------------------------------------- units and their targets


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


def search_concepts(search: DatasetSearchResult, world: World) -> Concepts:
    """The concepts of searched units: among each unit's top images (ids into
    ``world.test``), the (factor, value) with the highest chance-corrected share
    (:func:`~klsc_lib.analysis.explanation_metrics.unit_concepts`; factor sizes from
    ``world.train``)."""
    sizes = {n: int(v.max()) + 1 for n, v in dataset_factors(world.train, world.factor_names).items()}
    n = int(search.ids_UK.max()) + 1
    return unit_concepts(search.ids_UK.numpy(), dataset_factors(world.test, world.factor_names, n=n), sizes)


def true_concepts(units: Units, units_U: Sequence[int] | torch.Tensor, world: World, k: int = 20) -> Concepts:
    """Each unit's true concept (Sec 3.2-3.3): :func:`search_concepts` of its top-``k``
    images by psi in the first half of ``world.test`` (the half notebook 04 searches)."""
    half = len(world.test) // 2
    images = torch.stack([world.test[i][0] for i in range(half)])
    return search_concepts(topk_targets(units, units.check(units_U), images, k=k)[0], world)


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
    through a ``chain_steps``-step DDIM chain; steps chosen per unit. ``per_unit``: one
    prompt per unit shared by its samples, fresh noise at every step (eq. 20), else one per
    sample from fixed noise; ``guidance_scale``: classifier-free guidance of the chain."""

    max_steps: int = 30
    lr: float = 0.05
    chain_steps: int = 10
    per_unit: bool = True
    guidance_scale: float = 4.0


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
    info: dict = field(default_factory=dict)  # method-specific diagnostics (e.g. SMC lineages)

    @property
    def reached_U(self) -> torch.Tensor:
        """Mean psi within 5 % of t."""
        return (self.psi_UN.mean(dim=1) - self.target_U).abs() <= 0.05 * self.target_U.abs()

    @property
    def seconds_per_sample(self) -> float:
        return self.seconds / self.psi_UN.numel()


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


def run_tilt(prior: Prior, units: Units, units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor,
             lam_U: torch.Tensor, n_per_unit: int, cfg: GuidanceConfig, seed: int = 0,
             batch_size: int = 64, guide_units: Units | None = None) -> RunResult:
    """The plug-in tilt (``GuidanceConfig.tilt()``): EnergyDPS with the tilt's own lambda_U per
    unit (e.g. :func:`klsc_lib.constraints.exact_reference.solve_tilt` on real images' psi at
    t_U), uncapped, one pass, no calibration; the knob is lambda_U. ``guide_units`` (the same
    units read another way, e.g. another ``center_frac``) steers the sampler instead of
    ``units``; the reported psi is always ``units``'."""
    if cfg.step_size != "tilted_score" or cfg.cap_rule != "none":
        raise ValueError("run_tilt samples p e^{lambda psi} with the tilt's lambda: use GuidanceConfig.tilt() "
                         f"(step_size='tilted_score', cap_rule='none'), got step_size={cfg.step_size!r}, "
                         f"cap_rule={cfg.cap_rule!r}")
    units_U = units.check(units_U)
    lam_U = torch.as_tensor(lam_U, dtype=torch.float32)
    if lam_U.shape != units_U.shape or not torch.isfinite(lam_U).all():
        raise ValueError(f"need one finite lambda per unit ({len(units_U)}), got {lam_U.tolist()}")
    n = n_per_unit
    with CostMeter() as meter:
        units_B = units_U.repeat_interleave(n)
        x, psi = sample_units(prior, (guide_units or units).energy, units_B, cfg, unit_seeds(seed, units_U, n),
                              lam_B=lam_U.repeat_interleave(n), batch_size=batch_size, device=units.device)
        if guide_units is not None:
            with torch.no_grad():
                psi = torch.cat([units.energy(units_B[s:s + batch_size])(x[s:s + batch_size].to(units.device)).cpu()
                                 for s in range(0, len(x), batch_size)])
    return RunResult("EnergyDPS", units_U, x.reshape(len(units_U), n, *x.shape[1:]), psi.reshape(len(units_U), n),
                     lam_U, torch.as_tensor(target_U, dtype=torch.float32), meter.seconds, meter.peak_bytes)


def run_twisted_smc(prior: Prior, units: Units, units_U: Sequence[int] | torch.Tensor, target_U: torch.Tensor,
                    lam_U: torch.Tensor, n_per_unit: int, n_particles: int, cfg: GuidanceConfig, seed: int = 0,
                    anneal: bool = True, populations_per_batch: int = 4, independent: bool = False) -> RunResult:
    """Twisted SMC (:func:`klsc_lib.diffusion.twisted_smc.sample_twisted_smc`) toward each unit's
    tilt at lambda_U. Shared (default): one population of ``n_particles`` per unit, of which
    ``n_per_unit`` random ones (after the final resampling) are kept, so kept samples may
    share a lineage. ``independent``: every kept sample has its own population of
    ``n_particles`` and is one random particle of it after the final resampling (a draw of
    that population's weighted law), so kept samples are independent. ``populations_per_batch``
    populations share a batch. The cost counts every particle (seconds per kept sample);
    ``info`` has per population the distinct lineages behind its particles and its
    resampling events."""
    units_U = units.check(units_U)
    lam_U = torch.as_tensor(lam_U, dtype=torch.float32)
    if not independent and n_per_unit > n_particles:
        raise ValueError(f"cannot keep {n_per_unit} of {n_particles} particles per unit")
    per_pop = 1 if independent else n_per_unit
    pops = [(u, j, float(lam)) for u, lam in zip(units_U.tolist(), lam_U.tolist())
            for j in range(n_per_unit if independent else 1)]  # (unit, population index, lambda)
    xs, psis, ancestors, resamples = [], [], [], []
    with CostMeter() as meter:
        for s in tqdm(range(0, len(pops), populations_per_batch), desc=f"twisted SMC ({len(pops)} populations x "
                      f"{n_particles} particles)", disable=None):
            batch = pops[s:s + populations_per_batch]
            # population j of unit u: particles j * P ... (j + 1) * P - 1 of the unit's seed stream
            res = sample_twisted_smc(
                prior, units.energy(torch.tensor([u for u, _, _ in batch]).repeat_interleave(n_particles)), cfg,
                torch.tensor([lam for _, _, lam in batch]), n_particles,
                generators=[g for u, j, _ in batch for g in sample_seeds(seed, u, n_particles, j * n_particles)],
                resample_generators=[torch.Generator().manual_seed(sample_seeds(seed + 1, u, 1, j)[0])
                                     for u, j, _ in batch],
                anneal=anneal, device=units.device, disable=True)
            for k, (u, j, _) in enumerate(batch):
                keep = torch.randperm(n_particles, generator=torch.Generator().manual_seed(
                    sample_seeds(seed + 2, u, 1, j)[0]))[:per_pop] + k * n_particles
                xs.append(res.x_B[keep])
                psis.append(res.psi_B[keep])
            ancestors.append(res.ancestors_U)
            resamples.append(res.resamples_U)
    shape = (len(units_U), n_per_unit)
    return RunResult("EnergyDPS", units_U, torch.cat(xs).reshape(*shape, *prior.sample_shape),
                     torch.cat(psis).reshape(shape), lam_U, torch.as_tensor(target_U, dtype=torch.float32),
                     meter.seconds, meter.peak_bytes, {"ancestors_U": torch.cat(ancestors),
                                                       "resamples_U": torch.cat(resamples),
                                                       "n_particles": n_particles, "independent": independent})


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


def run_proxy(proxy: PromptProxy, prior: Prior, units: Units, units_U: Sequence[int] | torch.Tensor,
              target_U: torch.Tensor, n_per_unit: int, cfg: ProxyConfig = ProxyConfig(), seed: int = 0,
              disable: bool | None = None) -> RunResult:
    """DiffExplainer-style proxy guidance through ``proxy`` (a world's
    :attr:`~klsc_lib.interfaces.World.prompt_proxy`) with the clip cap at t_U, one prompt
    per unit over fresh noise (or one per sample, ``cfg.per_unit=False``), classifier-free
    guidance ``cfg.guidance_scale``; per unit, the first step whose mean psi reaches t_U."""
    units_U, target_U, units_B, energy, pick = _optimisation_setup(units, units_U, target_U, n_per_unit)
    n, device = n_per_unit, units.device
    with CostMeter() as meter:
        res = proxy_guidance(energy, classifier_free(proxy.eps_given_embedding, proxy.initial, cfg.guidance_scale),
                             proxy.initial(len(units_U) if cfg.per_unit else len(units_B)).to(device),
                             prior.sample_shape,
                             DDIMChain.from_schedule(prior.schedule, cfg.chain_steps), cfg.max_steps, lr=cfg.lr,
                             cap_B=target_U.repeat_interleave(n), clip_x0=prior.clip_x0,
                             seeds=unit_seeds(seed, units_U, n), samples_per_embedding=n if cfg.per_unit else 1,
                             fresh_noise=cfg.per_unit,
                             callback=lambda info: pick.offer(info["i"], info["x_BCHW"], info["psi_B"]),
                             disable=disable)
        pick.offer(cfg.max_steps, res.x_BCHW, res.psi_B)
    return RunResult("DiffExplainer", units_U, pick.x, pick.psi, pick.step, target_U, meter.seconds,
                     meter.peak_bytes)


# ---------------------------------------------------------------- through the store
def store_config(method: str, cfg, n_per_unit: int, seed: int, world_key: dict) -> dict:
    """The store key of a run: the method's settings, sample count, seed, seed scheme and world."""
    settings = asdict(cfg) if cfg is not None else {}
    return {"method": method, "settings": settings, "n_per_unit": n_per_unit, "seed": seed,
            "seed_scheme": SEED_SCHEME, **world_key}


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


def stored_samples(store: SamplesStore, units_U: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images_UNCHW as float32, psi_UN) of ``units_U`` from ``store``, in that order."""
    got = [store.get(int(u)) for u in units_U]
    return torch.stack([s.images_BCHW.float() for s in got]), torch.stack([s.psi_B for s in got])
