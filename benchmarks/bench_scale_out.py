"""Scale-out of the pipeline's ``cache`` stage where compute dominates (paper App J.1 at
paper scale): the DINOv3 ConvNeXt-L architecture (random weights in the published
layout) hooked at ``stages.2.blocks.20``, 256 px images read from a file list, run under
``torchrun`` with 1, 2, 4 and 8 CPU processes (gloo), ``threads`` intra-op threads each.

The workload is sized so that one rank takes about ``target_s`` seconds (a probe times
the backbone first). Reported per rank count: seconds, speed-up and parallel efficiency
T_1 / (R T_R); every run's cache folder must be byte-identical to the one-rank run. Then
one rank of a 4-rank run is killed half-way and the command rerun: the rerun must finish
with the same bytes, recomputing only the shards that were missing.

``python -m benchmarks.bench_scale_out --out DIR`` writes ``DIR/scale_out.json``; with
fewer cores than the largest run needs, ``make bench`` skips it with a one-line reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from safetensors.torch import save_file

from klsc_lib.report import to_jsonable
from klsc_lib.worlds.zoo import CONVNEXT_LARGE, PAPER_HOOK, dinov3_backbone
from klsc_lib.worlds.zoo.dinov3 import PAPER_IMAGE_SIZE, build_dinov3_convnext

NAME = "Scale-out: cache stage (ConvNeXt-L, 256 px, gloo), parallel efficiency at 4 ranks"
SHARD = 8  # images per shard: enough shards for 8 ranks to share evenly


def write_weights(folder: Path) -> Path:
    """Random DINOv3 ConvNeXt-L weights in the timm layout."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_file(build_dinov3_convnext(CONVNEXT_LARGE).state_dict(), str(folder / "dinov3.safetensors"))
    return folder / "dinov3.safetensors"


def write_images(folder: Path, n_train: int, n_eval: int, image_size: int = PAPER_IMAGE_SIZE) -> tuple[Path, Path]:
    """``n_train`` + ``n_eval`` smooth random RGB PNGs and their two file lists."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_train + n_eval):
        coarse = rng.integers(0, 256, size=(max(1, image_size // 16),) * 2 + (3,), dtype=np.uint8)
        Image.fromarray(coarse).resize((image_size, image_size), Image.BICUBIC).save(folder / "images" / f"{i}.png")
        names.append(f"images/{i}.png")
    (folder / "train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (folder / "val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return folder / "train.txt", folder / "val.txt"


def seconds_per_image(weights: Path, threads: int, image_size: int = PAPER_IMAGE_SIZE) -> float:
    """The backbone's time per image to the hook on ``threads`` CPU threads (batch 8, after a warm-up)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = dinov3_backbone(weights, device="cpu", block=PAPER_HOOK, image_size=image_size)
        x = torch.rand(8, 3, image_size, image_size) * 2 - 1
        with torch.no_grad():
            net.hook_io(x[:2])
            start = time.perf_counter()
            net.hook_io(x)
        return (time.perf_counter() - start) / 8
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class Workload:
    """What every run caches: the stage's world options and how many images of each split."""

    world_args: tuple[str, ...]
    n_train: int
    n_eval: int

    @property
    def shards(self) -> int:
        return math.ceil(self.n_train / SHARD) + math.ceil(self.n_eval / SHARD)

    def command(self, out: Path, ranks: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                "-m", "klsc_lib.pipeline", "cache", *self.world_args, "--out", str(out), "--device", "cpu",
                "--n-images", str(self.n_train), "--n-eval-images", str(self.n_eval), "--shard-size", str(SHARD),
                "--batch-size", str(SHARD), "--no-progress"]


