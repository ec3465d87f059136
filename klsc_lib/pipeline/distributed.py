"""Process-group plumbing of the pipeline stages: one process (plain ``python``) or
``torchrun`` workers (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment,
rendezvous by ``torchrun``), NCCL on GPUs and gloo on CPU.

Work is split by rank over a list every rank computes identically (:func:`my_share`);
a rank that fails raises, its process exits non-zero and the launcher (``torchrun`` or
the test's ``torch.multiprocessing.spawn``) stops the others; collectives time out after
``timeout_min`` so a hung rank cannot block a job forever.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from klsc_lib.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # init() created the process group (and shutdown() ends it)

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError as err:
        raise ValueError(f"${name}={value!r} is not an integer; launch with torchrun or unset it") from err


def init(device: str | torch.device = "auto", timeout_min: float = 30.0) -> Ranks:
    """Join the process group ``torchrun`` set up (nothing to join under plain ``python``).
    On CUDA each process takes GPU ``LOCAL_RANK``."""
    world_size, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():  # a group set up by the caller (e.g. a test)
        world_size, rank = dist.get_world_size(), dist.get_rank()
        local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    device = resolve_device(device)
    if device.type == "cuda":
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                                   "use --nproc_per_node <= the number of GPUs")
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owner = world_size > 1 and not dist.is_initialized()
    if owner:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min),
                                device_id=device if device.type == "cuda" else None)
    return Ranks(rank, world_size, local_rank, device, owner)


def shutdown(ranks: Ranks) -> None:
    """Leave the process group if :func:`init` created it."""
    if ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()


def primary_first(ranks: Ranks, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the others once rank 0 is done (for work that
    builds a shared cache on first use, e.g. training the mini-world)."""
    if ranks.is_primary:
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def my_share(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's items: every ``world_size``-th item from position ``rank``."""
    return list(items[ranks.rank::ranks.world_size])


class Progress:
    """One bar per rank: the others count their own items, rank 0 counts the job's
    items done by all ranks (``global_done()``, e.g. files on the shared disk)."""

    def __init__(self, ranks: Ranks, desc: str, total: int, mine: int, global_done: Callable[[], int],
                 disable: bool = False):
        self.ranks, self.global_done = ranks, global_done
        label = f"{desc} (all ranks)" if ranks.is_primary else f"{desc} rank {ranks.rank}"
        self.bar = tqdm(total=total if ranks.is_primary else mine, desc=label, position=ranks.rank,
                        initial=global_done() if ranks.is_primary else 0, disable=disable, file=sys.stderr)

    def step(self) -> None:
        if self.ranks.is_primary:
            self.bar.n = self.global_done()
            self.bar.refresh()
        else:
            self.bar.update()

    def close(self) -> None:
        if self.ranks.is_primary:
            self.bar.n = self.global_done()
        self.bar.close()
