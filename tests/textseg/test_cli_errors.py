"""The last textseg tracebacks, each now one line with its documented exit status (CLI in a
subprocess, as users run it): boxes and points that fit no image (2, before any image is
read), symlink loops (2), a read-only --out for a video (2), a full disk (1, one line per
input, no folder with masks and no JSON); images of extreme aspect ratio are padded for
GroundingDINO and segmented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import textseg
from textseg.cli import main
from textseg.errors import PromptError
from textseg.testing import make_sample_video

REPO = Path(textseg.__file__).resolve().parents[1]
FORCE = ["--box-threshold", "0", "--text-threshold", "0"]


def _models(model_dirs):
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


def _env():
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _cli(*argv: str, wrap: str | None = None) -> subprocess.CompletedProcess:
    """`python -m textseg ARGV`; with `wrap`, inside `sh -c` after that shell command."""
    command = [sys.executable, "-m", "textseg", *argv]
    if wrap is not None:
        quoted = " ".join(f"'{a}'" for a in command)
        command = ["unshare", "-rm", "sh", "-c", f"{wrap} && {quoted}; echo rc=$?; {LIST}"]
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)


LIST = 'find "$OUT" -mindepth 1 | sort'


def _one_line(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d"
    done = subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True)
    return done.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _namespaces_work(), reason="needs `unshare -rm` to mount a small or read-only tmpfs"
)


@pytest.fixture
def broken(tmp_path) -> Path:
    """An image that cannot be read: a check made per image would skip it with exit 1."""
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--box", "50,40,10,10"], "has no area: give x0 < x1 and y0 < y1"),  # inverted
        (["--box", "10,10,10,40"], "has no area"),  # zero width
        (["--box", "nan,0,20,20"], "not a finite number"),
        (["--box=-30,-30,-5,40"], "left of or above every image"),
        (["--point", "nan,4"], "not a finite number"),
        (["--point=-3,4"], "outside every image"),
        (["--point", "5,5,0", "--point", "9,9,0"], "only negative points"),
    ],
)
def test_box_and_point_mistakes_are_one_line_up_front(flags, message, broken, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(broken), *flags, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("textseg: error:") and message in err and "broken.jpg" not in err
    assert not (tmp_path / "o").exists()  # nothing read, nothing written


def test_box_mistake_in_a_subprocess_is_one_line_with_status_2(broken, tmp_path):
    err = _one_line(_cli(str(broken), "--box", "50,40,10,10", "--out", str(tmp_path / "o")), 2)
    assert err == (
        "textseg: error: argument --box: '50,40,10,10' has no area: give x0 < x1 and y0 < y1 "
        "(pixels, XYXY) (see --help)"
    )


@pytest.mark.parametrize(
    ("boxes", "points", "labels", "message"),
    [
        ([(50, 40, 10, 10)], None, None, "has no area"),
        ([(0, 0, float("nan"), 5)], None, None, "finite"),
        (None, [(5, 5), (9, 9)], [0, 0], "only negative points"),
        (None, [(-1, 5)], None, "outside"),
    ],
)
def test_api_batch_checks_image_independent_prompts_before_any_image(
    text_segmenter, broken, boxes, points, labels, message
):
    with pytest.raises(PromptError, match=message):
        text_segmenter.segment_many(
            [broken], None, boxes=boxes, points=points, point_labels=labels, progress=False
        )


def test_symlink_loops_are_one_line_with_status_2(sample_image, tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    err = _one_line(_cli(str(loop), "--prompt", "cat", "--out", str(tmp_path / "o")), 2)
    assert "loop.jpg: is a symlink loop" in err
    out = tmp_path / "outloop"
    out.symlink_to(out)
    for target in (out, out / "deeper"):
        err = _one_line(_cli(str(sample_image), "--prompt", "cat", "--out", str(target)), 2)
        assert f"--out {target}: {out} is a symlink loop" in err


@needs_mounts
def test_video_with_a_read_only_out_is_one_line_with_status_2(model_dirs, tmp_path):
    pytest.importorskip("av")
    clip = make_sample_video(tmp_path / "clip.mp4")
    out = tmp_path / "ro"
    out.mkdir()
    os.environ["OUT"] = str(out)
    try:
        for target in (out, out / "sub"):
            argv = [str(clip), "--prompt", "ball", "--out", str(target), *_models(model_dirs)]
            done = _cli(*argv, wrap=f"mount -t tmpfs -o ro tmpfs '{out}'")
            assert done.stdout.strip() == "rc=2", done.stdout  # and the read-only folder is empty
            err = done.stderr.strip()
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert f"--out {target}: " in err and "Read-only file system" in err
    finally:
        del os.environ["OUT"]


@needs_mounts
@pytest.mark.slow
def test_full_disk_is_one_line_per_input_and_leaves_no_half_folder(model_dirs, tmp_path):
    """A 60 KB tmpfs: the masks fit, the overlay does not. Each image and the video get one
    `skipped:` line, the exit status is 1, and no folder is left behind."""
    pytest.importorskip("av")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, size in (("a.jpg", (160, 120)), ("b.jpg", (150, 100))):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), np.uint8)).save(
            folder / name
        )
    clip = make_sample_video(tmp_path / "clip.mp4")
    out = tmp_path / "full"
    out.mkdir()
    os.environ["OUT"] = str(out)
    try:
        argv = [str(folder), str(clip), "--prompt", "cat", "--out", str(out), "--max-frames", "3"]
        done = _cli(
            *argv, *FORCE, *_models(model_dirs), wrap=f"mount -t tmpfs -o size=60k tmpfs '{out}'"
        )
    finally:
        del os.environ["OUT"]
    assert done.stdout.strip().splitlines() == ["rc=1"], done.stdout  # `find` lists nothing
    lines = [line for line in done.stderr.splitlines() if not line.startswith(("decode", "track"))]
    lines = [line.split("\r")[-1] for line in lines if line.split("\r")[-1].strip()]
    assert "Traceback" not in done.stderr
    skipped = [line for line in lines if ": skipped: " in line]
    assert len(skipped) == 3 and all("No space left on device" in line for line in skipped), lines
    assert lines[-1] == "textseg: 0 of 3 inputs done, 3 skipped"


@pytest.mark.parametrize("size", [(10, 10000), (10000, 10)])  # (height, width)
def test_extreme_aspect_ratios_are_padded_for_the_finder(size, text_segmenter, tmp_path):
    from textseg.detector import MIN_INPUT_SIDE, _pad_to_aspect
    from textseg.prompt import parse_prompt

    h, w = size
    pixels = np.random.default_rng(1).integers(0, 255, (h, w, 3), np.uint8)
    image = Image.fromarray(pixels)
    detector = text_segmenter.detector
    padded, (dx, dy) = _pad_to_aspect(image, longest=detector._longest_edge(None))
    assert min(padded.size) > min(w, h) and max(padded.size) == max(w, h)
    array = np.array(padded)
    assert (array[dy : dy + h, dx : dx + w] == pixels).all()  # the image, centred
    assert array.sum() == pixels.astype(np.int64).sum()  # and black around it
    seen = detector.processor.image_processor(
        images=array, return_tensors="pt", input_data_format="channels_last"
    )
    assert min(seen["pixel_values"].shape[-2:]) >= MIN_INPUT_SIDE  # what GroundingDINO sees

    prompt = parse_prompt("cat, remote")
    got = detector.detect(image, prompt, box_threshold=0.0, text_threshold=0.0)
    on_padded = detector.detect(padded, prompt, box_threshold=0.0, text_threshold=0.0)
    boxes = on_padded.boxes - np.array([dx, dy, dx, dy], np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    assert not keep.all()  # boxes only on the padding are dropped
    np.testing.assert_array_equal(got.boxes, boxes[keep])
    np.testing.assert_array_equal(got.scores, on_padded.scores[keep])
    seg = text_segmenter.segment(
        image, "cat", boxes=[(0, 0, w, h)], box_threshold=0.0, text_threshold=0.0
    )
    assert seg.masks.shape[1:] == (h, w) and seg.labels[0] == "box 1"


@pytest.mark.slow
def test_cli_segments_extreme_aspect_ratios(model_dirs, tmp_path):
    paths = []
    for name, (h, w) in (("wide.png", (10, 10000)), ("tall.png", (10000, 10))):
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "out"
    done = _cli(*paths, "--prompt", "cat", "--out", str(out), *FORCE, *_models(model_dirs))
    assert done.returncode == 0 and "skipped" not in done.stderr, done.stderr
    assert [line.rsplit(" -> ", 1)[1] for line in done.stdout.splitlines()] == [
        str(out / "wide"), str(out / "tall"),
    ]  # fmt: skip
    assert textseg.load(out / "wide").image_size == (10, 10000)
    assert textseg.load(out / "tall").image_size == (10000, 10)
