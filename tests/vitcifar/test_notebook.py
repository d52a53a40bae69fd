"""Execute notebooks/q1_vit.ipynb headless on a generated data set with tiny settings."""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # a skip, not a collection error, where it is missing

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "q1_vit.ipynb"


def with_parameters(nb, **params):
    """Insert an 'injected-parameters' cell after the cell tagged 'parameters' (papermill's convention)."""
    idx = next(
        i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(
        idx + 1, nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    )
    return nb


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_q1_runs_headless_and_writes_metrics_and_figures(image_folder, tmp_path):
    NotebookClient = pytest.importorskip("nbclient").NotebookClient
    nb = with_parameters(
        nbformat.read(NOTEBOOK, as_version=4),
        DATA=str(image_folder),
        EPOCHS=1,
        BATCH_SIZE=16,
        SUBSET=32,
        VAL_SIZE=8,
        DEVICE="cpu",
        NUM_WORKERS=0,
        RUN_NAME="nbrun",
        RUNS_FOLDER=str(tmp_path),
        PROGRESS=False,
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    run = tmp_path / "nbrun"
    metrics = json.loads((run / "metrics.json").read_text())
    cm = metrics["confusion_matrix"]
    assert sum(map(sum, cm)) == 64
    assert metrics["test_accuracy"] == pytest.approx(sum(cm[i][i] for i in range(len(cm))) / 64)
    for name in (
        "best.pt",
        "last.pt",
        "confusion.png",
        "curves.png",
        "misclassified.png",
        "attention.png",
    ):
        assert (run / name).stat().st_size > 0
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert (
        len(images) == 4
    )  # curves, confusion matrix, misclassified grid, attention maps shown inline
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "test accuracy" in text and "32 train / 8 val / 64 test images" in text
    assert ", 1 epoch, batch 16" in text and 'device: CPU (DEVICE = "cpu")' in text
    assert text.count("  predicted ") == 8  # the "use your model" cell, on 8 test images
