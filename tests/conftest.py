"""Fixtures for every test folder: a small generated ImageFolder data set that a tiny ViT can learn."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One of `pytest -n N`'s workers (CI runs two on two cores): one torch thread each, set
    # before torch is imported and inherited by the processes the tests start, so the workers
    # share the cores instead of oversubscribing them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image

COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 60, 210),
    "yellow": (220, 210, 40),
}


def make_image_folder(
    root: Path, *, n_train: int = 48, n_test: int = 16, size: int = 32, seed: int = 0
) -> Path:
    """root/{train,test}/<colour>/<i>.png: noisy images of one dominant colour per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for name, rgb in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.normal(0, 35, (size, size, 3))
                img = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("colours"))


def pytest_terminal_summary(terminalreporter):
    """Say in the log which browser tests ran and passed (pytest's summary lists only skips and
    failures, so a CI log would not show that the real-browser test ran)."""
    passed = [r.nodeid for r in terminalreporter.stats.get("passed", []) if "browser" in r.keywords]
    if passed:
        terminalreporter.write_line(f"browser tests passed ({len(passed)}): {', '.join(passed)}")
