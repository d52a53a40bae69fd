"""vitcifar fixtures (the generated image folder is in tests/conftest.py)."""

from __future__ import annotations

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
