"""Checkpoint files: the resume state, atomic writes, safe validated reads, and a run folder's
consistent file set.

The resume state is a ``TrainState``: everything ``train`` needs to continue a run exactly (the
weights, optimizer, scheduler and scaler states, the RNG states, the history, the configs, the
data fingerprint). At the point of writing it becomes a plain dict of tensors and Python
primitives (``TrainState.to_dict``, like nanoGPT's checkpoint dict), read back with
``torch.load(weights_only=True)``: arbitrary pickled objects are refused, never executed.

A run folder holds one consistent set of files, written in this order after every epoch:

    1. last.pt        the commit point: weights, optimizer, history, best epoch
    2. best.pt        a byte copy of last.pt, when this epoch is the best so far
    3. metrics.jsonl  last.pt's history, one JSON line per epoch

Each write is atomic (temporary file, fsync, ``os.replace``). A kill between any two writes
leaves last.pt either at the new epoch or at the previous one, and ``RunFolder.reconcile`` derives
the other two files from it on the next start: best.pt from last.pt when last.pt's epoch is its
best, metrics.jsonl from last.pt's history. Temporary files left by a kill are removed.

A run folder may have a mirror (``Mirror``, e.g. on Google Drive, whose Trash counts every
replaced file against the quota): the run trains into a folder on the session's disk, and after
a commit, when a disconnect would otherwise lose more than ``MirrorPolicy.max_loss_s`` of
training, and at the end of every call, the set is copied there in this order:

    4. last.pt        a deflated copy of the local last.pt (the same torch file, 7 % smaller)
    5. best.pt        weights only (no optimizer state), when it changed and is due
    6. metrics.jsonl
    7. mirror.json    the mirror's commit point: the epochs of its last.pt and best.pt

then the local mirror.json (what the mirror holds). On the next start the newer of the two sets
(same run: one history is the start of the other) is the one a run continues from.

The mirror's mirror.json also counts the bytes it has replaced or deleted so far (``churn``,
across sessions): copies of last.pt are spaced so that the rest of the run fits in
``MirrorPolicy.max_churn_bytes``, even when that means more than ``max_loss_s`` at risk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import math
import os
import pickle
import random
import re
import secrets
import shutil
import tempfile
import time
import types
import typing
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import torch

from vitcifar.config import TrainConfig, ViTConfig
from vitcifar.distributed import Distributed

__all__ = [
    "CHECKSUM_KEY",
    "CheckpointError",
    "FolderLock",
    "FolderLockedError",
    "LOCK_NAME",
    "Mirror",
    "MirrorPolicy",
    "RunFolder",
    "RunFolderError",
    "TrainState",
    "atomic_save",
    "atomic_write",
    "check_not_a_link_loop",
    "config_diff",
    "hold_folder",
    "load_checkpoint",
    "load_optimizer_state",
    "load_state_into",
    "rng_state",
    "set_rng_state",
    "stored_configs",
    "tensor_checksum",
    "validate_checkpoint",
    "verify_checksum",
    "write_in_order",
]

log = logging.getLogger(__name__)

FORMAT = "vitcifar-checkpoint/1"
REQUIRED_KEYS = ("model", "model_config", "train_config", "epoch", "history")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, foreign or from another model shape."""


