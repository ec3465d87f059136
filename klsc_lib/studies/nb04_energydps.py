"""Notebook 04's studies (paper Sec 3.1-3.3, App L.2-L.5, Table 7, 10, 11) on top of the
reusable explanation runs of :mod:`klsc_lib.explain`:

- :func:`draw_units`: the random features explained and each one's ground-truth
  concept (:func:`klsc_lib.explain.true_concepts`);
- :func:`world_reader`: the world's factor reader, else nearest real images in pixels;
- :func:`explain_neurons`: EnergyDPS on random backbone neurons (Table 7);
- :func:`strength_ablation` (Table 10), :func:`object_drift` (App L.5),
  :func:`matched_cost` (the fast configuration against the paper's, App L.4);
- :func:`sampler_candidates`: the EnergyDPS variants measured against the exact tilt on
  development features, each a run ``(units_U, target_U, lambda_U, n) -> RunResult``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from klsc_lib.analysis.explanation_metrics import Concepts, PixelKNNReader
from klsc_lib.analysis.monosemanticity import dataset_factors
from klsc_lib.baselines.dataset_search import DatasetSearchResult
from klsc_lib.diffusion.energy_dps import sample_energy_dps, sample_units
from klsc_lib.diffusion.guidance import GuidanceConfig, sample_seeds, unit_seeds
from klsc_lib.energies import Energy
from klsc_lib.energies.units import Units
from klsc_lib.explain import (RunResult, explain, run_energy_dps, run_tilt, run_twisted_smc, search_concepts,
                              topk_targets)
from klsc_lib.interfaces import FactorReader, Prior, World
from klsc_lib.runtime import CostMeter
from klsc_lib.samples_store import SamplesStore


def world_reader(world: World, n_reference: int = 5000) -> FactorReader:
    """The world's :attr:`~klsc_lib.interfaces.World.factor_reader` (the mini-world's
    all-factor classifier), else nearest real images in pixel space and pixels."""
    if world.factor_reader is not None:
        return world.factor_reader
    n = min(len(world.train), n_reference)
    ref = torch.stack([world.train[i][0] for i in range(n)])
    return FactorReader(PixelKNNReader(ref, dataset_factors(world.train, world.factor_names, n=n)),
                        lambda x: x.flatten(1), "pixels")


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
    ``k_target`` (Sec 3.2) and each unit's concept (as :func:`~klsc_lib.explain.true_concepts`)."""
    half = len(world.test) // 2
    pool = torch.randperm(units.count, generator=generator)[:4 * n_units]
    search, t_pool = topk_targets(units, pool, torch.stack([world.test[i][0] for i in range(half)]), k=k,
                                  k_target=k_target)
    eligible = (search.psi_UK[:, -1] > 0).nonzero().flatten()
    keep = eligible[:n_units]
    kept = DatasetSearchResult(search.psi_UK[keep], search.ids_UK[keep], search.images_UKCHW[keep])
    return UnitDraw(pool[keep], t_pool[keep], kept, search_concepts(kept, world), len(pool), len(eligible))


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


CandidateRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], RunResult]


def sampler_candidates(prior: Prior, units: Units, fast: GuidanceConfig, tilt: GuidanceConfig, smc_particles: int,
                       smc_population: int, seed: int = 0, batch_size: int = 64) -> dict[str, CandidateRun]:
    """EnergyDPS variants, each ``run(units_U, target_U, lambda_U, n)``: ``capped`` (``fast``,
    the cap calibrated to t), ``tilt`` (``tilt``: the tilt's own lambda, uncapped, no final
    shift), ``tilt+final shift`` (the release's shift after the last step), ``tilt 2 lambda``
    (lambda doubled: the plug-in's usual shortfall in psi made up), four corrections on top of
    it (``4 views``: psi averaged over 4 shifted copies of x0-hat; ``recurrence 3``: every
    step taken 3 times, re-noised in between; ``shift clipped``: each shift at most the
    step's noise norm; ``full map``: guided by psi read on the whole map instead of its
    centre, reported on psi itself) and ``twisted SMC``
    (``smc_particles`` per unit, annealed twist, :func:`~klsc_lib.explain.run_twisted_smc`) and
    ``twisted SMC, independent`` (a population of ``smc_population`` particles per kept sample)."""
    def tilt_at(multiple: float, cfg: GuidanceConfig = tilt, guide_units: Units | None = None) -> CandidateRun:
        return lambda u, t, lam, n: run_tilt(prior, units, u, t, multiple * lam, n, cfg, seed, batch_size,
                                             guide_units=guide_units)

    return {
        "capped": lambda u, t, lam, n: run_energy_dps(prior, units, u, t, n, fast, seed, batch_size, disable=True),
        "tilt": tilt_at(1),
        "tilt+final shift": tilt_at(1, replace(tilt, final_shift=True)),
        "tilt 2 lambda": tilt_at(2),
        "tilt 2 lambda, 4 views": tilt_at(2, replace(tilt, psi_views=4)),
        "tilt 2 lambda, recurrence 3": tilt_at(2, replace(tilt, recurrence=3)),
        "tilt 2 lambda, shift clipped": tilt_at(2, replace(tilt, shift_clip=1.0)),
        "tilt 2 lambda, full map": tilt_at(2, guide_units=replace(units, center_frac=1.0)),
        "twisted SMC": lambda u, t, lam, n: run_twisted_smc(prior, units, u, t, lam, n, smc_particles, tilt, seed),
        "twisted SMC, independent": lambda u, t, lam, n: run_twisted_smc(
            prior, units, u, t, lam, n, smc_population, tilt, seed, independent=True,
            populations_per_batch=max(1, 4 * smc_particles // smc_population)),
    }


def reach(store: SamplesStore, units_U: torch.Tensor, target_U: torch.Tensor, budget: int,
          level: float = 0.9) -> dict[str, float]:
    """How an optimisation baseline met its level within its fixed step budget (Sec 3.2;
    App J.3): the share of units whose mean psi reached ``level`` x t, the share that reached
    t, and the median step at which those reached it (the stored knob: the first checked
    step at t; for a unit that never did, the step closest to t, which is not counted)."""
    got = [store.get(int(u)) for u in units_U.tolist()]
    psi_U = torch.stack([s.psi_B.float().mean() for s in got])
    steps_U = torch.stack([s.extras["knob"].float().reshape(()) for s in got])
    at_t = psi_U >= target_U.float()
    return {f"share_at_{level:g}t": float((psi_U >= level * target_U.float()).float().mean()),
            "share_at_t": float(at_t.float().mean()),
            "steps_to_t_median": float(steps_U[at_t].median()) if at_t.any() else float("nan"), "budget": budget}
