"""python -m textseg VIDEO: tiny local models on a generated clip; bad videos are skipped
with one line; bad video options are usage errors."""

from __future__ import annotations

import re

import pytest

import textseg
from textseg import VideoSegmentation
from textseg.cli import main
from textseg.testing import make_sample_video

FORCE = ["--box-threshold", "0", "--text-threshold", "0"]


def _models(model_dirs):
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


@pytest.mark.slow
def test_cli_segments_a_video_and_skips_a_broken_one(model_dirs, tmp_path, capsys):
    pytest.importorskip("av")  # a dependency; the lent GPU machine lacks it
    clip = make_sample_video(tmp_path / "clip.mp4")
    broken = tmp_path / "broken.mov"
    broken.write_bytes(b"\x00\x00\x00\x14ftypqt  " + b"garbage" * 100)
    out = tmp_path / "out"
    argv = [str(clip), str(broken), "--prompt", "ball, box", "--out", str(out)]
    argv += ["--every", "4", "--max-frames", "5", "--max-objects", "1"]
    assert main(argv + FORCE + _models(model_dirs)) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{clip}: ")
    assert lines[0].endswith(f"over 5 frames -> {out / 'clip'}")
    err = [line for line in captured.err.splitlines() if ": skipped: " in line]
    assert len(err) == 1 and err[0].startswith(f"{broken}: skipped: ") and "not a video" in err[0]
    assert captured.err.strip().endswith("textseg: 1 of 2 inputs done, 1 skipped")
    assert "Traceback" not in captured.err
    assert {p.name for p in (out / "clip").iterdir()} == {
        "overlay.mp4",
        "preview.gif",
        "segmentation.json",
    }
    vseg = textseg.load(out / "clip")
    assert isinstance(vseg, VideoSegmentation) and vseg.num_frames == 5
    assert vseg.detection_frames == (0, 4) and vseg.phrases == ("ball", "box")
    assert 1 <= len(vseg.objects) <= 2 and all(o.first_frame in (0, 4) for o in vseg.objects)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--every", "0", "not at least 1"),
        ("--max-frames", "-1", "negative"),
        ("--match-iou", "2", r"not in \[0, 1\]"),
    ],
)
def test_bad_video_options_are_one_line_usage_errors(flag, value, message, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read: the arguments fail first")
    with pytest.raises(SystemExit) as info:
        main([str(clip), "--prompt", "cat", "--out", str(tmp_path / "o"), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("textseg: error:")
    assert re.search(message, err)
