"""Data-parallel training under ``torchrun``: who am I, which shard is mine, who writes.

    torchrun --nproc_per_node 2 -m vitcifar train --preset vit-fast --data cifar10 --out runs/ddp

PyTorch's own engine does the work (``torch.distributed`` + ``DistributedDataParallel``, as in
timm's train.py); this module only answers the questions ``train`` asks:

- ``Distributed.from_env()``: the rank and world size torchrun put in the environment (a world of
  one, with no process group, when it did not), the device of this rank, and ``is_main``.
- ``shard(batch)``: this rank's contiguous slice of a *global* batch. Every rank builds the same
  global batch (same order, same augmentation draws, same Mixup/CutMix, from the same seeds) and
  keeps its slice, so the global batch is exactly the one a single process would use;
  ``DistributedDataParallel`` averages the gradients, which equals the single-process gradient of
  the mean loss. ``--batch-size`` stays the global batch, so the lr rule is unchanged.
- ``main_first``/``barrier``: rank 0 writes checkpoints, metrics and progress bars; the others wait.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; with a world of more than one process,
        join the process group (NCCL with CUDA, else gloo) once."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        me = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(me.local_rank)
            dist.init_process_group(backend)
            # Left to the interpreter's shutdown, the group's threads can abort the process
            # ("terminate called without an active exception"): close it first.
            atexit.register(_close_process_group)
        return me

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's GPU when training on CUDA (one GPU per process), else ``device``."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise ValueError(
                f"--batch-size {batch_size} (the global batch) does not split evenly over "
                f"{self.world_size} processes; use a multiple of {self.world_size}"
            )

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (dimension 0)."""
        if not self.enabled:
            return x
        n = len(x) // self.world_size
        return x[self.rank * n : (self.rank + 1) * n]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` in a world of more than one, else ``model``."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(model.parameters()).device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum(self, *values: torch.Tensor) -> None:
        """All-reduce (sum) ``values`` in place across ranks."""
        if self.enabled:
            import torch.distributed as dist

            for v in values:
                dist.all_reduce(v)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank (a decision that all ranks must follow alike)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        nccl = dist.get_backend() == "nccl"
        t = torch.tensor([value], dtype=torch.int64)
        t = t.to(torch.device("cuda", self.local_rank)) if nccl else t
        dist.broadcast(t, src=0)
        return int(t.item())

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
