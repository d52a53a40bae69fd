"""python -m textseg: outputs on tiny local models, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import textseg
from textseg.cli import main

FORCE = ["--box-threshold", "0", "--text-threshold", "0"]
REPO = Path(textseg.__file__).resolve().parents[1]


def _models(model_dirs):
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


def _env():
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.mark.slow
def test_cli_writes_overlay_masks_and_json(model_dirs, sample_image, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(sample_image), "--prompt", "cat, remote", "--out", str(out), "--max-objects", "3"]
    assert main(argv + FORCE + _models(model_dirs)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{sample_image}: 3 objects:")
    folder = out / sample_image.stem
    data = json.loads((folder / "segmentation.json").read_text())
    assert len(data["objects"]) == 3
    assert {o["label"] for o in data["objects"]} <= {"cat", "remote"}
    assert Image.open(folder / "overlay.png").size == (320, 240)
    masks = sorted(folder.glob("mask_*.png"))
    assert len(masks) == 3 and all(Image.open(m).size == (320, 240) for m in masks)


@pytest.mark.slow
def test_cli_skips_a_bad_image_and_keeps_going(model_dirs, sample_image, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(sample_image).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    argv = [str(folder), "--prompt", "cat", "--out", str(tmp_path / "out"), "--max-objects", "1"]
    assert main(argv + FORCE + _models(model_dirs)) == 1
    captured = capsys.readouterr()
    assert "good.png: 1 object: 1 cat" in captured.out
    assert "broken.jpg: skipped:" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "good" / "segmentation.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IMG", "--out", "OUT"], "give --prompt, --box or --point"),
        (["IMG", "--prompt", "cat", "--out", "OUT", "--box-threshold", "1.5"], r"not in \[0, 1\]"),
        (["IMG", "--prompt", "cat", "--out", "OUT", "--text-threshold", "x"], "not a number"),
        (["missing.jpg", "--prompt", "cat", "--out", "OUT"], "no such file or folder"),
        (["IMG", "--prompt", " , . ", "--out", "OUT"], "no words"),
        (["IMG", "--prompt", "cat", "--out", "OUT", "--device", "tpu"], "invalid choice"),
        (["IMG", "--prompt", "cat", "--out", "OUT", "--detector", "./nowhere/dino"], "--detector"),
        (["IMG", "--prompt", "cat", "--out", "OUT", "--max-objects", "-2"], "negative"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args, message, sample_image, tmp_path, capsys):
    argv = [
        str(sample_image) if a == "IMG" else str(tmp_path / "o") if a == "OUT" else a for a in args
    ]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("textseg: error:")
    assert re.search(message, err)


def test_prompt_too_long_for_the_model_is_a_usage_error(model_dirs, sample_image, tmp_path, capsys):
    prompt = ", ".join(f"thing {i}" for i in range(120))
    with pytest.raises(SystemExit) as info:
        main([str(sample_image), "--prompt", prompt, "--out", str(tmp_path)] + _models(model_dirs))
    assert info.value.code == 2
    assert "at most 256" in capsys.readouterr().err


def test_model_that_cannot_load_is_one_line(sample_image, tmp_path, model_dirs, capsys):
    empty = tmp_path / "sam"
    empty.mkdir()
    argv = [str(sample_image), "--prompt", "cat", "--out", str(tmp_path / "o")]
    argv += ["--detector", str(model_dirs["detector"]), "--segmenter", str(empty)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.yaml and model.pt" in err


def test_python_dash_m_reports_usage_errors_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "textseg", str(tmp_path / "none.jpg"), "--prompt", "cat", "--out", str(tmp_path)],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"textseg: error: {tmp_path / 'none.jpg'}: no such file or folder (see --help)"
    )
