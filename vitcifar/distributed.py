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
- ``RankStreams``: two random streams per process in a world of more than one, the data's
  (shared, as above) and the rank's own (``seed + rank``, for dropout and drop-path masks).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["Distributed", "RankStreams"]

T = TypeVar("T")


def group_backend(device: torch.device | str | None, cuda_available: bool) -> str:
    """The process group's backend: NCCL for training on CUDA, else gloo (also ``--device cpu``
    on a GPU machine, where NCCL could not reduce CPU tensors). ``None``: CUDA when there."""
    on_cuda = cuda_available if device is None else torch.device(device).type == "cuda"
    return "nccl" if on_cuda else "gloo"


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (a world of one without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device: torch.device | str | None = None) -> Distributed:
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; with a world of more than one process,
        join the process group once: NCCL when training on CUDA (``device``; ``None``: whenever
        CUDA is there), else gloo, so ``--device cpu`` on a GPU machine still runs."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        me = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            backend = group_backend(device, torch.cuda.is_available())
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

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a world of one."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class RankStreams:
    """This process's random streams in a data-parallel run.

    Every rank must draw the same *data* randomness (Mixup/CutMix, and the per-sample transforms
    when they run in the main process: torch's global CPU generator), so that it slices the same
    global batch; but its dropout and drop-path masks must be its own, or every rank would drop
    the same units of its slice. So in a world of more than one:

    - the data's stream is the global CPU generator's state once the weights are built (the same
      on every rank, all seeded ``seed``); it is swapped in while ``batches`` makes each batch;
    - the rank's own stream is the global generators (CPU and this rank's GPU) reseeded
      ``seed + rank`` once DDP has broadcast the weights, so it is what the model draws from.

    ``state(local)`` is the checkpoint's ``rng`` entry: ``local`` (``train``'s record of the global
    generators) with the data's stream as its ``torch`` state and every rank's own stream under
    ``ranks`` (a collective call: every rank makes it). A resume with as many processes restores
    each rank's own stream; with another number it reseeds them from ``seed``, ``rank`` and the
    epoch (such a resume is not bit for bit anyway). A world of one has one stream, as without
    torchrun: nothing is swapped or reseeded, and ``state(local)`` is ``local``.
    """

    def __init__(
        self,
        dist: Distributed,
        seed: int,
        device: torch.device,
        saved: dict[str, Any] | None = None,
        epoch: int = 0,
    ) -> None:
        self.dist, self.device = dist, device
        self._data: torch.Tensor | None = None
        if not dist.enabled:
            return
        # The global generators hold the data's stream now: seeded `seed` and through the model's
        # construction (a new run), or restored from the checkpoint's `torch` state (a resume).
        self._data = torch.get_rng_state()
        ranks = (saved or {}).get("ranks")
        if ranks is not None and len(ranks) == dist.world_size:
            self._set_own(ranks[dist.rank])
        elif saved is None:
            torch.manual_seed(seed + dist.rank)
        else:
            torch.manual_seed(seed + dist.rank + dist.world_size * epoch)

    def _own(self) -> dict[str, torch.Tensor]:
        own = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        return own

    def _set_own(self, own: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(own["torch"])
        if "cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], self.device)

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """``loader``'s batches, each made with the data's stream (just ``loader`` in a world of one)."""
        if self._data is None:
            yield from loader
            return
        it = None
        while True:
            own = torch.get_rng_state()
            torch.set_rng_state(self._data)
            try:
                if it is None:
                    it = iter(loader)
                batch = next(it)
            except StopIteration:
                return
            finally:
                self._data = torch.get_rng_state()
                torch.set_rng_state(own)
            yield batch

    def state(self, local: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's record of the random streams (see the class); collective."""
        if self._data is None:
            return local
        return {**local, "torch": self._data, "ranks": self.dist.gather(self._own())}


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
