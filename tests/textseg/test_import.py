"""Importing textseg has no side effects: no torch, transformers or sam2, no device chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import textseg

REPO = Path(textseg.__file__).resolve().parents[1]


def test_import_loads_no_heavy_or_optional_dependency():
    code = (
        "import sys, logging, textseg, textseg.cli, textseg.ui, textseg.pipeline, textseg.detector, "
        "textseg.segmenter, textseg.testing, textseg.device, textseg.video, textseg.video_io\n"
        "heavy = [m for m in ('torch', 'transformers', 'sam2', 'hydra', 'ipywidgets', 'PIL') if m in sys.modules]\n"
        "print(heavy, logging.getLogger().handlers)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"


def test_public_api():
    assert set(textseg.__all__) >= {
        "TextSegmenter",
        "Segmentation",
        "overlay",
        "save",
        "load",
        "decode_rle",
    }
    assert all(hasattr(textseg, name) for name in textseg.__all__)
