"""vitcifar fixtures (the generated image folder is in tests/conftest.py)."""

from __future__ import annotations

import re

import pytest

from vitcifar.model import ViTConfig

NUM_CLASSES = 4  # the colours of tests/conftest.py


@pytest.fixture
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
