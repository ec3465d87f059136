"""Notebook 03's transcoder and top-k index, obtained as notebook 03 obtains them (same
recipe, world key and index size, so both share the cache under ``$KLSC_CACHE``):
trained and indexed on the first call, loaded after. ``smoke_transcoder`` is the smoke
profile's (CI); ``profile_transcoder("default")`` the default world's, which notebook 03
leaves in the cache."""

from __future__ import annotations

from dataclasses import asdict

from klsc_lib.interfaces import World
from klsc_lib.profiles import get_profile
from klsc_lib.profiles.nb03_sae_training import SaeTrainingProfile
from klsc_lib.runtime import config_hash
from klsc_lib.sae.artifacts import FittedTranscoder, load_or_build_index, load_or_fit_transcoder
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.worlds import load_world


def profile_transcoder(profile: str, world: World | None = None
                       ) -> tuple[SaeTrainingProfile, World, FittedTranscoder, TopKIndex]:
    """Notebook 03's ``profile``, its world (loaded unless given), its main transcoder (no
    AuxK, seed 0, CPU) and that transcoder's feature index."""
    cfg = get_profile("03_sae_training", profile)
    world = world if world is not None else load_world(cfg.world, "cpu", progress=False)
    fitted = load_or_fit_transcoder(world, cfg.recipe, world_key={"world_config": config_hash(asdict(cfg.world))},
                                    seed=0, device="cpu", progress=False)
    return cfg, world, fitted, load_or_build_index(fitted, "features", max(cfg.top_n, cfg.grid_k))


def smoke_transcoder(world: World | None = None) -> tuple[SaeTrainingProfile, World, FittedTranscoder, TopKIndex]:
    """:func:`profile_transcoder` of the smoke profile."""
    return profile_transcoder("smoke", world)