class RunFolderError(ValueError):
    """A run folder that cannot be used: not writable, or holding files of a run without last.pt."""


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then ``os.replace``.

    A crash at any point leaves either the old file or the new one, never a partial file; a
    temporary file left by a kill is removed by ``RunFolder.reconcile``.
    """
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        failure = _write_failure(err, path)  # measured before the temporary file is removed
        Path(tmp).unlink(missing_ok=True)
        if failure is not None:
            raise failure from err
        raise
    _fsync_dir(path.parent)


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty ``.<name>.<random>.tmp`` beside ``path``, opened for writing.

    Made with mode 0o666 less the umask, as ``open()`` makes files: ``tempfile.mkstemp`` makes
    them 0o600, and ``os.replace`` keeps that, so no other user of a shared machine could read
    a checkpoint or an exported model.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _write_failure(err: BaseException, path: Path) -> OSError | None:
    """A full disk as one ``OSError`` naming ``path`` (None: ``err`` is something else).

    A full disk shows as ``OSError`` ENOSPC (or EDQUOT/EFBIG: a quota or a file-size limit), or,
    inside ``torch.save``, as torch's ``[enforce fail at inline_container.cc:...] unexpected pos``
    (its zip writer notices the short write); that one is taken for a full disk when the folder
    has less than 1 MiB free, else reported as a failed write with torch's first line.
    """
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        reason = os.strerror(err.errno)
    elif isinstance(err, RuntimeError) and "unexpected pos" in str(err):
        try:
            full = shutil.disk_usage(path.parent).free < 2**20
        except OSError:
            full = False
        reason = os.strerror(errno.ENOSPC) if full else f"write failed ({_first_line(err)})"
    else:
        return None
    code = err.errno if isinstance(err, OSError) and err.errno else errno.ENOSPC
    return OSError(
        code,
        f"{reason} while writing {path.name}; free some space or choose another --out",
        str(path),
    )


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a machine crash, not only a killed process)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (see ``atomic_write``), with the checksum of
    its tensors (``tensor_checksum``) under ``CHECKSUM_KEY``, which ``load_checkpoint`` verifies."""
    stamped = {**obj, CHECKSUM_KEY: tensor_checksum(obj)}
    atomic_write(path, lambda f: torch.save(stamped, f))


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a vitcifar checkpoint; raises ``CheckpointError`` naming the file and problem."""
    path = Path(path)
    check_not_a_link_loop(path, "checkpoint")
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; point to RUN_DIR/best.pt or RUN_DIR/last.pt"
        )
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a folder; point to RUN_DIR/best.pt or RUN_DIR/last.pt inside it"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): it was never written completely; "
            "use RUN_DIR/best.pt or last.pt from a finished epoch"
        )
    foreign = _not_a_torch_save_file(path)
    if foreign:  # before torch.load, which would call a JPEG or a JSON file "unsafe objects"
        raise CheckpointError(
            f"{path} is not a torch checkpoint ({foreign}); "
            "point to RUN_DIR/best.pt or RUN_DIR/last.pt"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a vitcifar checkpoint: it holds Python objects that are not allowed "
            f"to be loaded safely ({_unpickling_reason(err)})"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncated files fail in many ways inside torch.load
        raise CheckpointError(
            f"{path} is truncated or not a torch checkpoint ({_first_line(err)}); "
            "use RUN_DIR/best.pt or last.pt from a finished epoch"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not a vitcifar checkpoint (no '{FORMAT}' format tag)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is missing {missing}; it is damaged or from another program")
    verify_checksum(ckpt, path)  # and takes CHECKSUM_KEY out: the dict is the TrainState's
    validate_checkpoint(ckpt, path)
    return ckpt


def _not_a_torch_save_file(path: Path) -> str | None:
    """What ``path`` is when it cannot be a ``torch.save`` file, in words; None when it may be.

    torch.save writes a zip archive (a pickle in torch's legacy format). Anything else is
    named here: torch.load's weights-only reader would report it as a pickle with unsafe
    objects and suggest ``weights_only=False``. A TorchScript archive (``vitcifar export``) is a
    zip too, told apart by its ``code/`` and ``constants.pkl`` entries.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):  # e.g. truncated: torch.load's message says so
            return None
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return (
                "it is a TorchScript export, for torch.jit.load; pass the checkpoint it was "
                "exported from"
            )
        return None
    if head[:1] == b"\x80":  # a pickle's protocol opcode: torch's legacy format
        return None
    if path.suffix.lower() == ".onnx":
        return "it is an ONNX export, for onnxruntime; pass the checkpoint it was exported from"
    return "not a file that torch.save writes"


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


# ----------------------------------------------------------------------------- the resume state


def rng_state() -> dict[str, Any]:
    """The torch (CPU and every CUDA device) and Python RNG states, as tensors and ints."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (as many GPUs as both runs have)."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        for i, gpu_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, i)


@dataclass
class TrainState:
    """Everything a resume needs: what last.pt and best.pt hold.

    The ``*_config`` fields are ``asdict`` of the run's ViTConfig and TrainConfig, so the file
    alone rebuilds its model; ``data`` is ``Splits.fingerprint()`` (the split a resume must see
    again) and ``runtime`` the device and autocast dtype actually used. ``epoch`` counts the
    epochs completed; ``best_val_acc``/``best_epoch`` are -1 before the first.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    classes: list[str]
    data: dict[str, Any]
    runtime: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    epoch: int = 0
    best_val_acc: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=rng_state)

    def to_dict(self) -> dict[str, Any]:
        """The plain dict that is written (``torch.save``), tagged with the format."""
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> TrainState:
        """A state from a loaded checkpoint dict (``load_checkpoint``). Files from before a key
        existed load too: a missing ``ema``/``data``/``runtime``/``classes`` takes its empty value."""
        known = {f.name for f in fields(cls)}
        present = {k: v for k, v in ckpt.items() if k in known}
        present.setdefault("classes", [])
        present.setdefault("data", {})
        present.setdefault("runtime", {})
        missing = [f.name for f in fields(cls) if f.name not in present and f.name in _NEEDED]
        if missing:
            raise CheckpointError(
                f"{path} is missing {missing}, so a run cannot continue from it; choose another --out"
            )
        return cls(**present)

    @property
    def best(self) -> tuple[float, int]:
        return self.best_val_acc, self.best_epoch


# Without these a checkpoint can be evaluated but not resumed.
_NEEDED = ("model", "optimizer", "scheduler", "scaler", "model_config", "train_config", "rng")


def stored_configs(state: dict[str, Any] | TrainState, path: Path) -> tuple[ViTConfig, TrainConfig]:
    """The (ViTConfig, TrainConfig) a checkpoint was written with; ``CheckpointError`` naming the
    file when this version cannot read them."""
    if isinstance(state, TrainState):
        state = {"model_config": state.model_config, "train_config": state.train_config}
    try:
        return ViTConfig.from_dict(state["model_config"]), TrainConfig.from_dict(
            state["train_config"]
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} has settings this version cannot read ({err}); use the vitcifar version that "
            "wrote it, or choose another --out"
        ) from err


