"""Stage ``sample``: EnergyDPS images of many transcoder features, split over the ranks
(paper Sec 2.3 Algorithm 1, Sec 3.1, App J.2, J.4), written to the samples store.

Every image has its own seed, derived from the base seed, the feature and the image's
number (:func:`feature_seeds`), and every batch holds the images of one feature, so a
feature's samples do not depend on the number of ranks or on which rank drew it.
Features already in the store are skipped on a rerun.

Settings (:class:`SampleSettings`): ``fast()`` (default) = respaced DDPM (100 steps),
Jacobian-free guidance, cap per feature = mean psi of its top-4 held-out images from
the index; ``paper()`` = the release's (App J.4, :data:`klsc_lib.paper_values.ENERGYDPS`):
1000 DDPM steps, gradient through the denoiser, scale 1.0, cap 15, seed 45.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from klsc_lib.diffusion.energy_dps import sample_energy_dps_ddpm
from klsc_lib.diffusion.samplers import spaced_timesteps
from klsc_lib.energies import feature_score
from klsc_lib.paper_values import ENERGYDPS
from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.index import index_path
from klsc_lib.pipeline.train import RUN, transcoder_dir
from klsc_lib.pipeline.worlds import WorldSpec, images, prior, rank_backbone
from klsc_lib.runtime import config_hash
from klsc_lib.sae.artifacts import load_transcoder
from klsc_lib.sae.topk_index import TopKIndex
from klsc_lib.samples_store import SamplesStore

CAP_TOP = 4  # the cap of the fast setting: mean psi of a feature's top-4 held-out images


@dataclass(frozen=True)
class SampleSettings:
    steps: int  # respaced DDPM steps (capped at the prior's training steps)
    grad_through_denoiser: bool
    scale: float  # zeta * lambda (App J.4)
    cap: float | None  # fixed cap; None: mean psi of the feature's top-4 real images
    seed: int
    reduction: str = "mix"  # App J.2

    @classmethod
    def fast(cls, seed: int = 0) -> "SampleSettings":
        return cls(steps=100, grad_through_denoiser=False, scale=1.0, cap=None, seed=seed)

    @classmethod
    def paper(cls) -> "SampleSettings":
        return cls(steps=ENERGYDPS["steps"], grad_through_denoiser=ENERGYDPS["grad_through_denoiser"],
                   scale=ENERGYDPS["guidance_scale"], cap=ENERGYDPS["cap"], seed=ENERGYDPS["seed"])


def feature_seeds(seed: int, feature: int, n: int) -> list[int]:
    """One 63-bit seed per image ``j < n`` of ``feature``, independent of everything else."""
    return [int(hashlib.sha256(f"{seed}/{feature}/{j}".encode()).hexdigest()[:15], 16) for j in range(n)]


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


def run_sample(spec: WorldSpec, out: str | Path, ranks: D.Ranks, settings: SampleSettings, n_per_feature: int,
               k: int, features: list[int] | None = None, random_n: int | None = None,
               progress: bool = True) -> dict:
    """Sample ``n_per_feature`` images for each chosen feature (skipping stored ones)."""
    if n_per_feature < 1:
        raise ValueError(f"--n-per-feature must be >= 1, got {n_per_feature}")
    index = TopKIndex.load(index_path(out, "features", k))
    chosen = choose_features(index, features, random_n, settings.seed)
    transcoder, _ = load_transcoder(transcoder_dir(out))
    transcoder.to(ranks.device).requires_grad_(False)
    net = rank_backbone(spec, ranks)
    diffusion = prior(spec, ranks.device)
    held_out = images(spec, "test") if settings.cap is None else None  # real images set the cap
    steps = min(settings.steps, diffusion.schedule.num_train_timesteps)
    config = {"world": spec.key(), "transcoder": config_hash(json.loads((transcoder_dir(out) / RUN).read_text())), "settings": asdict(settings), "steps": steps,
              "n_per_feature": n_per_feature, "cap_from_top": CAP_TOP if settings.cap is None else None,
              "index": f"features_top{k}"}
    store = D.primary_first(ranks, lambda: SamplesStore("EnergyDPS", "Feature", config, root=Path(out) / "samples"))
    todo = [f for f in chosen if not store.has(f)]
    D.barrier()  # every rank listed the same features before any is written
    mine = D.my_share(todo, ranks)
    bar = D.Progress(ranks, "sample", len(chosen), len(mine), lambda: sum(store.has(f) for f in chosen),
                     disable=not progress)
    timesteps = spaced_timesteps(diffusion.schedule, steps)
    for feature in mine:
        t0 = time.perf_counter()
        energy = feature_score(net, transcoder, feature, reduction=settings.reduction)
        top_ids = index.top_ids(feature)[:CAP_TOP]
        if settings.cap is None:
            real_BCHW = torch.stack([held_out[i][0] for i in top_ids]).to(ranks.device)
            with torch.no_grad():
                cap = float(energy(real_BCHW).mean())
        else:
            cap = settings.cap
        seeds = feature_seeds(settings.seed, feature, n_per_feature)
        x_BCHW = sample_energy_dps_ddpm(diffusion, energy, timesteps=timesteps, lam_B=settings.scale, cap_B=cap,
                                        grad_through_denoiser=settings.grad_through_denoiser, generators=seeds,
                                        device=ranks.device, disable=True)
        with torch.no_grad():
            psi_B = energy(x_BCHW)
        store.put(feature, x_BCHW.clamp(-1, 1), psi_B,
                  meta={"seeds": seeds, "cap": cap, "cap_top_ids": top_ids, "seconds": time.perf_counter() - t0,
                        "device": str(ranks.device)})
        bar.step()
    bar.close()
    D.barrier()
    return {"features": len(chosen), "sampled_here": len(mine), "store": str(store.folder)}
