"""Overlay drawing and the saved files (PNG masks, JSON with COCO RLE) and their round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from textseg import Segmentation, decode_rle, load, overlay, save
from textseg.draw import _text_color, color_for


def _segmentation(h=60, w=80, n=3, image=None) -> Segmentation:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, h, w), bool)
    boxes = []
    for i in range(n):
        x0, y0 = 5 + 20 * i, 5 + 10 * i
        masks[i, y0 : y0 + 15, x0 : x0 + 18] = True
        masks[i] |= rng.random((h, w)) < 0.01
        boxes.append([x0, y0, x0 + 18, y0 + 15])
    labels = ["cat", "remote", "cat"][:n]
    return Segmentation(
        boxes=np.array(boxes, np.float32).reshape(n, 4),
        scores=np.linspace(0.9, 0.5, n),
        labels=labels,
        masks=masks,
        mask_scores=np.full(n, 0.75),
        image_size=(h, w),
        prompt="cat. remote.",
        phrases=("cat", "remote"),
        image=image,
    )


@pytest.mark.parametrize("background", [0, 255])
def test_overlay_tints_masks_and_draws_tags_on_dark_and_light_images(background):
    image = Image.new("RGB", (80, 60), (background,) * 3)
    seg = _segmentation()
    out = overlay(image, seg)
    assert out.size == (80, 60) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    inside = arr[19, 14]  # inside mask 0, below its tag, inside its box outline
    expected = np.round(background * 0.55 + np.array(color_for(0)) * 0.45)
    np.testing.assert_allclose(inside, expected, atol=1)
    assert (arr[55, 75] == background).all()  # untouched far corner
    assert (np.abs(arr - background).sum(axis=2) > 0).mean() > 0.1


def test_tag_text_contrasts_with_its_background():
    assert _text_color((255, 215, 0)) == (0, 0, 0)  # yellow → black text
    assert _text_color((31, 119, 180)) == (255, 255, 255)  # blue → white text
    assert len({color_for(i) for i in range(12)}) == 12


def test_overlay_refuses_an_image_of_another_size():
    with pytest.raises(ValueError, match="was made for 60x80"):
        overlay(Image.new("RGB", (10, 10)), _segmentation())


def test_save_writes_overlay_masks_and_json_that_round_trip(tmp_path):
    image = Image.new("RGB", (80, 60), (30, 60, 90))
    seg = _segmentation(image=image)
    files = save(seg, tmp_path / "out")
    assert Image.open(files.overlay).size == (80, 60)
    assert [p.name for p in files.masks] == [
        "mask_00_cat.png",
        "mask_01_remote.png",
        "mask_02_cat.png",
    ]
    for i, path in enumerate(files.masks):
        png = np.asarray(Image.open(path))
        assert png.shape == (60, 80) and set(np.unique(png)) <= {0, 255}
        np.testing.assert_array_equal(png == 255, seg.masks[i])
    data = json.loads(files.json.read_text())
    assert data["prompt"] == "cat. remote." and data["image"] == {"height": 60, "width": 80}
    obj = data["objects"][1]
    assert obj["label"] == "remote" and obj["box_xyxy"] == [25.0, 15.0, 43.0, 30.0]
    assert obj["score"] == pytest.approx(0.7) and obj["mask_score"] == pytest.approx(0.75)
    np.testing.assert_array_equal(decode_rle(obj["mask_rle"]), seg.masks[1])
    back = load(files.json.parent)
    np.testing.assert_array_equal(back.masks, seg.masks)
    np.testing.assert_allclose(back.boxes, seg.boxes)
    assert back.labels == seg.labels and back.image_size == seg.image_size


def test_saving_an_empty_result(tmp_path):
    seg = Segmentation.empty(image_size=(5, 7), prompt="cat.", phrases=("cat",))
    files = save(seg, tmp_path, image=np.zeros((5, 7, 3), np.uint8))
    assert files.masks == [] and json.loads(files.json.read_text())["objects"] == []
    assert len(load(files.json)) == 0
    with pytest.raises(ValueError, match="image="):
        save(seg, tmp_path)


def test_segmentation_checks_its_shapes_and_labels():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        Segmentation(boxes=np.zeros((1, 4)), scores=[1], labels=["cat"], masks=np.zeros((1, 5, 5)),
                     mask_scores=[1], image_size=(5, 6), prompt="cat.")  # fmt: skip
    with pytest.raises(ValueError, match="among phrases"):
        Segmentation(boxes=np.zeros((1, 4)), scores=[1], labels=["dog"], masks=np.zeros((1, 5, 6)),
                     mask_scores=[1], image_size=(5, 6), prompt="cat.", phrases=("cat",))  # fmt: skip


def test_the_one_atomic_writer_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    """export.atomic_path, what every JSON, MP4 and GIF textseg writes goes through: the
    old file stays whole when the writer fails; the new one arrives whole, flushed first."""
    import os

    from textseg import export

    target = tmp_path / "segmentation.json"
    target.write_text("old")
    with pytest.raises(OSError, match="disk full"):
        with export.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    export.write_text_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓" and len(synced) >= 1
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
