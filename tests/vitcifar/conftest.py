"""vitcifar fixtures (the generated image folder is in tests/conftest.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from vitcifar.checkpoint import load_checkpoint
from vitcifar.data import AugmentConfig, Splits, load_splits
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig

NUM_CLASSES = 4  # the colours of tests/conftest.py


@pytest.fixture(scope="session")
def tiny_cfg() -> ViTConfig:
    return ViTConfig(
        patch_size=8,
        dim=32,
        depth=2,
        heads=2,
        num_classes=NUM_CLASSES,
        dropout=0.0,
        emb_dropout=0.0,
    )


def _tiny_train_args(data, out, *extra: str) -> list[str]:
    """``vitcifar train`` arguments for a one-epoch CPU run on 32 images of the image folder."""
    return [
        "train",
        "--data",
        str(data),
        "--subset",
        "32",
        "--val-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


@pytest.fixture
def tiny_train_args():
    """``tiny_train_args(data, out, *extra)``: the CLI arguments of a tiny one-epoch run."""
    return _tiny_train_args


def _run_cli(*args: str, cwd=None, timeout: float = 300):
    """``python -m vitcifar ARGS`` in a subprocess, as a user runs it."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "vitcifar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


_PROGRESS = re.compile(r"\d+/\d+ \[[^\]]*\]$|it/s\]$")  # a tqdm bar's tail


def _one_error_line(done, code: int = 2) -> str:
    """The one error line on stderr of a finished ``run_cli`` (progress bars, e.g. evaluate's
    test-set decoding, aside), after checking the exit status and that no traceback came."""
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not _PROGRESS.search(ln)]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


@pytest.fixture
def run_cli():
    """``run_cli(*args, cwd=None, timeout=300)``: the CLI in a subprocess."""
    return _run_cli


@pytest.fixture
def one_error_line():
    """``one_error_line(done, code=2)``: the single error line of a CLI run."""
    return _one_error_line


# ----------------------------------------------------------------------------- run folders
# Shared by test_run_folder.py and test_mirror.py (test files cannot import each other under
# --import-mode=importlib, so they get these through the ``kit`` fixture).


@pytest.fixture(scope="session")
def splits(image_folder) -> Splits:
    """64 images of the image folder, 16 of them held out for validation."""
    return load_splits(str(image_folder), val_size=16, subset=64, progress=False)


class RunKit:
    """Helpers of the run-folder tests: a kill that no ``except Exception`` catches, a tiny CPU
    recipe, and what a finished run folder holds, compared bit for bit."""

    TIMING = ("seconds", "train_seconds", "images_per_s")  # differ between two runs

    class Killed(BaseException):
        """Stands for SIGKILL: not an Exception, so no ``except Exception`` in the code catches it."""

    @classmethod
    def dying_at(cls, n: int, mode: str, write: Callable) -> Callable:
        """``write`` (``checkpoint.atomic_write``) that raises ``Killed`` at its ``n``-th call:
        ``mode`` "mid" leaves a partial temporary file and not the new file, "after" the file."""
        count = 0

        def dying(path: Path, fn: Callable) -> None:
            nonlocal count
            count += 1
            if count == n:
                if mode == "mid":  # killed while writing: a partial temporary file stays behind
                    (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"partial")
                if mode == "after":
                    write(path, fn)
                raise cls.Killed(f"write {n} ({path}, {mode})")
            write(path, fn)

        return dying

    @staticmethod
    def cfg(**kw: Any) -> TrainConfig:
        base = dict(
            epochs=2,
            batch_size=16,
            lr=3e-3,
            warmup_frac=0.1,
            device="cpu",
            num_workers=0,
            augment=AugmentConfig(randaug_ops=0),  # Mixup/CutMix stay: draws that must resume
        )
        return TrainConfig(**{**base, **kw})

    @classmethod
    def without_timing(cls, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in cls.TIMING} for row in history]

    @classmethod
    def run_files(cls, folder: Path, *, listing: bool = True) -> dict[str, Any]:
        """What a finished run leaves, timings taken out (``listing``: with the file names)."""
        last, best = load_checkpoint(folder / "last.pt"), load_checkpoint(folder / "best.pt")
        metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        files = {
            "last_epoch": last["epoch"],
            "best_epoch": (last["best_epoch"], best["epoch"]),
            "last_model": last["model"],
            "best_model": best["model"],
            "adam": {i: s["exp_avg"] for i, s in last["optimizer"]["state"].items()},
            "history": cls.without_timing(last["history"]),
            "metrics": cls.without_timing(metrics),
        }
        if listing:
            files["files"] = sorted(p.name for p in folder.iterdir())
        return files

    @staticmethod
    def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
        """Two ``run_files`` results are equal, tensors to the bit."""
        assert a.keys() == b.keys()
        for key in a:
            if (
                isinstance(a[key], dict)
                and a[key]
                and isinstance(next(iter(a[key].values())), torch.Tensor)
            ):
                assert a[key].keys() == b[key].keys(), key
                for k in a[key]:
                    assert torch.equal(a[key][k], b[key][k]), (key, k)
            else:
                assert a[key] == b[key], key


@pytest.fixture(scope="session")
def kit() -> type[RunKit]:
    """``RunKit``: ``kit.Killed``, ``kit.dying_at``, ``kit.cfg(**kw)``, ``kit.run_files(folder)``,
    ``kit.assert_same``."""
    return RunKit
