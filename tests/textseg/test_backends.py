"""Every row of textseg.backends.BACKENDS, and one more defined only here, on an image, a
video, the command line and the UI's factory, with tiny random models (textseg.testing).

The extra backend, "fixed-box", is a Detector adapter that boxes fixed parts of the picture
plus one BACKENDS row, added with monkeypatch: that it runs everywhere without touching
another file is what "a new backend is one adapter plus one row" means. Its boxes are known,
so its image test also checks where they land. The "sam3" rows of the video and CLI tests
are the SAM 3 video command of issue 17 (`python -m textseg clip.mp4 --backend sam3 ...`
crashed with AttributeError: the video step knew only a Detector).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import textseg
from textseg import Segmentation, TextSegmenter, VideoSegmentation
from textseg.backends import BACKENDS, DEFAULT_BACKEND, Backend, refuse
from textseg.cli import build_parser, main
from textseg.parts import Detections, Parts
from textseg.testing import make_backend_models, make_sample_video

H, W = 240, 320  # conftest's sample image and make_sample_video's frames


class FixedBoxDetector:
    """Phrase k of the prompt -> one box, the k-th of BOXES (fractions of the picture's width
    and height), score 0.9: what it finds is known on any picture at any size."""

    BOXES = np.array([[0.1, 0.2, 0.5, 0.8], [0.55, 0.1, 0.95, 0.6]], np.float32)

    def check_prompt(self, prompt) -> None:
        if len(prompt.phrases) > len(self.BOXES):
            raise textseg.PromptError(f"fixed-box finds at most {len(self.BOXES)} phrases")

    def detect(self, image, prompt, *, box_threshold, text_threshold) -> Detections:
        n = len(prompt.phrases)
        scale = np.array([image.width, image.height] * 2, np.float32)
        return Detections(
            boxes=self.BOXES[:n] * scale,
            scores=np.full(n, 0.9, np.float32),
            phrase_ids=np.arange(n, dtype=np.int64),
        )


def _build_fixed_box(*, runtime, segmenter=None, segmenter_config=None, **unused) -> Parts:
    from textseg.segmenter import Sam2Segmenter

    sam2 = Sam2Segmenter.from_pretrained(segmenter, runtime=runtime, config=segmenter_config)
    return Parts(detector=FixedBoxDetector(), segmenter=sam2)


def _check_fixed_box(given, flag) -> None:
    whose = {"detector": "GroundingDINO's", "detector_size": "GroundingDINO's", "sam3": "SAM 3's"}
    refuse(given, flag, backend="fixed-box", options=whose)


FIXED_BOX = Backend(
    label="Fixed box (test)", build=_build_fixed_box, check=_check_fixed_box, models=("segmenter",)
)
ALL = [*BACKENDS, "fixed-box"]
FORCE = {"box_threshold": 0.0, "text_threshold": 0.0}
FLAGS = {"detector": "--detector", "segmenter": "--segmenter", "sam3": "--sam3"}


@pytest.fixture(params=ALL)
def backend(request, monkeypatch) -> str:
    """A backend name; "fixed-box" is in BACKENDS for the test's length only."""
    if request.param == "fixed-box":
        monkeypatch.setitem(BACKENDS, "fixed-box", FIXED_BOX)
    if (
        request.param == "sam3"
        and getattr(pytest.importorskip("transformers"), "Sam3Model", None) is None
    ):
        pytest.skip("this transformers has no Sam3Model (needs 5.0 or newer)")
    return request.param


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    return tmp_path_factory.mktemp("backend-models")


@pytest.fixture(scope="module")
def built() -> dict[str, TextSegmenter]:
    return {}


def _models(backend: str, model_root) -> dict:
    return make_backend_models(backend, model_root)  # made once per model, then reused


def _segmenter(backend: str, model_root, built) -> TextSegmenter:
    if backend not in built:
        built[backend] = TextSegmenter.from_pretrained(
            backend=backend, device="cpu", **_models(backend, model_root)
        )
    return built[backend]


# --------------------------------------------------------------------------- the table


def test_the_cli_the_ui_menu_and_from_pretrained_offer_the_table(monkeypatch):
    monkeypatch.setitem(BACKENDS, "fixed-box", FIXED_BOX)
    from textseg.backends import get_backend, menu

    action = next(a for a in build_parser()._actions if a.dest == "backend")
    assert action.choices == list(BACKENDS) == [DEFAULT_BACKEND, "sam3", "fixed-box"]
    assert action.default == DEFAULT_BACKEND and "Fixed box (test)" in action.help
    assert menu()[-1] == ("Fixed box (test)", "fixed-box")
    assert get_backend("fixed-box") is FIXED_BOX
    with pytest.raises(ValueError, match="is not one of groundingdino\\+sam2, sam3, fixed-box"):
        TextSegmenter.from_pretrained(backend="nope")
    with pytest.raises(ValueError, match="detector= is GroundingDINO's; backend 'fixed-box'"):
        TextSegmenter.from_pretrained(backend="fixed-box", detector="x")


