"""Checkpoint files: atomic writes and safe, validated reads.

A checkpoint is a plain dict of tensors and Python primitives (see ``train._checkpoint``), read
with ``torch.load(weights_only=True)``: arbitrary pickled objects are refused, never executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "atomic_save", "load_checkpoint"]

FORMAT = "vitcifar-checkpoint/1"
REQUIRED_KEYS = ("model", "model_config", "train_config", "epoch", "history")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, foreign or from another model shape."""


def atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a vitcifar checkpoint; raises ``CheckpointError`` naming the file and problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; point to RUN_DIR/best.pt or RUN_DIR/last.pt"
        )
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder; point to RUN_DIR/best.pt or RUN_DIR/last.pt inside it"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a vitcifar checkpoint: it holds Python objects that are not allowed "
            f"to be loaded safely ({str(err).splitlines()[0][:200]})"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncated files fail in many ways inside torch.load
        raise CheckpointError(
            f"{path} is truncated or not a torch checkpoint ({str(err).splitlines()[0][:200]}); "
            "use RUN_DIR/best.pt or last.pt from a finished epoch"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a vitcifar checkpoint (no '{FORMAT}' format tag)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is missing {missing}; it is damaged or from another program")
    return ckpt


def load_state_into(
    model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike
) -> None:
    """``model.load_state_dict`` with an error naming the file and the mismatched tensors."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][1:4]
        raise CheckpointError(
            f"{path} holds weights of another model shape than its stored config: {' '.join(lines)[:400]}"
        ) from err
