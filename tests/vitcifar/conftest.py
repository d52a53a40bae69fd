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
