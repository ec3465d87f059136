"""Profiles of notebook 04_energydps (Sec 2.3, 3.1-3.2, App J.2-J.4, L.2-L.5).

The transcoder is notebook 03's (same world, same recipe, so it loads from the cache).
``paper`` holds the authors' settings: 100 random features, EnergyDPS in
``GuidanceConfig.paper()`` (1000 DDPM steps through the denoiser, scale 1, cap 15),
MACO 1000 steps (the reference's default), DiffExplainer 50 DDIM steps, Table 10's 1k
samples per strength. ``smoke`` and ``default`` run the fast configuration for the sweeps
and ``GuidanceConfig.paper()`` on a few samples for the cost comparison (Table 11).
:func:`samples_stores` names the stores a profile's run writes, so notebook 05 reads
exactly notebook 04's samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from klsc_lib.diffusion.guidance import GuidanceConfig
from klsc_lib.explain import MacoConfig, ProxyConfig, store_config
from klsc_lib.profiles.nb03_sae_training import PROFILES as NB03
from klsc_lib.runtime import world_key
from klsc_lib.sae.artifacts import TranscoderRecipe
from klsc_lib.samples_store import SamplesStore


@dataclass(frozen=True)
class EnergyDPSProfile:
    world: Any
    recipe: TranscoderRecipe  # notebook 03's main transcoder
    fast: GuidanceConfig
    maco: MacoConfig
    proxy: ProxyConfig
    n_features: int = 50  # random features of the Table 3 analogue
    n_per_unit: int = 4  # samples per feature and method (4 are shown to raters, App K)
    n_neurons: int = 100  # random neurons sampled for notebook 05 (Table 7)
    n_neuron_samples: int = 4
    top_k: int = 20  # real images per feature that fix its concept
    k_target: int = 4  # top-k images whose mean psi is the target t (Sec 3.2)
    batch_size: int = 64  # samples per batch, features mixed
    paper: GuidanceConfig = field(default_factory=GuidanceConfig.paper)
    n_paper_units: int = 2  # paper_config runs (cost comparison): units x n_per_unit samples
    matched_calib_iters: int = 6  # bisection halvings matching the fast configuration to paper_config's psi
    # x fast.strength, uncapped (Table 10): scale x steps 0, 100, 300 and 1000 (the paper's), weak to strong, as the
    # paper's three strengths span activations 6-16 around its cap 15
    strengths: tuple[float, ...] = (0.0, 0.2, 0.6, 2.0)
    n_strength_units: int = 32  # x n_per_unit samples per strength (KID on fewer cannot rank strengths)
    shift_levels: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)  # caps as multiples of t (App L.3)
    drift_weights: tuple[float, ...] = (0.0, 0.5, 2.0, 8.0)  # omega of the class-logit task term (App L.5)
    n_real_kid: int = 1000  # held-out real images for KID
    # against the exact answer (Table 3 with q*): a pool of fresh generator draws per feature set
    n_pool: int = 100_000  # ESS of q* on the default features: tens to hundreds (notebook 04 prints it)
    tilt: GuidanceConfig = field(default_factory=GuidanceConfig.tilt)  # the plug-in tilt, lambda from the pool
    smc_particles: int = 32  # twisted SMC particles per feature (n_per_unit of them kept)
    smc_population: int = 8  # independent twisted SMC: particles per kept sample (32 per feature at 4 samples)
    n_prior_draws: int = 2048  # unguided draws of the learned prior, reweighted to each feature's t (one set for all)
    n_dev_features: int = 8  # development features (disjoint from the reported ones) to choose among candidates
    n_dev_samples: int = 8
    # torch intra-op threads; None: torch's default (OMP_NUM_THREADS, else every core). ``default`` pins 2:
    # its committed figures were made with two, and another count rounds differently (notebook 03 trains
    # another transcoder in the last bits, notebook 04 then draws other random features), so 03-05 reproduce
    # bit for bit only at 2. On a busy machine 1 is faster (2 threads on a loaded 2-core box ran ~60x slower)
    # but gives other numbers.
    threads: int | None = None


PROFILES = {
    "smoke": EnergyDPSProfile(
        world=NB03["smoke"].world, recipe=NB03["smoke"].recipe, fast=GuidanceConfig.fast(20, strength=1.0),
        maco=MacoConfig(max_steps=16), proxy=ProxyConfig(max_steps=6, chain_steps=4),
        n_features=6, n_per_unit=2, n_neurons=4, n_neuron_samples=2, top_k=10, n_paper_units=1,
        n_strength_units=2, shift_levels=(0.5, 1.0, 2.0), drift_weights=(0.0, 4.0), n_real_kid=128,
        n_pool=4096, tilt=GuidanceConfig.tilt(20), smc_particles=4, smc_population=2, n_prior_draws=64, n_dev_features=2, n_dev_samples=2),
    "default": EnergyDPSProfile(
        world=NB03["default"].world, recipe=NB03["default"].recipe, fast=GuidanceConfig.fast(),
        maco=MacoConfig(max_steps=128), proxy=ProxyConfig(max_steps=20, chain_steps=8), threads=2),  # lr 1 and 40 steps: psi >= 0.9 t on 3 of 8 features (dev)
    "paper": EnergyDPSProfile(
        world=NB03["paper"].world, recipe=NB03["paper"].recipe, fast=GuidanceConfig.fast(250, strength=1.0),
        maco=MacoConfig(max_steps=1000, check_every=25), proxy=ProxyConfig(max_steps=100, chain_steps=50),
        n_features=100, n_per_unit=4, top_k=20, batch_size=8, n_paper_units=4, n_strength_units=100,
        n_real_kid=1000),
}


def samples_stores(profile: str, seed: int = 0, root: str | Path | None = None,
                   create: bool = True) -> dict[tuple[str, str], SamplesStore]:
    """The samples stores notebook 04 writes under ``profile`` and ``seed``, keyed by
    (method, unit kind): the four methods on features (Table 3) and EnergyDPS on neurons
    (Table 7). With ``create=False`` a missing or empty store raises one
    :class:`FileNotFoundError` that says which notebook run makes them."""
    p = PROFILES[profile]
    key = world_key(p.world)
    configs = {("TopK", "Feature"): store_config("TopK", None, p.k_target, seed, key),
               ("MACO", "Feature"): store_config("MACO", p.maco, p.n_per_unit, seed, key),
               ("DiffExplainer", "Feature"): store_config("DiffExplainer", p.proxy, p.n_per_unit, seed, key),
               ("EnergyDPS", "Feature"): store_config("EnergyDPS", p.fast, p.n_per_unit, seed, key),
               ("EnergyDPS", "Neuron"): store_config("EnergyDPS", replace(p.fast, cap_rule="target"),
                                                     p.n_neuron_samples, seed, key)}
    try:
        stores = {key: SamplesStore(*key, c, root=root, create=create) for key, c in configs.items()}
        if not create and (empty := [k for k, s in stores.items() if not s.units()]):
            raise FileNotFoundError(f"the {empty} samples stores are empty")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"notebook 04's samples for profile {profile!r} (seed {seed}) are missing ({err}); "
                                f"run notebook 04 with the same profile first: python -m klsc_lib.notebook_runner "
                                f"--profile {profile} --out figures 04_energydps") from None
    return stores
