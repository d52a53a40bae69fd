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
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import torch

from vitcifar.config import TrainConfig, ViTConfig

__all__ = [
    "CheckpointError",
    "Mirror",
    "MirrorPolicy",
    "RunFolder",
    "RunFolderError",
    "TrainState",
    "atomic_save",
    "atomic_write",
    "config_diff",
    "load_checkpoint",
    "load_optimizer_state",
    "load_state_into",
    "rng_state",
    "set_rng_state",
    "stored_configs",
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
    """``torch.save`` ``obj`` to ``path`` atomically (see ``atomic_write``)."""
    atomic_write(path, lambda f: torch.save(obj, f))


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
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): it was never written completely; "
            "use RUN_DIR/best.pt or last.pt from a finished epoch"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a vitcifar checkpoint: it holds Python objects that are not allowed "
            f"to be loaded safely ({_first_line(err)})"
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


# ----------------------------------------------------------------------------- the mirror

MIRROR_RECORD = "mirror.json"  # the mirror's commit point, and the local note of what it holds
TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "rng")  # left out of the mirror's best.pt


@dataclass(frozen=True)
class MirrorPolicy:
    """When a run folder's mirror is written (besides the end of every ``train`` call).

    Sized for a 300-epoch deit-tiny run on a Colab T4 (about 48 s an epoch, 4 h): last.pt is
    copied whenever waiting one more epoch would put more than ``max_loss_s`` of training at risk,
    best.pt at most every ``best_every_s``; benchmarks/drive_churn.py counts the bytes this
    replaces on Drive.
    """

    max_loss_s: float = 600.0  # the most training a disconnect may lose (s)
    best_every_s: float = 7200.0  # best.pt (weights only) replaced at most this often (s)
    clock: Callable[[], float] = time.monotonic  # seconds; tests pass a fake one


class Mirror:
    """The second copy of a run folder (module docstring): where a run survives its session.

    ``restore`` picks the newer set of the two before a run starts; ``after_commit`` copies the
    set when it is due; ``sync`` copies what the mirror does not hold yet. Every write is
    ``atomic_write``, in the fixed order last.pt, best.pt, metrics.jsonl, mirror.json.
    """

    def __init__(self, path: str | os.PathLike, policy: MirrorPolicy | None = None) -> None:
        self.folder = RunFolder(path)
        self.record = self.folder.path / MIRROR_RECORD
        self.policy = policy or MirrorPolicy()
        self.held = {"epoch": 0, "best_epoch": -1}  # the epochs of the mirror's last.pt, best.pt
        self.local = {"epoch": 0, "best_epoch": -1}  # the same for the local folder
        self.dirty = False  # the mirror misses files of the local set that a clock won't trigger
        self._epoch_seconds: list[float] = []
        self._t = self._last_sync = self._last_best = 0.0

    # -- before the run
    def restore(self, local: RunFolder) -> None:
        """Make ``local`` hold the newer of the two sets; refuse (nothing changed) when the two
        folders hold different runs."""
        remote = self.folder
        remote.ensure_writable()
        for tmp in remote.path.glob(".*.tmp"):  # left by a kill during a mirror write
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
            complete = note == {**self.held, "metrics": metrics_text(r["history"]).count("\n")}
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
        the next commit would lose more than ``max_loss_s`` (this session's mean epoch time)."""
        now = self.policy.clock()
        self._epoch_seconds.append(now - self._t)
        self._t = now
        self.local = {"epoch": ckpt["epoch"], "best_epoch": ckpt.get("best_epoch", -1)}
        mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
        if self.dirty or now - self._last_sync + mean > self.policy.max_loss_s:
            self.sync(local, now=now)

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
            atomic_write(remote.last, _deflated(local.last))
        due = (
            final
            or self.held["best_epoch"] < 0
            or now - self._last_best >= self.policy.best_every_s
        )
        if best > 0 and best != self.held["best_epoch"] and due and local.best.exists():
            write, epoch = _weights_only(local.best)  # its epoch: behind ``best`` after a lag
            if epoch != self.held["best_epoch"]:
                atomic_write(remote.best, write)
                self.held["best_epoch"] = epoch
            self._last_best = now
        history = local.metrics.read_text() if local.metrics.exists() else ""
        atomic_write(remote.metrics, lambda f: f.write(history.encode()))
        self.held["epoch"] = self.local["epoch"]
        _write_json(self.record, {**self.held, "metrics": history.count("\n")})
        _write_json(local.path / MIRROR_RECORD, self.held)
        self.dirty, self._last_sync = False, now


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
    torch.save(ckpt, buffer)
    buffer.seek(0)
    return _deflated(buffer), ckpt["epoch"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj).encode()))
