"""Shared fixtures: tiny random-weight GroundingDINO and SAM 2 built once per session into
a temporary folder with textseg.testing, and loaded through the same code users call."""

from __future__ import annotations

from pathlib import Path

import pytest

from textseg.testing import make_grounding_dino, make_sam2, make_sample_image


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "detector": make_grounding_dino(root / "grounding-dino-test", size="test"),
        "segmenter": make_sam2(root / "sam2-test", size="test"),
    }


@pytest.fixture(scope="session")
def mm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MM-GroundingDINO (transformers' own MMGroundingDino* classes)."""
    return make_grounding_dino(
        tmp_path_factory.mktemp("models") / "mm-grounding-dino-test", family="mm-grounding-dino"
    )


@pytest.fixture(scope="session")
def runtime():
    from textseg.device import resolve_runtime

    return resolve_runtime("cpu")


@pytest.fixture(scope="session")
def text_segmenter(model_dirs):
    from textseg import TextSegmenter

    return TextSegmenter.from_pretrained(
        detector=model_dirs["detector"], segmenter=model_dirs["segmenter"], device="cpu"
    )


@pytest.fixture(scope="session")
def sample_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_image(
        tmp_path_factory.mktemp("images") / "street.jpg", height=240, width=320
    )