def paper_workload(folder: Path, threads: int, target_s: float, max_ranks: int) -> Workload:
    """Random ConvNeXt-L weights and enough 256 px images for one rank to take ``target_s``."""
    weights = write_weights(folder)
    per_image = seconds_per_image(weights, threads)
    step = SHARD * max_ranks
    n_total = step * max(2, math.ceil(target_s / per_image / step))
    n_eval = step * max(1, n_total // step // 5)
    train, val = write_images(folder, n_total - n_eval, n_eval)
    return Workload(("--world", "paper", "--dinov3-weights", str(weights), "--file-list", str(train),
                     "--eval-file-list", str(val), "--hook", PAPER_HOOK), n_total - n_eval, n_eval)


def folder_digest(root: Path) -> str:
    """SHA-256 over the relative names and bytes of every shard and manifest under ``root/cache``."""
    h = hashlib.sha256()
    for path in sorted((root / "cache").rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def complete_shards(root: Path) -> int:
    return sum(1 for _ in (root / "cache").rglob("shard_*.in.npy"))


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def timed_run(cmd: list[str], threads: int, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, env=_env(threads), stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def kill_and_resume(work: Workload, out: Path, ranks: int, threads: int, log: Path) -> dict:
    """Start a ``ranks``-rank run, SIGKILL one worker once half the shards exist, rerun."""
    cmd = work.command(out, ranks)
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=_env(threads), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        while complete_shards(out) < work.shards // 2 and proc.poll() is None:
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children() if proc.poll() is None else []
        killed = workers[-1].pid if workers else None
        if killed is not None:
            os.kill(killed, signal.SIGKILL)
        first_rc = proc.wait()
    done_before = complete_shards(out)
    rerun_s = timed_run(cmd, threads, log.with_suffix(".rerun.log"))
    return {"ranks": ranks, "killed_pid": killed, "first_exit_code": first_rc, "shards_done_before_rerun": done_before,
            "shards_computed_by_rerun": work.shards - done_before, "rerun_seconds": rerun_s}


def scale_out(folder: Path, work: Workload, rank_counts: tuple[int, ...] = (1, 2, 4, 8), threads: int = 1) -> dict:
    """Every measurement of the module docstring on ``work``; writes ``folder/scale_out.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    res: dict = {"threads_per_rank": threads, "world_args": work.world_args, "n_train": work.n_train,
                 "n_eval": work.n_eval, "shards": work.shards, "runs": []}
    reference = None
    for r in rank_counts:
        out = folder / f"run_{r}"
        seconds = timed_run(work.command(out, r), threads, folder / f"run_{r}.log")
        digest = folder_digest(out)
        reference = reference or digest
        res["runs"].append({"ranks": r, "seconds": seconds, "same_bytes_as_1_rank": digest == reference})
        (folder / "scale_out.json").write_text(json.dumps(to_jsonable(res), indent=2) + "\n")
    t1 = res["runs"][0]["seconds"]
    for run in res["runs"]:
        run["speed_up"] = t1 / run["seconds"]
        run["efficiency"] = t1 / (run["ranks"] * run["seconds"])
    r_kill = 4 if 4 in rank_counts else max(rank_counts)
    res["kill_and_resume"] = kill_and_resume(work, folder / "killed", r_kill, threads, folder / "killed.log")
    res["kill_and_resume"]["same_bytes_as_1_rank"] = folder_digest(folder / "killed") == reference
    (folder / "scale_out.json").write_text(json.dumps(to_jsonable(res), indent=2) + "\n")
    return res


def summary(res: dict) -> dict:
    runs = {r["ranks"]: r for r in res["runs"]}
    at = 4 if 4 in runs else max(runs)
    table = ", ".join(f"{r}: {v['seconds']:.0f} s (eff {v['efficiency']:.2f})" for r, v in runs.items())
    kr = res["kill_and_resume"]
    return {"name": NAME, "ratio": runs[at]["efficiency"],
            "detail": (f"{res['threads_per_rank']} thread/rank, {res['n_train'] + res['n_eval']} images; {table}; "
                       f"kill+resume at {kr['ranks']} ranks recomputed {kr['shards_computed_by_rerun']} of "
                       f"{res['shards']} shards, same bytes: {kr['same_bytes_as_1_rank']}"),
            "runs": res}


def run(rank_counts: tuple[int, ...] = (1, 2, 4, 8), threads: int = 1) -> dict:
    cores = os.cpu_count() or 1
    if cores < max(rank_counts) * threads:
        return {"name": NAME, "ratio": float("nan"),
                "detail": f"skipped: needs {max(rank_counts) * threads} CPU cores, this machine has {cores}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = paper_workload(Path(tmp) / "inputs", threads, 60.0, max(rank_counts))
        return summary(scale_out(Path(tmp), work, rank_counts, threads))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/scale_out")
    parser.add_argument("--ranks", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target-s", type=float, default=60.0, help="seconds one rank should take")
    args = parser.parse_args(argv)
    ranks = tuple(int(r) for r in args.ranks.split(","))
    work = paper_workload(Path(args.out) / "inputs", args.threads, args.target_s, max(ranks))
    result = summary(scale_out(Path(args.out), work, ranks, args.threads))
    print(f"{result['name']}\n  ratio {result['ratio']:.3f}\n  {result['detail']}")


if __name__ == "__main__":
    main()
