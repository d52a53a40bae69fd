"""Several processes under ``torchrun``: who am I, which images are mine, when all are done.

    torchrun --nproc-per-node 2 -m textseg label photos/ --prompt "car, person" --out dataset/

A small copy of vitcifar/distributed.py (the packages stay independent), with only what
labelling needs: ``Ranks.from_env()`` reads the rank and world size torchrun put in the
environment (a world of one, with no process group, when it did not) and joins the process
group (NCCL with CUDA, else gloo); ``shard(items)`` is this rank's part of a list every rank
built the same way; ``barrier()`` waits for every rank. Multi-node runs go through torchrun's
own rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing here launches or queues anything.

Importing this module imports no torch; only ``from_env`` in a world of more than one does.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

__all__ = ["Ranks"]

T = TypeVar("T")

# Ranks wait at barriers while the others finish their shards, which can take hours on a big
# folder; torch's default (30 minutes for gloo, 10 for NCCL) would end such a run.
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun world (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; in a world of more than one, join
        the process group once (NCCL when this rank has a GPU, else gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch
        import torch.distributed as dist

        me = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(me.local_rank)
            dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
            # Left to the interpreter's shutdown, the group's threads can abort the process.
            atexit.register(_close_process_group)
        return me

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """This rank's GPU ("cuda:LOCAL_RANK") when `device` asks for CUDA in a world of more
        than one, else `device` as given."""
        if self.enabled and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                return f"cuda:{self.local_rank}"
        return device

    def shard(self, items: list[T]) -> list[T]:
        """Items rank, rank + world, rank + 2 world, ... of `items` (strided, so a sorted
        list of images of mixed sizes spreads evenly)."""
        return items[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
