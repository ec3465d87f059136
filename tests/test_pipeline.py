"""The pipeline stages (klsc_lib.pipeline) with 2 gloo processes on CPU give what one
process gives on the smoke mini-world: the same cache bytes, the same transcoder (to
float tolerance), the same top-k index, the same samples; a rank that fails stops the
job, leaves nothing half-written, and a rerun finishes without redoing finished work."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from klsc_lib.pipeline.__main__ import main
from klsc_lib.sae.activation_cache import ActivationCache, CacheIncompleteError
from klsc_lib.samples_store import SamplesStore

pytestmark = pytest.mark.slow

WORLD = ["--world", "miniworld", "--profile", "smoke", "--device", "cpu", "--no-progress"]
STAGE_ARGS = {
    "cache": ["--n-images", "64", "--n-eval-images", "48", "--shard-size", "16", "--batch-size", "16"],
    "train": ["--steps", "6", "--batch-size", "16", "--warmup-steps", "2", "--k", "4", "--expansion", "2",
              "--lr", "1e-2"],
    "index": ["--top-k", "6", "--batch-size", "16"],
    "sample": ["--random", "4", "--seed", "3", "--n-per-feature", "2", "--steps", "6", "--top-k", "6"],
}
SPAWN_TIMEOUT_S = 600


def _argv(stage: str, out: Path) -> list[str]:
    return [stage, *WORLD, "--out", str(out), *STAGE_ARGS[stage]]


def _worker(rank: int, world_size: int, init_file: str, jobs: list[list[str]], fault: tuple[str, int] | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    if fault is not None and rank == 1:
        _inject(*fault)
    for argv in jobs:
        main(argv)
    dist.barrier()
    dist.destroy_process_group()
    # gloo may abort in its static destructors at interpreter exit after everything
    # succeeded (see test_transcoder_ddp); the results are on disk, skip them.
    os._exit(0)


def _inject(what: str, on_call: int) -> None:
    """Make this process fail on the ``on_call``-th shard file / stored feature."""
    calls = {"n": 0}

    def failing(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == on_call:
                raise OSError(f"injected failure in {what}")
            return original(*args, **kwargs)
        return wrapper

    if what == "cache":
        import klsc_lib.sae.activation_cache as ac
        ac._write_npy_atomically = failing(ac._write_npy_atomically)
    else:
        SamplesStore.put = failing(SamplesStore.put)


def _spawn(tmp: Path, jobs: list[list[str]], fault: tuple[str, int] | None = None) -> None:
    """Run ``jobs`` (argv lists) in 2 gloo processes; fail instead of hanging."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    init = tmp / f"init-{time.monotonic_ns()}"
    ctx = mp.start_processes(_worker, args=(2, str(init), jobs, fault), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"2-process pipeline run did not finish within {SPAWN_TIMEOUT_S} s")


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


def _stamps(paths) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def _copy_upto(src: Path, dst: Path, folders: tuple[str, ...]) -> Path:
    for name in folders:
        shutil.copytree(src / name, dst / name)
    return dst


def _store_folder(out: Path) -> Path:
    (folder,) = (out / "samples").iterdir()
    return folder


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The four stages in this process (world size 1)."""
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in ("cache", "train", "index", "sample"):
            main(_argv(stage, out))
    finally:
        torch.set_num_threads(threads)
    return out


def test_two_processes_give_the_single_process_results(single, tmp_path):
    out2 = tmp_path / "two"  # cache + train from scratch with 2 ranks
    out3 = _copy_upto(single, tmp_path / "three", ("cache", "transcoder"))  # index + sample on the same transcoder
    _spawn(tmp_path, [_argv("cache", out2), _argv("train", out2), _argv("index", out3), _argv("sample", out3)])

    for split in ("train", "test"):
        one, two = _files(single / "cache" / split), _files(out2 / "cache" / split)
        assert sorted(one) == sorted(two) and len(one) > 3
        assert all(one[name] == two[name] for name in one), f"{split} cache differs"
    w1 = load_file(str(single / "transcoder" / "transcoder.safetensors"))
    w2 = load_file(str(out2 / "transcoder" / "transcoder.safetensors"))
    for name, p in w1.items():
        torch.testing.assert_close(w2[name], p, rtol=1e-4, atol=1e-5, msg=f"transcoder parameter {name}")
    assert (out2 / "transcoder" / "history.csv").read_text().splitlines()[0] == "step,loss,fvu,l0,dead_frac,lr"

    i1, i3 = (load_file(str(o / "index" / "features_top6.safetensors")) for o in (single, out3))
    for name in ("scores_UK", "ids_UK", "pos_UK", "hist_UB"):
        assert torch.equal(i1[name], i3[name]), f"index {name} differs from the single-process index"
    assert int(i1["hist_UB"][0].sum()) == 48 and not (out3 / "index" / "parts").exists()

    s1, s3 = _store_folder(single), _store_folder(out3)
    assert s1.name == s3.name  # same config, same store
    files1, files3 = sorted(s1.glob("feature_*.safetensors")), sorted(s3.glob("feature_*.safetensors"))
    assert [p.name for p in files1] == [p.name for p in files3] and len(files1) == 4
    for a, b in zip(files1, files3):
        ta, tb = load_file(str(a)), load_file(str(b))
        torch.testing.assert_close(tb["images_BCHW"].float(), ta["images_BCHW"].float(), atol=2e-3, rtol=0,
                                   msg=f"{a.name}: images differ")
        assert not torch.equal(ta["images_BCHW"][0], ta["images_BCHW"][1])  # two seeds, two images


def test_a_failed_rank_stops_the_job_and_a_rerun_only_does_what_is_missing(single, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(mp.ProcessRaisedException, match="injected failure in cache"):
        _spawn(tmp_path, [_argv("cache", out)], fault=("cache", 3))  # rank 1 dies writing its 2nd shard
    with pytest.raises(CacheIncompleteError):
        ActivationCache(out / "cache" / "train")
    kept = _stamps(p for p in (out / "cache" / "train").glob("shard_*.npy"))
    assert 0 < len(kept) < 8
    assert not (out / "logs" / "cache.json").exists()

    _copy_upto(single, out, ("transcoder", "index"))
    with pytest.raises(mp.ProcessRaisedException, match="injected failure in sample"):  # the cache completes,
        _spawn(tmp_path, [_argv("cache", out), _argv("sample", out)], fault=("sample", 2))  # then rank 1 dies
    assert _stamps(p for p in (out / "cache" / "train").glob("shard_*.npy") if p.name in kept) == kept
    one, two = _files(single / "cache" / "train"), _files(out / "cache" / "train")
    assert one.keys() == two.keys() and all(one[n] == two[n] for n in one)
    stored = _stamps(_store_folder(out).glob("feature_*.safetensors"))
    assert 1 <= len(stored) < 4

    _spawn(tmp_path, [_argv("sample", out)])
    files = sorted(_store_folder(out).glob("feature_*.safetensors"))
    assert len(files) == 4 and _stamps(p for p in files if p.name in stored) == stored
    for path in files:
        torch.testing.assert_close(load_file(str(path))["images_BCHW"].float(),
                                   load_file(str(_store_folder(single) / path.name))["images_BCHW"].float(),
                                   atol=2e-3, rtol=0, msg=f"{path.name} differs from the single-process run")
