"""Run-time plumbing shared by every notebook: device choice, seeding, the cache
folder, config hashing, atomic file writes and the cost meter (wall time, peak memory)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cache_dir() -> Path:
    """Root of every trained or cached artefact: ``$KLSC_CACHE`` or ``~/.cache/klsc``."""
    root = Path(os.environ.get("KLSC_CACHE", Path.home() / ".cache" / "klsc")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def config_hash(config: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable config (keys sorted), used to name
    cache folders so that a changed setting never reuses a stale artefact."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def world_key(world_config: Any) -> dict[str, str]:
    """The one identity of a world (its config dataclass hashed), carried as
    :attr:`klsc_lib.interfaces.World.key` and put into every cache key that depends on
    the world's weights and data (activation caches, transcoders, samples stores)."""
    return {"world_config": config_hash(dataclasses.asdict(world_config))}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; on success it is renamed
    onto ``path`` (atomic on POSIX), on error it is removed. No partial file is
    ever visible under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    import resource  # Unix only: imported where used

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
