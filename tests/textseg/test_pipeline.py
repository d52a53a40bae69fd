"""TextSegmenter end to end on tiny random-weight models (shapes, coordinates, labels, cache,
odd images, batches), plus the box bookkeeping with a fake detector (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from textseg import PromptError, Segmentation, TextSegmenter
from textseg.detector import Detections
from textseg.errors import ImageLoadError
from textseg.testing import make_sample_image

FORCE = {"box_threshold": 0.0, "text_threshold": 0.0}  # random weights score noise


def _check(seg: Segmentation, *, h: int, w: int, phrases: tuple[str, ...]) -> None:
    n = len(seg)
    assert seg.image_size == (h, w)
    assert seg.boxes.shape == (n, 4) and seg.boxes.dtype == np.float32
    assert seg.scores.shape == (n,) and seg.scores.dtype == np.float32
    assert seg.mask_scores.shape == (n,) and seg.mask_scores.dtype == np.float32
    assert seg.masks.shape == (n, h, w) and seg.masks.dtype == bool
    assert all(label in phrases for label in seg.labels)
    assert seg.phrases == phrases
    if n:
        assert (seg.boxes[:, 0::2] >= 0).all() and (seg.boxes[:, 0::2] <= w).all()
        assert (seg.boxes[:, 1::2] >= 0).all() and (seg.boxes[:, 1::2] <= h).all()
        assert (seg.boxes[:, 2] >= seg.boxes[:, 0]).all() and (
            seg.boxes[:, 3] >= seg.boxes[:, 1]
        ).all()
        assert (np.diff(seg.scores) <= 0).all()  # best first


def test_segment_returns_consistent_shapes_and_phrase_labels(text_segmenter, sample_image):
    seg = text_segmenter.segment(sample_image, "Cat, remote.", max_objects=6, **FORCE)
    _check(seg, h=240, w=320, phrases=("cat", "remote"))
    assert len(seg) == 6
    assert seg.prompt == "cat. remote."
    assert seg.source == str(sample_image)
    assert seg.masks.any(axis=(1, 2)).all()  # random weights still paint something


def test_duplicates_are_removed_at_nms_iou(text_segmenter, sample_image):
    seg = text_segmenter.segment(sample_image, "cat, remote", nms_iou=0.3, **FORCE)
    b = seg.boxes
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    for i in range(len(b)):
        for j in range(i + 1, len(b)):
            iw = max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            ih = max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            union = area[i] + area[j] - iw * ih
            assert union == 0 or iw * ih / union <= 0.3 + 1e-5


def test_nothing_found_is_a_valid_empty_result(text_segmenter, sample_image):
    seg = text_segmenter.segment(sample_image, "cat", box_threshold=1.0)
    assert len(seg) == 0 and seg.summary() == "no objects"
    _check(seg, h=240, w=320, phrases=("cat",))
    assert len(text_segmenter.segment(sample_image, "cat", max_objects=0, **FORCE)) == 0


def test_second_prompt_reuses_the_image_embedding(text_segmenter, sample_image):
    sam = text_segmenter.segmenter
    text_segmenter.segment(sample_image, "cat", max_objects=2, **FORCE)
    before = sam.encode_count
    seg = text_segmenter.segment(sample_image, "remote, dog", max_objects=2, **FORCE)
    assert len(seg) == 2 and sam.encode_count == before  # the finder ran, the encoder did not
    text_segmenter.segment(np.asarray(seg.image)[::-1].copy(), "cat", max_objects=1, **FORCE)
    assert sam.encode_count == before + 1  # another image: encoded once more


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "I;16"])
def test_other_image_modes_are_segmented(text_segmenter, tmp_path, mode, sample_image):
    rgb = Image.open(sample_image)
    img = (
        rgb.convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    )
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    seg = text_segmenter.segment(path, "cat", max_objects=2, **FORCE)
    _check(seg, h=240, w=320, phrases=("cat",))


def test_exif_rotated_jpeg_gives_masks_of_the_displayed_image(
    text_segmenter, tmp_path, sample_image
):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    path = tmp_path / "phone.jpg"
    Image.open(sample_image).save(path, exif=exif)  # stored 320 x 240, displayed 240 x 320
    seg = text_segmenter.segment(path, "cat", max_objects=2, **FORCE)
    _check(seg, h=320, w=240, phrases=("cat",))
    assert seg.image.size == (240, 320)


def test_one_pixel_image(text_segmenter):
    seg = text_segmenter.segment(np.full((1, 1, 3), 128, np.uint8), "cat", max_objects=3, **FORCE)
    _check(seg, h=1, w=1, phrases=("cat",))


@pytest.mark.slow
def test_large_image_is_worked_small_and_returned_full_size(text_segmenter, tmp_path):
    path = make_sample_image(tmp_path / "large.jpg", height=2300, width=3100)
    seg = text_segmenter.segment(path, "cat, remote", max_objects=3, **FORCE)
    _check(seg, h=2300, w=3100, phrases=("cat", "remote"))
    assert len(seg) == 3


def test_bad_inputs_raise_clear_errors(text_segmenter, tmp_path, sample_image):
    with pytest.raises(PromptError, match="no words"):
        text_segmenter.segment(sample_image, " ,. ")
    with pytest.raises(PromptError, match="at most 256"):
        text_segmenter.segment(sample_image, ", ".join(f"thing {i}" for i in range(120)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        text_segmenter.segment(bad, "cat")
    with pytest.raises(ValueError, match=r"box_threshold must be in \[0, 1\]"):
        text_segmenter.segment(sample_image, "cat", box_threshold=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        text_segmenter.segment(sample_image, "cat", max_objects=-1)


def test_batch_skips_a_bad_image_and_writes_the_others(text_segmenter, tmp_path, sample_image):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "c.png"):
        Image.open(sample_image).save(folder / name)
    (folder / "b.jpg").write_bytes(b"")  # zero bytes
    (folder / "readme.txt").write_text("not an image, not listed")
    items = text_segmenter.segment_many(
        folder, "cat, remote", out_dir=tmp_path / "out", progress=False, max_objects=2, **FORCE
    )
    assert [i.source.rsplit("/", 1)[-1] for i in items] == ["a.jpg", "b.jpg", "c.png"]
    assert (
        items[1].segmentation is None and "b.jpg" in items[1].error and "0 bytes" in items[1].error
    )
    for item in (items[0], items[2]):
        assert item.error is None and len(item.segmentation) == 2
        assert (item.out_dir / "segmentation.json").is_file()
        assert (item.out_dir / "overlay.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]
    arrays = [np.asarray(Image.open(sample_image)), np.asarray(Image.open(sample_image))]
    same_stem = text_segmenter.segment_many(arrays, "cat", progress=False, max_objects=1, **FORCE)
    assert [len(i.segmentation) for i in same_stem] == [1, 1]


class _FixedDetector:
    """Returns fixed boxes in the pixels of whatever image it is given."""

    def __init__(self, boxes, scores, phrase_ids):
        self.boxes, self.scores, self.phrase_ids = boxes, scores, phrase_ids
        self.seen_size = None

    def check_prompt(self, prompt):
        pass

    def detect(self, image, prompt, *, box_threshold, text_threshold):
        self.seen_size = image.size
        return Detections(
            boxes=np.asarray(self.boxes, np.float32),
            scores=np.asarray(self.scores, np.float32),
            phrase_ids=np.asarray(self.phrase_ids, np.int64),
        )


class _BoxPainter:
    """Fills each box: a stand-in segmenter that makes mask placement checkable."""

    def __init__(self):
        self.image_shape = None

    def set_image(self, image):
        self.image_shape = image.shape
        return True

    def predict(self, boxes, *, output_size, multimask):
        h, w = self.image_shape[:2]
        out_h, out_w = output_size
        masks = np.zeros((len(boxes), out_h, out_w), bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            sx, sy = out_w / w, out_h / h
            masks[i, round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = True
        return masks, np.ones(len(boxes), np.float32)


def test_working_copy_boxes_are_mapped_back_to_full_size():
    det = _FixedDetector(
        [[10, 20, 110, 70], [12, 22, 108, 72], [150, 0, 250, 50]], [0.9, 0.8, 0.7], [0, 1, 0]
    )
    painter = _BoxPainter()
    ts = TextSegmenter(det, painter, max_side=250)
    seg = ts.segment(np.zeros((400, 1000, 3), np.uint8), "cat, hat")
    assert det.seen_size == (250, 100)  # the detector saw the 1/4-size copy
    assert painter.image_shape == (100, 250, 3)  # so did the segmenter
    np.testing.assert_allclose(seg.boxes, [[40, 80, 440, 280], [600, 0, 1000, 200]])
    assert seg.labels == ["cat", "cat"]  # the "hat" duplicate of box 0 lost to the higher score
    assert seg.masks.shape == (2, 400, 1000)
    assert seg.masks[0, 80:280, 40:440].all() and seg.masks[0].sum() == 200 * 400


def test_unicode_prompt_is_accepted(text_segmenter, sample_image):
    seg = text_segmenter.segment(sample_image, "Café au lait, 猫", max_objects=3, **FORCE)
    _check(seg, h=240, w=320, phrases=("café au lait", "猫"))
    assert len(seg) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_runs_with_local_autocast_only(model_dirs, sample_image):
    ts = TextSegmenter.from_pretrained(
        detector=model_dirs["detector"], segmenter=model_dirs["segmenter"], device="cuda"
    )
    assert ts.segmenter.runtime.device.type == "cuda"
    seg = ts.segment(sample_image, "cat, remote", max_objects=3, **FORCE)
    _check(seg, h=240, w=320, phrases=("cat", "remote"))
    assert not torch.is_autocast_enabled()  # no autocast leaks out of the predict calls


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["auto", "float16", "float32"])
def test_gpu_second_prompt_reuses_both_embeddings_in_each_precision(
    model_dirs, sample_image, precision
):
    """On CUDA in each precision a user can pick ("auto" is bf16 on Ampere+, float16 the T4's
    option): finite results of the documented shapes, and a second prompt on the same image
    runs neither GroundingDINO's backbone nor SAM 2's image encoder again."""
    ts = TextSegmenter.from_pretrained(
        detector=model_dirs["detector"],
        segmenter=model_dirs["segmenter"],
        device="cuda",
        precision=precision,
    )
    if precision != "auto":
        assert ts.segmenter.runtime.dtype == getattr(torch, precision)
    image = np.asarray(Image.open(sample_image).convert("RGB"))
    first = ts.segment(image, "cat, remote", max_objects=3, **FORCE)
    encodes, runs = ts.segmenter.encode_count, ts.detector.backbone_runs
    second = ts.segment(image, "skateboard", max_objects=2, **FORCE)
    assert ts.segmenter.encode_count == encodes and ts.detector.backbone_runs == runs
    _check(first, h=240, w=320, phrases=("cat", "remote"))
    _check(second, h=240, w=320, phrases=("skateboard",))
    assert len(first) == 3 and len(second) == 2
    assert np.isfinite(first.mask_scores).all() and np.isfinite(second.mask_scores).all()
    assert not torch.is_autocast_enabled()