def test_the_cli_refuses_what_a_new_backend_does_not_use(
    monkeypatch, sample_image, tmp_path, capsys
):
    monkeypatch.setitem(BACKENDS, "fixed-box", FIXED_BOX)
    argv = [str(sample_image), "--prompt", "cat", "--out", str(tmp_path), "--backend", "fixed-box"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--sam3", "facebook/sam3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("--sam3 is SAM 3's; backend 'fixed-box' does not use it (see --help)")


# --------------------------------------------------------------------------- every backend


@pytest.mark.slow
def test_every_backend_segments_an_image(backend, model_root, built, sample_image):
    ts = _segmenter(backend, model_root, built)
    assert ts.backend == backend
    seg = ts.segment(sample_image, "cat, remote", max_objects=3, **FORCE)
    assert isinstance(seg, Segmentation) and 1 <= len(seg) <= 3
    assert seg.masks.shape == (len(seg), H, W) and seg.masks.dtype == bool
    assert set(seg.labels) <= {"cat", "remote"} and seg.kinds == ["text"] * len(seg)
    assert (seg.boxes >= 0).all() and (seg.boxes[:, [0, 2]] <= W).all()
    assert (seg.boxes[:, [1, 3]] <= H).all()
    if backend == "fixed-box":  # its boxes are known: back in the image's pixels, in order
        assert seg.labels == ["cat", "remote"]
        np.testing.assert_allclose(seg.boxes, FixedBoxDetector.BOXES * [W, H, W, H], atol=1e-3)


@pytest.mark.slow
def test_every_backend_segments_a_video(backend, model_root, built, tmp_path):
    frames = make_sample_video(tmp_path / "frames")  # a folder of PNG frames: no PyAV needed
    ts = _segmenter(backend, model_root, built)
    vseg = ts.segment_video(
        frames, "cat", every=2, max_frames=4, fps=8, max_objects=1, progress=False, **FORCE
    )
    assert isinstance(vseg, VideoSegmentation)
    assert vseg.num_frames == 4 and vseg.image_size == (H, W) and vseg.detection_frames == (0, 2)
    assert vseg.objects and vseg.objects[0].first_frame == 0
    assert all(o.label == "cat" and o.first_frame in (0, 2) for o in vseg.objects)
    for f in range(4):
        assert all(vseg.mask(f, i).shape == (H, W) for i in vseg.ids(f))


@pytest.mark.slow
def test_every_backend_through_the_cli_on_an_image_and_a_video(
    backend, model_root, sample_image, tmp_path, capsys
):
    pytest.importorskip("av")  # the clip is an MP4 (PyAV, a dependency)
    clip = make_sample_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    flags = [v for k, p in _models(backend, model_root).items() for v in (FLAGS[k], str(p))]
    argv = [str(sample_image), str(clip), "--prompt", "cat", "--backend", backend,
            "--out", str(out), "--every", "4", "--max-frames", "5", "--max-objects", "1",
            "--box-threshold", "0", "--text-threshold", "0", "--device", "cpu", *flags]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and printed[1].endswith(f"over 5 frames -> {out / 'clip'}")
    data = json.loads((out / sample_image.stem / "segmentation.json").read_text())
    assert len(data["objects"]) == 1 and data["objects"][0]["label"] == "cat"
    vseg = textseg.load(out / "clip")
    assert isinstance(vseg, VideoSegmentation) and vseg.num_frames == 5
    assert vseg.detection_frames == (0, 4) and vseg.objects
    assert {p.name for p in (out / "clip").iterdir()} == {
        "overlay.mp4",
        "preview.gif",
        "segmentation.json",
    }


@pytest.mark.slow
def test_every_backend_through_the_ui_factory(backend, model_root, built, sample_image):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("ipyevents")
    from textseg.images import load_image
    from textseg.ui import build_app, run

    asked = []

    def factory(backend: str = DEFAULT_BACKEND) -> TextSegmenter:
        asked.append(backend)
        return _segmenter(backend, model_root, built)

    app = build_app(factory)
    assert backend in [name for _, name in app.backend.options]
    app.backend.value = backend  # the menu offers it: read from the table
    app.picture, app.name = load_image(sample_image), sample_image.name
    app.prompt.value = "cat"
    app.box_threshold.value = app.text_threshold.value = 0.0
    run(app)
    assert asked == [backend] and app.segmenters[backend].backend == backend
    assert isinstance(app.last, Segmentation) and len(app.last) >= 1, app.status.value
    assert app.last.labels[0] == "cat" and app.last.masks.shape[1:] == (H, W)
