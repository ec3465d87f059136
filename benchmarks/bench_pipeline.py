"""Throughput of the pipeline's ``cache`` stage with 2 gloo processes over 1 process on
CPU (the smoke mini-world, every train and held-out image; built on first use).

Both runs go through the same command-line entry point in freshly spawned processes
with one intra-op thread each, after the world is loaded; the ratio is images/s with
2 ranks over images/s with 1 (ideal 2 on 2 free cores)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from klsc_lib.pipeline.__main__ import main
from klsc_lib.pipeline.worlds import WorldSpec, backbone, images

SPEC = WorldSpec(world="miniworld", profile="smoke")
ARGS = ["--world", "miniworld", "--profile", "smoke", "--device", "cpu", "--no-progress", "--n-images", "0",
        "--n-eval-images", "0", "--shard-size", "128", "--batch-size", "128"]


def _timed_cache(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    backbone(SPEC, torch.device("cpu")), images(SPEC, "train")  # load the world outside the timed part
    if world_size > 1:
        dist.barrier()
    t0 = time.perf_counter()
    main(["cache", *ARGS, "--out", out])
    seconds = time.perf_counter() - t0
    if rank == 0:
        Path(out, "seconds.json").write_text(json.dumps(seconds))
    if world_size > 1:
        dist.destroy_process_group()
        os._exit(0)  # skip gloo's exit-time destructors (see tests/test_transcoder_ddp.py)


def _run(world_size: int, tmp: Path) -> float:
    out = tmp / f"ranks{world_size}"
    mp.start_processes(_timed_cache, args=(world_size, str(tmp / f"init{world_size}"), str(out)),
                       nprocs=world_size, start_method="spawn")
    return json.loads((out / "seconds.json").read_text())


def run() -> dict:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    backbone(SPEC, torch.device("cpu"))  # build the smoke mini-world once, before timing
    n = len(images(SPEC, "train")) + len(images(SPEC, "test"))
    with tempfile.TemporaryDirectory() as tmp:
        one, two = _run(1, Path(tmp)), _run(2, Path(tmp))
    return {"name": "pipeline cache: images/s, 2 gloo ranks vs 1 (CPU)", "ratio": one / two,
            "detail": f"{n} images: 1 rank {n / one:.0f} img/s, 2 ranks {n / two:.0f} img/s"}


if __name__ == "__main__":
    print(run())
