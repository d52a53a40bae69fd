"""The machine a run is on: device, precision, and what to tell the user when it fails.

Kept apart from the recipe (``config``) because it asks torch about the hardware at call time,
while the configs are plain data; and apart from the loop (``train``), because evaluation and
prediction pick their device and precision the same way.

The failure messages name the settings to change through a ``Knobs`` table: ``CLI_KNOBS`` writes
them as command-line flags (``--batch-size 256``); a notebook passes its own ``Knobs`` that
writes its parameters (``BATCH_SIZE = 256``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vitcifar.config import Amp, Device, check_choice

__all__ = [
    "CLI_KNOBS",
    "Knobs",
    "TrainingDiverged",
    "TrainingOutOfMemory",
    "divergence_advice",
    "is_out_of_memory",
    "out_of_memory_message",
    "resolve_amp",
    "resolve_device",
]

_OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingOutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message names the batch size to try instead."""


@dataclass(frozen=True)
class Knobs:
    """How messages name a setting the user can change, and a value given to it.

    ``names`` maps a TrainConfig field (or "out", the run folder) to how the user writes it;
    ``assign`` formats a setting with a value. ``knobs("batch_size", 256)`` -> "--batch-size 256".
    """

    names: Mapping[str, str]
    assign: str = "{name} {value}"
    turn_on: str = "pass {name}"  # how a yes/no setting is switched on

    def __call__(self, field: str, value: Any = None) -> str:
        name = self.names.get(field, field)
        return name if value is None else self.assign.format(name=name, value=value)

    def switch(self, field: str) -> str:
        """How to switch a yes/no setting on: "pass --resume", "set RESUME = True"."""
        return self.turn_on.format(name=self.names.get(field, field))


CLI_KNOBS = Knobs(
    {
        "batch_size": "--batch-size",
        "eval_batch_size": "eval_batch_size",  # no flag: a TrainConfig field
        "lr": "--lr",
        "amp": "--amp",
        "device": "--device",
        "compile": "--compile",
        "out": "--out",
        "resume": "--resume",
        "data": "--data",
        "subset": "--subset",
        "val_size": "--val-size",
        "seed": "--seed",
        "max_churn_bytes": "MirrorPolicy.max_churn_bytes",  # no flag: the notebook mirrors
    }
)


def resolve_device(device: str, *, knobs: Knobs = CLI_KNOBS) -> torch.device:
    """ "auto" -> CUDA when present, else CPU. "cuda" without a GPU is an error."""
    check_choice("device", device, Device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{knobs('device', 'cuda')} was asked for, but torch sees no CUDA GPU; use "
            f"{knobs('device', 'cpu')} or auto"
        )
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device, *, knobs: Knobs = CLI_KNOBS) -> torch.dtype | None:
    """Autocast dtype, or None for full precision. bf16 only on GPUs with native bf16 (Ampere+):
    a T4 (sm_75) emulates it slowly, so it gets fp16 with a gradient scaler."""
    check_choice("amp", amp, Amp)
    if device.type != "cuda" or amp == "off":
        return None
    native_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
    if amp == "bf16" and not native_bf16:
        raise ValueError(
            f"{knobs('amp', 'bf16')} needs an Ampere or newer GPU; this GPU supports fp16 (use "
            f"{knobs('amp', 'fp16')} or auto)"
        )
    if amp == "auto":
        return torch.bfloat16 if native_bf16 else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def precision_name(amp: torch.dtype | None) -> str:
    """ "bfloat16", "float16", or "off" for full precision: how a run's precision is recorded."""
    return str(amp).replace("torch.", "") if amp is not None else "off"


def divergence_advice(
    device: torch.device, amp: torch.dtype | None, batch_size: int, *, knobs: Knobs = CLI_KNOBS
) -> str:
    """What to try after a NaN/inf loss, for the precision that the run actually used."""
    lower_lr = f"lower {knobs('lr')} (e.g. to half)"
    if amp is torch.float16:
        return (
            f"fp16 overflow is the usual cause on a T4: {lower_lr}. {knobs('amp', 'off')} also "
            "avoids it but needs about twice the activation memory: pair it with "
            f"{knobs('batch_size', max(1, batch_size // 4))} or less on a 15 GB GPU"
        )
    if amp is torch.bfloat16:
        return f"{lower_lr}; bf16 has the range of fp32, so precision is not the cause"
    where = "on the CPU" if device.type == "cpu" else "in full precision"
    return f"{lower_lr}; the run was {where}, so mixed precision is not the cause"


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error, also when wrapped (e.g. by torch.compile)."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _OOM_ERRORS) or "out of memory" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def out_of_memory_message(
    cfg: Any,
    model_cfg: Any,
    amp: torch.dtype | None,
    *,
    phase: str,
    epochs_done: int,
    knobs: Knobs = CLI_KNOBS,
) -> str:
    """One line: where memory ran out, at which batch size, and the batch size to try instead.

    ``cfg`` is the run's TrainConfig (batch_size, eval_batch_size), ``model_cfg`` its ViTConfig
    (dim, depth).
    """
    precision = str(amp).replace("torch.", "") if amp is not None else "fp32"
    if phase == "evaluation":
        return (
            f"the GPU ran out of memory during evaluation at {knobs('eval_batch_size')} "
            f"{cfg.eval_batch_size} ({precision}); use a smaller {knobs('eval_batch_size')}, e.g. "
            f"{max(1, cfg.eval_batch_size // 4)}"
        )
    where = (
        f"choose a new {knobs('out')} for it (this folder's epochs used the old batch size)"
        if epochs_done
        else "nothing was saved yet"
    )
    return (
        f"the GPU ran out of memory in training at {knobs('batch_size', cfg.batch_size)} "
        f"(dim {model_cfg.dim}, depth {model_cfg.depth}, {precision}); rerun with "
        f"{knobs('batch_size', max(1, cfg.batch_size // 2))} (the learning rate follows the batch "
        f"size); {where}"
    )
