"""Stage ``sample``: EnergyDPS images of many transcoder features, split over the ranks
(paper Sec 2.3 Algorithm 1, Sec 3.1-3.2, App J.2, J.4), written to the samples store.

The sampling is that of notebook 04 (:func:`klsc_lib.explain.run_energy_dps`) under one
:class:`~klsc_lib.diffusion.guidance.GuidanceConfig`: ``GuidanceConfig.fast()`` (default;
the cap calibrated per feature to t, the mean psi of its top-4 held-out images from the
index) or ``GuidanceConfig.paper()`` (App J.4: 1000 DDPM steps, the gradient through the
denoiser, scale 1.0, cap 15; seed 45). Every image has its own seed, a function of the
base seed, the feature and the image's number
(:func:`~klsc_lib.diffusion.guidance.sample_seeds`), and every batch holds the images of
one feature, so a feature's samples do not depend on the number of ranks or on which
rank drew it. Features already in the store are skipped on a rerun.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from klsc_lib.diffusion.guidance import SEED_SCHEME, GuidanceConfig
from klsc_lib.energies.units import Units
from klsc_lib.explain import RunResult, run_energy_dps
from klsc_lib.interfaces import Prior
from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.index import index_path
from klsc_lib.pipeline.train import RUN, transcoder_dir
from klsc_lib.pipeline.worlds import WorldSpec, images, prior, rank_backbone
from klsc_lib.runtime import config_hash
from klsc_lib.sae.artifacts import load_transcoder
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.samples_store import SamplesStore

CAP_TOP = 4  # the target t of a feature: mean psi of its top-4 held-out images (Sec 3.2)


def choose_features(index: TopKIndex, features: list[int] | None, random_n: int | None, seed: int) -> list[int]:
    """The explicit ``features`` (checked), or ``random_n`` features drawn with ``seed``
    among those that fire on some held-out image (ascending ids)."""
    if (features is None) == (random_n is None):
        raise ValueError("give either --features ID,ID,... or --random N")
    if features is not None:
        bad = [f for f in features if not 0 <= f < index.n_units]
        if bad:
            raise ValueError(f"unknown feature ids {bad[:8]}: the transcoder has features 0..{index.n_units - 1}")
        return sorted(set(features))
    alive = torch.nonzero(index.scores_UK[:, 0] > 0).flatten()
    if random_n > len(alive):
        raise ValueError(f"--random {random_n} but only {len(alive)} features fire on a held-out image")
    pick = torch.randperm(len(alive), generator=torch.Generator().manual_seed(seed))[:random_n]
    return sorted(alive[pick].tolist())


def feature_samples(prior: Prior, units: Units, feature: int, real_BCHW: torch.Tensor | None,
                    guidance: GuidanceConfig, seed: int, n: int) -> RunResult:
    """``n`` EnergyDPS samples of ``feature`` drawn as notebook 04 draws them
    (:func:`~klsc_lib.explain.run_energy_dps`), the target t the mean psi of ``real_BCHW``
    (the feature's top held-out images; None for the cap rules "fixed" and "none")."""
    target = torch.full((1,), torch.nan)
    if real_BCHW is not None:
        with torch.no_grad():
            target = units.energy(torch.full((len(real_BCHW),), feature))(real_BCHW).mean().reshape(1).cpu()
    return run_energy_dps(prior, units, [feature], target, n, guidance, seed, batch_size=n, disable=True)


def run_sample(spec: WorldSpec, out: str | Path, ranks: D.Ranks, guidance: GuidanceConfig, seed: int,
               n_per_feature: int, k: int, features: list[int] | None = None, random_n: int | None = None,
               progress: bool = True) -> dict:
    """Sample ``n_per_feature`` images for each chosen feature (skipping stored ones)."""
    if n_per_feature < 1:
        raise ValueError(f"--n-per-feature must be >= 1, got {n_per_feature}")
    index = TopKIndex.load(index_path(out, "features", k))
    chosen = choose_features(index, features, random_n, seed)
    transcoder, _ = load_transcoder(transcoder_dir(out))
    transcoder.to(ranks.device).requires_grad_(False)
    net = rank_backbone(spec, ranks)
    diffusion = prior(spec, ranks.device)
    units = Units("Feature", net, transcoder, image_size=diffusion.sample_shape[-1])
    needs_target = guidance.cap_rule in ("target", "calibrated")
    held_out = images(spec, "test") if needs_target else None  # real images set the target t
    config = {"world": spec.key(), "transcoder": config_hash(json.loads((transcoder_dir(out) / RUN).read_text())),
              "guidance": asdict(guidance), "seed": seed, "seed_scheme": SEED_SCHEME, "n_per_feature": n_per_feature,
              "target_from_top": CAP_TOP if needs_target else None, "index": f"features_top{k}"}
    store = D.primary_first(ranks, lambda: SamplesStore("EnergyDPS", "Feature", config, root=Path(out) / "samples"))
    todo = [f for f in chosen if not store.has(f)]
    D.barrier()  # every rank listed the same features before any is written
    mine = D.my_share(todo, ranks)
    bar = D.Progress(ranks, "sample", len(chosen), len(mine), lambda: sum(store.has(f) for f in chosen),
                     disable=not progress)
    for feature in mine:
        t0 = time.perf_counter()
        top_ids = index.top_ids(feature)[:CAP_TOP]
        real_BCHW = torch.stack([held_out[i][0] for i in top_ids]).to(ranks.device) if needs_target else None
        res = feature_samples(diffusion, units, feature, real_BCHW, guidance, seed, n_per_feature)
        store.put(feature, res.images_UNCHW[0].clamp(-1, 1), res.psi_UN[0],
                  extras={"knob": res.knob_U, "target": res.target_U},
                  meta={"cap": float(res.knob_U[0]), "cap_top_ids": top_ids, "seconds": time.perf_counter() - t0,
                        "device": str(ranks.device)})
        bar.step()
    bar.close()
    D.barrier()
    return {"features": len(chosen), "sampled_here": len(mine), "store": str(store.folder)}
