"""notebooks/q2_dino_sam.ipynb: committed clean, and executed headless on tiny local models."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import textseg

nbformat = pytest.importorskip("nbformat")  # a skip, not a collection error, where it is missing

REPO = Path(textseg.__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "q2_dino_sam.ipynb"


def _parameters_index(nb) -> int:
    tagged = [
        i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    params = nb.cells[_parameters_index(nb)].source
    for name in (
        "DETECTOR",
        "SEGMENTER",
        "DEVICE",
        "PROMPT",
        "BOX_THRESHOLD",
        "TEXT_THRESHOLD",
        "IMAGE",
        "VIDEO",
        "VIDEO_PROMPT",
        "EVERY",
    ):
        assert f"{name} =" in params
    setup = "\n".join(c.source for c in nb.cells[: _parameters_index(nb)] if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in setup and "REPO_URL" in setup
    assert "SAM2_BUILD_CUDA" in setup and "--no-build-isolation" in setup


@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_runs_headless_with_tiny_local_models(
    model_dirs, sample_image, tmp_path, monkeypatch
):
    NotebookClient = pytest.importorskip("nbclient").NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    out_dir = tmp_path / "out"
    overrides = "\n".join(
        [
            f"DETECTOR = {str(model_dirs['detector'])!r}",
            f"SEGMENTER = {str(model_dirs['segmenter'])!r}",
            'DEVICE = "cpu"',
            "BOX_THRESHOLD = 0.0",
            "TEXT_THRESHOLD = 0.0",
            "MAX_OBJECTS = 3",
            f"IMAGE = {str(sample_image)!r}",
            f"OUT_DIR = {str(out_dir)!r}",
            "SAMPLE_FRAMES = 6",
        ]
    )
    # papermill's convention: the injected cell goes right after the tagged one
    injected = nbformat.v4.new_code_cell(overrides, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(_parameters_index(nb) + 1, injected)
    # the kernel must import this checkout's textseg even when it is not pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the overlay was not shown"
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), (
        "no UI"
    )
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "3 objects" in text
    boxes = re.findall(r"  box (.*)", text)  # printed rounded, not as 159.3000030517578
    assert len(boxes) == 3 and all(re.fullmatch(r"\d+\.\d(, \d+\.\d){3}", b) for b in boxes), boxes
    folder = out_dir / sample_image.stem
    assert (folder / "overlay.png").is_file() and (folder / "segmentation.json").is_file()
    assert len(list(folder.glob("mask_*.png"))) == 3
    # the video section: a generated 6-frame clip tracked, its files written and shown
    assert "sample_clip.mp4: " in text and "over 6 frames" in text
    clip_dir = out_dir / "sample_clip"
    assert {p.name for p in clip_dir.iterdir()} == {
        "overlay.mp4",
        "preview.gif",
        "segmentation.json",
    }
    assert textseg.load(clip_dir).num_frames == 6
    assert any("image/gif" in o.get("data", {}) for o in outputs), "the preview was not shown"
