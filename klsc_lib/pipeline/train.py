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
from pathlib import Path

from klsc_lib.pipeline import distributed as D
from klsc_lib.pipeline.cache import cache_root
from klsc_lib.runtime import atomic_write_text
from klsc_lib.sae.activation_cache import ActivationCache
from klsc_lib.sae.artifacts import META, TranscoderRecipe, fit_into, transcoder_identity
from klsc_lib.sae.training import History

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
    identity = transcoder_identity(train, recipe, seed)
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
    held_out = ActivationCache(cache_root(out, "test"))
    history, seconds = fit_into(folder, train, held_out, recipe, seed, ranks.device, progress, ranks.is_primary,
                                {"world_size": ranks.world_size})
    if ranks.is_primary:
        atomic_write_text(folder / "history.csv", history_csv(history))
    D.barrier()
    return {"status": "trained", "folder": str(folder), "seconds": seconds, "final_fvu": history.fvu[-1]}
