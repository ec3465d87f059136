"""Stage ``train``: the CNN transcoder on the cached activations (paper Sec 3.1, App
J.1), DDP over the ranks (each rank reads its slice of every global batch, see
:func:`klsc_lib.sae.training.fit_transcoder`), bf16 autocast on CUDA, atomic
checkpoints every tenth of the run, resumed by default.

Files in ``OUT/transcoder/``: ``run.json`` (what is being trained, written first),
``train_state.pt`` (while training), then ``transcoder.safetensors`` + ``transcoder.json``
(weights, configs, held-out evaluation; the JSON marks completion) and ``history.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.cache import cache_root
from klsc_lib.runtime import atomic_write_text
from klsc_lib.sae.activation_cache import ActivationCache
from klsc_lib.sae.artifacts import META, TRAIN_STATE, TranscoderRecipe, save_transcoder
from klsc_lib.sae.training import History, evaluate_transcoder, fit_transcoder

RUN = "run.json"


def transcoder_dir(out: str | Path) -> Path:
    return Path(out) / "transcoder"


def history_csv(history: History) -> str:
    """The training history as CSV (one row per logged step)."""
    buf = io.StringIO()
    columns = list(vars(history))
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*(getattr(history, c) for c in columns)))
    return buf.getvalue()


def run_train(out: str | Path, ranks: D.Ranks, recipe: TranscoderRecipe, seed: int, resume: bool = True,
              progress: bool = True) -> dict:
    """Train (or resume, or find finished) the transcoder of ``recipe`` on ``OUT/cache/train``."""
    folder = transcoder_dir(out)
    train = ActivationCache(cache_root(out, "train"))
    d_in, d_out = train.manifest["in_shape"][0], train.manifest["out_shape"][0]
    model_cfg, train_cfg = recipe.model_config(d_in, d_out), recipe.train_config()
    identity = {"activations": train.manifest["config_hash"], "model": asdict(model_cfg), "train": asdict(train_cfg),
                "batch_size": recipe.batch_size, "seed": seed}
    if ranks.is_primary:
        if not resume and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / RUN).exists() and json.loads((folder / RUN).read_text()) != identity:
            raise ValueError(f"{folder} holds a transcoder trained with other settings ({folder / RUN}); pass "
                             "--no-resume to replace it, or use another --out")
        atomic_write_text(folder / RUN, json.dumps(identity, indent=2) + "\n")
    D.barrier()
    if (folder / META).exists():
        return {"status": "already trained", "folder": str(folder)}
    t0 = time.perf_counter()
    model, history = fit_transcoder(train, model_cfg, train_cfg, recipe.batch_size, seed, ranks.device,
                                    checkpoint=folder / TRAIN_STATE, progress=progress)
    seconds = time.perf_counter() - t0
    if ranks.is_primary:
        held_out = ActivationCache(cache_root(out, "test"))
        result = evaluate_transcoder(model, ((b.in_BCHW, b.out_BCHW) for b in held_out.iterate(256)), ranks.device)
        atomic_write_text(folder / "history.csv", history_csv(history))
        save_transcoder(model, folder, {**identity, "held_out_cache": held_out.manifest["config_hash"],
                                        "history": vars(history), "held_out": asdict(result),
                                        "train_seconds": seconds, "world_size": ranks.world_size})
        (folder / TRAIN_STATE).unlink(missing_ok=True)
    D.barrier()
    return {"status": "trained", "folder": str(folder), "seconds": seconds, "final_fvu": history.fvu[-1]}