def config_diff(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for every key whose value differs between two config dicts."""
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in skip and a.get(k) != b.get(k)
    ]


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``opt.load_state_dict(saved)`` with the state placed as *this* optimizer expects.

    torch places ``state["step"]`` by the *saved* groups' ``fused``/``capturable`` flags
    (pytorch#124133): a state saved by a non-fused CPU optimizer keeps its steps on the CPU, and the
    first fused CUDA step fails. So the saved groups take this optimizer's flags before loading;
    ``saved`` itself is not changed.
    """
    flags = ("fused", "capturable", "foreach", "differentiable")
    groups = [
        {**g, **{k: target[k] for k in flags if k in target}}
        for g, target in zip(saved["param_groups"], opt.param_groups)
    ]
    opt.load_state_dict({"state": saved["state"], "param_groups": groups})


# ----------------------------------------------------------------------------- the run folder


class RunFolder:
    """The files of one training run and the rule that keeps them consistent (module docstring)."""

    # Files that only a run writes; with any of them but no last.pt, the folder is someone else's.
    RUN_FILES = ("best.pt", "metrics.jsonl", "metrics.json")

    def __init__(self, path: str | os.PathLike, *, mirror: Mirror | None = None) -> None:
        self.path = Path(path)
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.mirror = mirror  # a second copy of the set (module docstring), or None

    def check_writable(self) -> None:
        """Raise ``RunFolderError`` when the folder could not be created or written; creates
        nothing (a quick check before minutes of data loading)."""
        p = self.path.absolute()
        while not p.exists():
            p = p.parent
        if not p.is_dir():
            raise RunFolderError(
                f"cannot write the run folder {self.path}: {p} is a file, not a folder; "
                "choose another --out"
            )
        if not os.access(p, os.W_OK):
            raise RunFolderError(
                f"cannot write the run folder {self.path}: {p} is not writable; choose another --out"
            )

    def ensure_writable(self) -> None:
        """Create the folder and prove that a file can be written there, or raise ``RunFolderError``."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise RunFolderError(
                f"cannot write the run folder {self.path} ({err.strerror or _first_line(err)}); "
                "choose another --out"
            ) from err

    def check_new_run(self) -> None:
        """Refuse a folder without last.pt that holds another run's files (never overwrite them)."""
        if self.last.exists():
            return
        found = [name for name in self.RUN_FILES if (self.path / name).exists()]
        if found:
            raise RunFolderError(
                f"{self.path} holds {', '.join(found)} but no last.pt: it is another run's folder "
                "(or last.pt was deleted), and starting here would overwrite it. Choose another "
                "--out, or move those files away"
            )

    def reconcile(self, last: dict[str, Any] | None) -> None:
        """Remove temporary files that a kill left behind, and bring best.pt and metrics.jsonl in
        line with ``last`` (the loaded last.pt; None for a new run)."""
        for pattern in (
            ".last.pt.*.tmp",
            ".best.pt.*.tmp",
            ".metrics.jsonl.*.tmp",
            ".mirror.json.*.tmp",
        ):
            for tmp in self.path.glob(pattern):
                tmp.unlink(missing_ok=True)
        if last is None:
            return
        if last.get("best_epoch") == last["epoch"] and self._epoch_of(self.best) != last["epoch"]:
            log.info(
                "%s: best.pt is behind last.pt (interrupted epoch); copying last.pt", self.path
            )
            self._copy_last_to_best()
        elif last.get("best_epoch", -1) > 0 and not self.best.exists():
            log.warning(
                "%s: best.pt (epoch %s) is missing; it comes back at the next best epoch",
                self.path,
                last["best_epoch"],
            )
        if not self.metrics.exists() or self.metrics.read_text() != metrics_text(last["history"]):
            self._write_metrics(last["history"])

    def commit(self, ckpt: dict[str, Any], *, is_best: bool) -> None:
        """Write one epoch's files in the order that ``reconcile`` can finish from."""
        atomic_save(ckpt, self.last)
        if is_best:
            self._copy_last_to_best()
        self._write_metrics(ckpt["history"])
        if self.mirror is not None:
            self.mirror.after_commit(self, ckpt)

    def finish(self) -> None:
        """The end of a call: the mirror, if any, gets what it does not hold yet."""
        if self.mirror is not None:
            self.mirror.sync(self, final=True)

    def _copy_last_to_best(self) -> None:
        def copy(f: IO[bytes]) -> None:
            with self.last.open("rb") as src:
                shutil.copyfileobj(src, f)

        atomic_write(self.best, copy)

    def _write_metrics(self, history: list[dict[str, Any]]) -> None:
        atomic_write(self.metrics, lambda f: f.write(metrics_text(history).encode()))

    @staticmethod
    def _epoch_of(path: Path) -> int | None:
        if not path.exists():
            return None
        try:
            return load_checkpoint(path)["epoch"]
        except CheckpointError:
            return None


def metrics_text(history: list[dict[str, Any]]) -> str:
    """metrics.jsonl's content: one JSON object per epoch."""
    return "".join(json.dumps(row) + "\n" for row in history)


# ----------------------------------------------------------------------------- checksums and checks
# A checkpoint is checked before any model is built from it: its tensors against the checksum
# written with them, then the type of every stored field and the bounds of the model config (a
# config that asks for 10**6 blocks is refused here, not by the allocator).

CHECKSUM_KEY = "checksum"  # {"sha256": hex digest, "tensors": count}; taken out by load_checkpoint


def _tensors(obj: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested dict/list/tuple, with its path, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            if not (name == "" and key == CHECKSUM_KEY):
                yield from _tensors(obj[key], f"{name}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _tensors(item, f"{name}/{i}")


def tensor_checksum(obj: dict[str, Any]) -> dict[str, Any]:
    """SHA-256 over the path, dtype, shape and bytes of every tensor in ``obj`` (the weights, the
    optimizer's moments, the RNG states, ...): what ``atomic_save`` stores under ``CHECKSUM_KEY``.
    Python values beside the tensors (configs, history) are checked by ``validate_checkpoint``."""
    digest, count = hashlib.sha256(), 0
    for name, t in _tensors(obj):
        data = t.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(t.shape)};".encode())
        digest.update(memoryview(data.view(torch.uint8).numpy()))
        count += 1
    return {"sha256": digest.hexdigest(), "tensors": count}


def verify_checksum(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Compare ``ckpt``'s tensors with the checksum stored with them, and take the checksum out of
    ``ckpt``. A file written before checksums were recorded loads, with a note in the log."""
    stored = ckpt.pop(CHECKSUM_KEY, None)
    if stored is None:
        log.info(
            "%s has no tensor checksum (written before vitcifar recorded one); loaded "
            "without that check",
            path,
        )
        return
    if not isinstance(stored, dict) or not isinstance(stored.get("sha256"), str):
        raise CheckpointError(f"{path} has a damaged checksum record; use another copy of the file")
    if tensor_checksum(ckpt)["sha256"] != stored["sha256"]:
        raise CheckpointError(
            f"{path} is damaged: its tensors do not match the checksum written with them (bytes "
            "changed on disk or in a copy); use another copy, e.g. RUN_DIR/best.pt or last.pt"
        )


# The largest model a stored config may ask for. vitcifar's presets are far inside (deit-tiny:
# dim 192, depth 12, 64 patches); ViT-Huge (dim 1280, depth 32, 632 M parameters) still fits.
MODEL_LIMITS: dict[str, float] = {
    "image_size": 1024,  # pixels
    "patch_size": 256,  # pixels
    "in_channels": 16,
    "num_classes": 100_000,
    "dim": 4096,
    "depth": 128,  # blocks
    "heads": 128,
    "mlp_ratio": 16.0,
}
MAX_PATCHES = 4096  # tokens per image (a 64 x 64 grid)
MAX_PARAMETERS = 1_000_000_000  # 4 GB of fp32 weights


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a stored object whose repr fails is still named
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _type_problem(value: Any, tp: Any) -> str | None:
    """None when ``value`` is of the annotated type ``tp`` (a config field's), else what it should be."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        options = typing.get_args(tp)
        return None if isinstance(value, str) and value in options else f"one of {options}"
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(value, arg) for arg in typing.get_args(tp)]
        return None if None in problems else " or ".join(p for p in problems if p)
    if tp is type(None):
        return None if value is None else "None"
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if tp is float:
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        return None if ok else "a finite number"
    if tp is str:
        return None if isinstance(value, str) else "a string"
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return None if isinstance(value, dict) else "a dict of settings"
    return None


def _check_config(d: Any, cls: type, key: str, path: Any, legacy: tuple[str, ...] = ()) -> None:
    """Every field of a stored ``cls`` config (and of configs nested in it) is of its type."""
    if not isinstance(d, dict):
        raise CheckpointError(
            f"{path}: {key} is {_short(d)} ({type(d).__name__}), not a dict of {cls.__name__} "
            "settings; the file is damaged or from another program"
        )
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        if name in legacy:
            continue
        if name not in hints:
            raise CheckpointError(
                f"{path}: {key} has the unknown field {_short(name)}; use the vitcifar version "
                "that wrote the file"
            )
        wanted = _type_problem(value, hints[name])
        if wanted is not None:
            raise CheckpointError(
                f"{path}: {key}.{name} is {_short(value)} ({type(value).__name__}), not "
                f"{wanted}; the file is damaged or was edited"
            )
        if hasattr(hints[name], "__dataclass_fields__"):
            _check_config(value, hints[name], f"{key}.{name}", path)


def _estimated_parameters(cfg: dict[str, Any]) -> float:
    """Roughly what ``ViT(cfg)`` allocates, from the fields alone (``ViTConfig``'s defaults)."""
    full = {f.name: f.default for f in fields(ViTConfig)} | cfg
    dim, depth = full["dim"], full["depth"]
    block = (4 + 2 * full["mlp_ratio"]) * dim * dim
    patches = (full["image_size"] // full["patch_size"]) ** 2
    embed = full["patch_size"] ** 2 * full["in_channels"] * dim + (patches + 1) * dim
    return depth * block + embed + dim * full["num_classes"]


def validate_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse, with one ``CheckpointError`` line, a loaded checkpoint whose stored fields are not
    of their types (a config that is a string, a garbage value, a history that is not a list of
    epochs), or whose model config is beyond ``MODEL_LIMITS`` — before anything is built from it."""
    _check_config(ckpt["model_config"], ViTConfig, "model_config", path)
    _check_config(
        ckpt["train_config"], TrainConfig, "train_config", path, legacy=("mix_off_epochs",)
    )
    model_cfg = ckpt["model_config"]
    for name, limit in MODEL_LIMITS.items():
        if name in model_cfg and model_cfg[name] > limit:
            raise CheckpointError(
                f"{path}: model_config {name}={model_cfg[name]} is beyond what vitcifar builds (at "
                f"most {limit:g}); the file is damaged or not a vitcifar checkpoint, so no model "
                "is built from it"
            )
    try:
        ViTConfig.from_dict(model_cfg)
        TrainConfig.from_dict(ckpt["train_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path} has unusable settings: {_first_line(err)}") from err
    size = model_cfg.get("image_size", 32) // model_cfg.get("patch_size", 4)
    if size * size > MAX_PATCHES or _estimated_parameters(model_cfg) > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: model_config asks for a model beyond what vitcifar builds ({size * size} "
            f"patches, ~{_estimated_parameters(model_cfg):.2g} parameters; at most {MAX_PATCHES} "
            f"and {MAX_PARAMETERS:.0e}); the file is damaged or not a vitcifar checkpoint"
        )
    checks = {
        "epoch": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "best_epoch": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "best_val_acc": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "classes": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
        "model": _is_state_dict,
        "ema": lambda v: v is None or _is_state_dict(v),
    }
    wanted = {
        "epoch": "a whole number >= 0",
        "best_epoch": "a whole number",
        "best_val_acc": "a number",
        "classes": "a list of class names",
        "model": "a dict of tensors",
        "ema": "a dict of tensors or None",
    }
    for key, ok in checks.items():
        if key in ckpt and not ok(ckpt[key]):
            raise CheckpointError(
                f"{path}: {key} is {_short(ckpt[key])} ({type(ckpt[key]).__name__}), not "
                f"{wanted[key]}; the file is damaged or from another program"
            )
    history = ckpt["history"]
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise CheckpointError(
            f"{path}: history is {_short(history)} ({type(history).__name__}), not a list of "
            "epochs (dicts); the file is damaged or from another program"
        )
    for row in history:
        for key in ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"):
            value = row.get(key, 0)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise CheckpointError(
                    f"{path}: history has {key}={_short(value)}, not a number; the file is "
                    "damaged or was edited"
                )


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in value.items()
    )


def check_not_a_link_loop(
    path: str | os.PathLike, what: str, error: type[Exception] = CheckpointError
) -> None:
    """Raise ``error`` naming ``path`` when it is a symbolic link loop (``Path.exists`` says False
    for one, as if it were missing)."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error(
                f"{what} {path} is a symbolic link loop (a link that leads back to itself); "
                "point to the real file"
            ) from err


def _unpickling_reason(err: BaseException) -> str:
    """torch's refusal in one line: which object was refused, and its warning about arbitrary code
    execution, whole."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())
    refused = re.search(r"Unsupported global: GLOBAL \S+", text)
    parts = [refused.group(0)] if refused else []
    at = text.find("arbitrary code execution")
    if at >= 0:  # the whole sentence, and the next one when it says when to do it
        start = text.rfind(". ", 0, at) + 2 if text.rfind(". ", 0, at) >= 0 else 0
        end = text.find(".", at) + 1 or len(text)
        if text[end:].lstrip().startswith("Do it only"):
            end = text.find(".", end + 1) + 1 or len(text)
        parts.append("torch: " + text[start:end].strip())
    return "; ".join(parts) if parts else _first_line(err)


# ----------------------------------------------------------------------------- output folders


def write_in_order(
    folder: str | os.PathLike, files: list[tuple[str, Callable[[IO[bytes]], None]]]
) -> list[Path]:
    """Write ``files`` ((name, write) pairs) into ``folder`` in their order, each with
    ``atomic_write``: the last one is the set's commit point. Temporary files that a kill left for
    these names are removed first. Returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, _ in files:
        for tmp in folder.glob(f".{glob_escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
    written = []
    for name, write in files:
        atomic_write(folder / name, write)
        written.append(folder / name)
    return written


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ----------------------------------------------------------------------------- folder locks

LOCK_NAME = ".vitcifar.lock"  # in the folder; holds "PID COMMAND" of the process that writes it


class FolderLockedError(RunFolderError):
    """Another live process writes the folder; ``pid`` names it (None when it could not be read)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class FolderLock:
    """An OS lock (``fcntl.flock``, exclusive) on ``folder/.vitcifar.lock`` while a command writes
    the folder: a second writer is refused with ``FolderLockedError`` naming the holder's PID.

    The kernel releases the lock when its process dies (also by SIGKILL), so a lock file left by a
    killed process is taken over by the next one. Reentrant within a process. On release the lock
    file is removed, and so is the folder when this lock created it and it is still empty.
    """

    _held: typing.ClassVar[dict[str, list[int]]] = {}  # lock path -> [fd, depth]

    def __init__(self, folder: str | os.PathLike, command: str = "vitcifar") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._key: str | None = None
        self._made: list[Path] = []

    def acquire(self) -> FolderLock:
        import fcntl  # POSIX only; imported here so that the module imports on every platform

        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._unwritable(err) from err
        self._made = missing
        key = str(self.path.resolve())
        if key in self._held:
            self._held[key][1] += 1
            self._key = key
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                self._remove_made()
                raise self._unwritable(err) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise self._unwritable(err) from err
                raise self._refusal() from None
            try:  # a holder that released in between removed the file: lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        except OSError as err:  # e.g. a disk too full for the PID
            self.path.unlink(missing_ok=True)
            os.close(fd)
            self._remove_made()
            raise self._unwritable(err) from err
        self._held[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        if self._key is None:
            return
        entry = self._held[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[self._key]
            self.path.unlink(missing_ok=True)  # while still locked: no one locks the old file
            os.close(entry[0])
            self._remove_made()
        self._key = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _remove_made(self) -> None:
        for p in self._made:  # innermost first; stops at the first folder that is not empty
            try:
                p.rmdir()
            except OSError:
                break
        self._made = []

    def _unwritable(self, err: OSError) -> RunFolderError:
        return RunFolderError(
            f"cannot write {self.folder} ({err.strerror or _first_line(err)}); choose another --out"
        )

    def holder(self) -> tuple[int | None, str]:
        """(PID, command) written in the lock file by its holder; waits up to 1 s for a holder
        that has just taken it over from a dead one to write its PID."""
        pid, command = None, ""
        for _ in range(20):
            try:
                pid_text, _, command = self.path.read_text().strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                pid = None
            if pid is not None and _alive(pid):
                return pid, command
            time.sleep(0.05)
        return pid, command

    def _refusal(self) -> FolderLockedError:
        pid, command = self.holder()
        who = f"PID {pid}" + (f", {command}" if command else "") if pid else "PID unknown"
        stop = (
            f" or stop it (kill {pid}) if it is a leftover, e.g. a torchrun worker that "
            "outlived torchrun,"
            if pid
            else ""
        )
        return FolderLockedError(
            f"{self.folder} is in use by another vitcifar process ({who}); wait for it to end"
            f"{stop} then run again, or choose another --out",
            pid,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def hold_folder(
    folder: str | os.PathLike, *, command: str, dist: Distributed | None = None
) -> Iterator[FolderLock | None]:
    """Hold ``folder``'s ``FolderLock`` for the block. Under torchrun (``dist`` enabled) rank 0
    alone takes it, and every rank learns whether it did, so all of them stop alike (no rank
    waits in a collective for one that gave up)."""
    lock, failure, code = None, None, 0
    if dist is None or dist.is_main:
        try:
            lock = FolderLock(folder, command).acquire()
        except FolderLockedError as err:
            failure, code = err, err.pid or -1
        except RunFolderError as err:
            failure, code = err, -1
    if dist is not None and dist.enabled:
        code = dist.broadcast_int(code)
    if failure is not None:
        raise failure
    if code:
        raise FolderLockedError(
            f"{folder} is in use by another vitcifar process"
            + (f" (PID {code})" if code > 0 else "")
            + "; rank 0 could not lock it (see its message)",
            code if code > 0 else None,
        )
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


# ----------------------------------------------------------------------------- the mirror

MIRROR_RECORD = "mirror.json"  # the mirror's commit point, and the local note of what it holds
TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "rng")  # left out of the mirror's best.pt


@dataclass(frozen=True)
class MirrorPolicy:
    """When a run folder's mirror is written (besides the end of every ``train`` call).

    last.pt is copied whenever waiting one more epoch would put more than ``max_loss_s`` of
    training at risk, best.pt at most every ``best_every_s``, and the whole run replaces or
    deletes at most ``max_churn_bytes`` on the mirror (Google Drive keeps them in its Trash,
    which counts against the 15 GB free quota). When the budget cannot pay for a copy every
    ``max_loss_s`` until the end (the epochs left x this session's mean epoch time), the copies
    are spaced further apart, and one warning says how much a disconnect may now lose.
    benchmarks/drive_churn.py: a 300-epoch deit-tiny run replaces 1.48 GB with 9.6 min at risk
    at 48 s an epoch (a Colab T4), and 1.44 GB at 60 s (13 min at risk) and 90 s (19.5 min).
    """

    max_loss_s: float = 600.0  # the most training a disconnect may lose (s), budget permitting
    best_every_s: float = 7200.0  # best.pt (weights only) replaced at most this often (s)
    max_churn_bytes: float = 1.5e9  # bytes replaced or deleted on the mirror over the run
    clock: Callable[[], float] = time.monotonic  # seconds; tests pass a fake one

    def __post_init__(self) -> None:
        for name in ("max_loss_s", "best_every_s", "max_churn_bytes"):
            value = getattr(self, name)
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"MirrorPolicy.{name} must be a number >= 0, got {value!r}")


class Mirror:
    """The second copy of a run folder (module docstring): where a run survives its session.

    ``restore`` picks the newer set of the two before a run starts; ``after_commit`` copies the
    set when it is due; ``sync`` copies what the mirror does not hold yet. Every write is
    ``atomic_write``, in the fixed order last.pt, best.pt, metrics.jsonl, mirror.json.
    ``knobs`` names the settings in the budget's warning (``"max_churn_bytes"`` ->
    ``"DRIVE_TRASH_GB"`` in the notebook); by default the ``MirrorPolicy`` fields.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        policy: MirrorPolicy | None = None,
        *,
        knobs: Callable[[str], str] | None = None,
    ) -> None:
        self.folder = RunFolder(path)
        self.record = self.folder.path / MIRROR_RECORD
        self.policy = policy or MirrorPolicy()
        self.knobs = knobs or (lambda name: f"MirrorPolicy.{name}")
        self.held = {"epoch": 0, "best_epoch": -1}  # the epochs of the mirror's last.pt, best.pt
        self.local = {"epoch": 0, "best_epoch": -1}  # the same for the local folder
        self.dirty = False  # the mirror misses files of the local set that a clock won't trigger
        self.churn = 0  # bytes replaced or deleted on the mirror so far, this run (all sessions)
        self.stretched = False  # the budget's warning was given (once per call)
        self._epoch_seconds: list[float] = []
        self._t = self._last_sync = self._last_best = 0.0

    # -- before the run
    def restore(self, local: RunFolder) -> None:
        """Make ``local`` hold the newer of the two sets; refuse (nothing changed) when the two
        folders hold different runs."""
        remote = self.folder
        remote.ensure_writable()
        removed = 0  # Drive's Trash keeps these too
        for tmp in remote.path.glob(".*.tmp"):  # left by a kill during a mirror write
            removed += _size(tmp)
            tmp.unlink(missing_ok=True)
        r = load_checkpoint(remote.last) if remote.last.exists() else None
        mine = local.path / MIRROR_RECORD
        ours = load_checkpoint(local.last) if local.last.exists() else None
        if r is None:
            remote.check_new_run()
            if ours is not None and mine.exists():
                raise RunFolderError(
                    f"{remote.path} has no last.pt, but the session's copy {local.path} holds "
                    f"epochs 1-{ours['epoch']} that were mirrored there; to continue them, copy "
                    f"{local.path}'s files to {remote.path}; to start anew, delete {local.path}"
                )
            self.dirty = ours is not None  # trained before a first mirror
        else:
            if ours is not None and not _same_run(ours, r):
                raise RunFolderError(
                    f"the session's copy {local.path} holds another run than {remote.path} (their "
                    f"histories differ); delete {local.path} to continue from {remote.path}"
                )
            self.held = {"epoch": r["epoch"], "best_epoch": RunFolder._epoch_of(remote.best) or -1}
            note = _read_json(self.record)
            note = note if isinstance(note, dict) else {}
            held = {**self.held, "metrics": metrics_text(r["history"]).count("\n")}
            complete = {key: note.get(key) for key in held} == held
            self.churn = removed + _recorded_churn(note, self.held, remote)
            if ours is None or ours["epoch"] < r["epoch"]:
                log.info(
                    "%s: continuing from its mirror %s (epoch %d)",
                    local.path,
                    remote.path,
                    r["epoch"],
                )
                self._copy_to_local(local, r)
                ours = r
                if 0 < self.held["best_epoch"] < r["best_epoch"]:
                    log.warning(
                        "%s: the mirror's best.pt is from epoch %d; the best, epoch %d, was not "
                        "mirrored yet (MirrorPolicy.best_every_s); best.pt follows at the next best",
                        remote.path,
                        self.held["best_epoch"],
                        r["best_epoch"],
                    )
            self.dirty = ours["epoch"] > r["epoch"] or not complete
        if ours is not None:
            self.local = {"epoch": ours["epoch"], "best_epoch": ours.get("best_epoch", -1)}
        self._t = self._last_sync = self._last_best = self.policy.clock()

    def _copy_to_local(self, local: RunFolder, r: dict[str, Any]) -> None:
        """The mirror's best.pt (unless the local one is as new), then last.pt: the local commit
        point last, so a kill in between restores again."""
        local.path.mkdir(parents=True, exist_ok=True)
        ours_best = RunFolder._epoch_of(local.best) or -1
        if self.held["best_epoch"] > ours_best:
            atomic_write(local.best, _copy_of(self.folder.best))
        atomic_write(local.last, _copy_of(self.folder.last))
        _write_json(local.path / MIRROR_RECORD, self.held)

    # -- during the run
    def after_commit(self, local: RunFolder, ckpt: dict[str, Any]) -> None:
        """Called by ``RunFolder.commit`` after its writes: copy the set when a disconnect before
        the next commit would lose more than ``max_loss_s`` (this session's mean epoch time), or
        more than the churn budget requires (``copy_every``)."""
        now = self.policy.clock()
        self._epoch_seconds.append(now - self._t)
        self._t = now
        self.local = {"epoch": ckpt["epoch"], "best_epoch": ckpt.get("best_epoch", -1)}
        mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
        left = max(int(ckpt["train_config"]["epochs"]) - ckpt["epoch"], 0)
        if self.dirty or now - self._last_sync + mean > self.copy_every(local, left, mean, now):
            self.sync(local, now=now)

    def copy_every(self, local: RunFolder, left: int, mean: float, now: float) -> float:
        """The seconds at risk that make last.pt due: ``max_loss_s``, or, when copies that often
        until the end would replace more than the churn budget left, the shortest spacing (in
        whole epochs of ``mean`` s) whose projected churn fits; ``math.inf`` when only the final
        copy fits, or none does (the final copy is made anyway).

        The projection for the ``left`` epochs: each copy of last.pt replaces the mirror's
        last.pt and metrics.jsonl (at the run's end size) and mirror.json, the final copy
        included; best.pt is replaced at most every ``best_every_s`` and once at the end.
        Until the mirror holds a last.pt, nothing is projected: its first copy replaces nothing,
        and after it the projection knows the mirrored files' sizes.
        """
        p, mean = self.policy, max(mean, 1e-9)
        plain = max(1, int(p.max_loss_s // mean))  # epochs between copies without a budget
        remote = self.folder
        if left == 0 or p.max_churn_bytes == math.inf or not remote.last.exists():
            return p.max_loss_s
        done = max(self.local["epoch"], 1)
        metrics = _size(local.metrics) * (done + left) / done
        last = _size(remote.last) + metrics + _size(self.record)
        best = _size(remote.best) or _size(local.best)
        first = self.held["best_epoch"] < 0  # the mirror has no best.pt: its first replaces none
        due = int((left * mean + now - self._last_best) // max(p.best_every_s, 1e-9))
        bests = due + first + 1  # the copies of best.pt: when due, the first, the final
        since = round((now - self._last_sync) / mean)  # epochs since the last copy
        budget = p.max_churn_bytes - self.churn
        k = plain
        while True:
            start = max(k - since, 0)  # epochs from now to the next copy (0: this one)
            copies = 1 if start >= left else (left - start) // k + 1 + ((left - start) % k > 0)
            cost = copies * last + (min(copies, bests) - first) * best
            if cost <= budget or copies == 1:  # one copy, the final one, is made anyway
                break
            k += 1
        if k == plain:
            return p.max_loss_s
        if not self.stretched:  # once a call, not every epoch
            self.stretched = True
            knob = self.knobs("max_churn_bytes")
            gb = _size_text(p.max_churn_bytes)
            when = (
                f"every {k * mean / 60:.0f} min instead of every {p.max_loss_s / 60:.0f}, so a "
                f"disconnect may lose up to {k * mean / 60:.0f} min of training"
                if copies > 1
                else "only at the end of this call, so a disconnect may lose all training since "
                "the last copy"
            )
            log.warning(
                "%s: to replace at most %s there over the run (%s), last.pt is copied %s; "
                "raise %s to copy more often",
                remote.path, gb, knob, when, knob,
            )  # fmt: skip
        return (k + 0.5) * mean if copies > 1 else math.inf  # +0.5: due at k epochs, not k + 1

    def sync(self, local: RunFolder, *, final: bool = False, now: float | None = None) -> None:
        """Copy to the mirror what it does not hold: last.pt when behind, best.pt when changed
        and due (always when ``final``), then metrics.jsonl and the commit point."""
        new_last = self.local["epoch"] > self.held["epoch"]
        best = self.local["best_epoch"]
        changed = new_last or self.dirty or (final and best != self.held["best_epoch"])
        if not changed or not local.last.exists():
            return
        now = self.policy.clock() if now is None else now
        remote = self.folder
        if new_last:
            self.churn += _size(remote.last)  # the replaced file (Drive's Trash keeps it)
            atomic_write(remote.last, _deflated(local.last))
        due = (
            final
            or self.held["best_epoch"] < 0
            or now - self._last_best >= self.policy.best_every_s
        )
        if best > 0 and best != self.held["best_epoch"] and due and local.best.exists():
            write, epoch = _weights_only(local.best)  # its epoch: behind ``best`` after a lag
            if epoch != self.held["best_epoch"]:
                self.churn += _size(remote.best)
                atomic_write(remote.best, write)
                self.held["best_epoch"] = epoch
            self._last_best = now
        history = local.metrics.read_text() if local.metrics.exists() else ""
        self.churn += _size(remote.metrics)
        atomic_write(remote.metrics, lambda f: f.write(history.encode()))
        self.held["epoch"] = self.local["epoch"]
        self.churn += _size(self.record)
        _write_json(self.record, {**self.held, "metrics": history.count("\n"), "churn": self.churn})
        _write_json(local.path / MIRROR_RECORD, self.held)
        self.dirty, self._last_sync = False, now


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _size_text(n: float) -> str:
    """``n`` bytes as "1.50 GB", "3.2 MB" or "900 bytes"."""
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n:.0f} bytes"


def _recorded_churn(note: dict[str, Any], held: dict[str, int], remote: RunFolder) -> int:
    """The churn that mirror.json (``note``) recorded, plus what a sync killed after its record
    replaced since: last.pt or best.pt at another epoch than recorded (their sizes now stand for
    the replaced ones'). A record from before the churn was counted counts from 0."""
    churn = note.get("churn", 0)
    churn = churn if isinstance(churn, int) and not isinstance(churn, bool) else 0
    for key, path in (("epoch", remote.last), ("best_epoch", remote.best)):
        recorded = note.get(key)
        if isinstance(recorded, int) and recorded > 0 and recorded != held[key]:
            churn += _size(path)
    return churn


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """One history is the start of the other (the rows carry timings: no two runs share them)."""
    n = min(len(a["history"]), len(b["history"]))
    return a["history"][:n] == b["history"][:n]


def _copy_of(src: Path) -> Callable[[IO[bytes]], None]:
    def copy(f: IO[bytes]) -> None:
        with src.open("rb") as s:
            shutil.copyfileobj(s, f)

    return copy


def _deflated(src: Path | IO[bytes]) -> Callable[[IO[bytes]], None]:
    """The torch file ``src`` (a zip archive of stored entries) with its entries deflated:
    ``torch.load`` reads it as it is, and deit-tiny's last.pt shrinks from 64.5 to 60.0 MB."""

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(f, "w") as zout:
            for info in zin.infolist():
                entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                zout.writestr(entry, zin.read(info), zipfile.ZIP_DEFLATED, compresslevel=1)

    return write


def _weights_only(src: Path) -> tuple[Callable[[IO[bytes]], None], int]:
    """(a writer of best.pt without the optimizer, schedule, scaler and RNG states, a third of its
    size, its epoch). It evaluates, predicts and exports, but is not resumed from."""
    ckpt = {k: v for k, v in load_checkpoint(src).items() if k not in TRAINING_ONLY}
    buffer = io.BytesIO()
    torch.save({**ckpt, CHECKSUM_KEY: tensor_checksum(ckpt)}, buffer)
    buffer.seek(0)
    return _deflated(buffer), ckpt["epoch"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj).encode()))
