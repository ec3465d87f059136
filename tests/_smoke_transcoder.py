"""The smoke mini-world's transcoder and top-k index, obtained as notebook 03 obtains
them on its ``smoke`` profile (same recipe, world key and index size, so both share
the cache under ``$KLSC_CACHE``): trained and indexed on the first call, loaded after."""

from __future__ import annotations

from dataclasses import asdict

from klsc_lib.interfaces import World
from klsc_lib.profiles import get_profile
from klsc_lib.profiles.nb03_sae_training import SaeTrainingProfile
from klsc_lib.runtime import config_hash
from klsc_lib.sae.artifacts import FittedTranscoder, load_or_build_index, load_or_fit_transcoder
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.worlds import load_world


def smoke_transcoder(world: World | None = None) -> tuple[SaeTrainingProfile, World, FittedTranscoder, TopKIndex]:
    """Notebook 03's smoke profile, the smoke world (loaded unless given), its main
    transcoder (no AuxK, seed 0, CPU) and that transcoder's feature index."""
    cfg = get_profile("03_sae_training", "smoke")
    world = world if world is not None else load_world(cfg.world, "cpu", progress=False)
    fitted = load_or_fit_transcoder(world, cfg.recipe, world_key={"world_config": config_hash(asdict(cfg.world))},
                                    seed=0, device="cpu", progress=False)
    return cfg, world, fitted, load_or_build_index(fitted, "features", max(cfg.top_n, cfg.grid_k))
