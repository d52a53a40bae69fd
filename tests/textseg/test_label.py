"""`textseg label` / textseg.label_dataset: a folder labelled as one data set, checked by
pycocotools, resumed after a kill at every write, refused when the settings change, and
sharded over 2 gloo processes under torchrun; with tiny random models (textseg.testing).

Random weights find little on purpose, so thresholds are 0 and max_objects caps the count."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import textseg
import textseg.export as export
from textseg import LabelError, label_dataset
from textseg.cli import main
from textseg.export import DATASET_FORMATS, mask_polygons, mask_to_rle, rle_to_mask
from textseg.label import STATE_DIR
from textseg.result import LabelledImage, LabelledObject, LabelledSet
from textseg.testing import make_sample_image

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as coco_mask  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "car, person, tree"
FORCE = dict(box_threshold=0.0, text_threshold=0.0, max_objects=3)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` in the code catches it."""


def write_folder(root: Path, *, good: int = 3, odd: bool = True) -> Path:
    """`good` small photo-like images (one in a sub-folder), and with `odd` the bad files
    test_images.py uses: an empty file, a text file named .jpg and a truncated JPEG."""
    for i in range(good):
        where = root / "sub" if i == good - 1 else root
        make_sample_image(where / f"img{i}.jpg", height=72 + 8 * i, width=96, seed=i)
    if odd:
        (root / "empty.png").write_bytes(b"")
        (root / "notes.jpg").write_text("not an image")
        data = (root / "img0.jpg").read_bytes()
        (root / "cut.jpg").write_bytes(data[: len(data) // 3])
    (root / "readme.txt").write_text("not listed: not an image suffix")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("photos"))


def run(ts, folder: Path, out: Path, **kw):
    args = dict(FORCE, formats=("coco", "yolo"), progress=False, model="tiny")
    args.update(kw)
    return label_dataset(ts, folder, PROMPT, out=out, **args)


def dataset_files(out: Path) -> dict[str, bytes]:
    """Every file of a data set but its state folder, by relative path; data.yaml without
    its absolute `path:` line (which names the folder)."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith(STATE_DIR):
            data = path.read_bytes()
            if rel == "data.yaml":
                data = b"\n".join(x for x in data.split(b"\n") if not x.startswith(b"path:"))
            files[rel] = data
    return files


def _reference(text_segmenter, folder, out):
    """An uninterrupted run, and the names of the files it wrote through atomic_path."""
    calls = []
    real = export.atomic_path

    @contextmanager
    def counting(path):
        calls.append(Path(path).name)
        with real(path) as tmp:
            yield tmp

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "atomic_path", counting)
        summary = run(text_segmenter, folder, out)
    return out, summary, calls


@pytest.fixture(scope="module")
def reference(text_segmenter, folder, tmp_path_factory):
    return _reference(text_segmenter, folder, tmp_path_factory.mktemp("reference") / "dataset")


@pytest.fixture(scope="module")
def small(text_segmenter, tmp_path_factory):
    """A smaller folder (2 images, one in a sub-folder, and one odd file) and its reference
    run, for the kill-at-every-write test (24 writes, each killed twice)."""
    photos = write_folder(tmp_path_factory.mktemp("small"), good=2, odd=False)
    (photos / "notes.jpg").write_text("not an image")
    out = tmp_path_factory.mktemp("small-reference") / "dataset"
    return photos, _reference(text_segmenter, photos, out)


# --------------------------------------------------------------------------- formats


def test_compressed_rle_is_pycocotools_own():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        mask = rng.random((h, w)) < rng.random()
        ours = mask_to_rle(mask)
        theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ours == {"size": [int(h), int(w)], "counts": theirs["counts"].decode()}
        assert np.array_equal(rle_to_mask(ours), mask)


def test_the_formats_table_is_what_the_cli_offers():
    from textseg.cli import build_label_parser

    action = next(a for a in build_label_parser()._actions if a.dest == "format")
    assert action.choices == list(DATASET_FORMATS) == ["coco", "yolo"]


def test_annotations_load_in_pycocotools_and_equal_textsegs_masks(reference, folder):
    out, summary, _ = reference
    coco = COCO(str(out / "annotations.json"))
    images = {img["id"]: img for img in coco.dataset["images"]}
    assert [img["file_name"] for img in images.values()] == ["img0.jpg", "img1.jpg", "sub/img2.jpg"]
    assert list(images) == [1, 2, 3]
    assert [c["name"] for c in coco.dataset["categories"]] == ["car", "person", "tree"]
    assert len(coco.dataset["annotations"]) > 0
    for image_id, img in images.items():
        stem = img["file_name"].replace(".", "_")
        seg = textseg.load(out / "per_image" / stem)  # the per-image outputs, as today
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        kept = [i for i in range(len(seg)) if seg.masks[i].any()]
        assert len(anns) == len(kept) and (img["height"], img["width"]) == seg.image_size
        for ann, i in zip(anns, kept):
            assert np.array_equal(coco.annToMask(ann).astype(bool), seg.masks[i])
            assert ann["area"] == int(seg.masks[i].sum()) and ann["iscrowd"] == 0
            assert coco.loadCats(ann["category_id"])[0]["name"] == seg.labels[i]
            assert ann["score"] == pytest.approx(float(seg.scores[i]), abs=1e-6)
            x0, y0, x1, y1 = seg.boxes[i]
            assert ann["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
    for kind in ("segm", "bbox"):  # the data set scored against itself
        evaluator = COCOeval(coco, coco.loadRes(coco.dataset["annotations"]), kind)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0), kind


def test_summary_lists_objects_per_class_and_the_odd_images(reference):
    out, summary, _ = reference
    assert summary.images == 6 and summary.labelled == 3
    reasons = dict(summary.skipped)
    assert list(reasons) == ["cut.jpg", "empty.png", "notes.jpg"]
    assert "corrupt or truncated" in reasons["cut.jpg"] and "empty" in reasons["empty.png"]
    assert "not an image" in reasons["notes.jpg"]
    anns = json.loads((out / "annotations.json").read_text())["annotations"]
    by_class = {name: 0 for name in ("car", "person", "tree")}
    for ann in anns:
        by_class[["car", "person", "tree"][ann["category_id"] - 1]] += 1
    assert summary.objects == by_class and not summary.failed and not summary.missing
    saved = json.loads((out / "summary.json").read_text())
    assert saved["objects"] == by_class and len(saved["skipped"]) == 3
    lines = summary.lines()
    assert lines[0].startswith("6 images: 3 labelled, 3 skipped, 0 failed;")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_yolo_labels_rasterised_back_match_their_masks(reference, folder):
    """The measurement behind the threshold: every YOLO outline of the reference set,
    rasterised by pycocotools' polygon reader, against its mask, by COCO's size ranges.
    Measured (tiny models, 2-core CPU): IoU 1.0 for every hole-free mask, small or medium;
    masks with holes lose them (IoU = 1 - hole area / filled area)."""
    import yaml

    out, _, _ = reference
    coco = COCO(str(out / "annotations.json"))
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "car", 1: "person", 2: "tree"} and data["train"] == "images"
    ious: dict[str, list[float]] = {"small": [], "medium": [], "large": []}
    for img in coco.dataset["images"]:
        h, w = img["height"], img["width"]
        image = (out / "images" / img["file_name"]).read_bytes()
        assert image == (folder / img["file_name"]).read_bytes()
        label = (out / "labels" / img["file_name"]).with_suffix(".txt")
        lines = label.read_text().splitlines()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        assert len(lines) == len(anns)
        for line, ann in zip(lines, anns):
            cls, *xy = line.split()
            assert int(cls) == ann["category_id"] - 1
            points = np.array(xy, float).reshape(-1, 2)
            assert (0 <= points).all() and (points <= 1).all()
            polygon = (points * [w, h]).ravel().tolist()
            back = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([polygon], h, w)))
            mask = coco.annToMask(ann).astype(bool)
            _, holes = mask_polygons(mask)
            size = "small" if mask.sum() < 32**2 else "medium" if mask.sum() < 96**2 else "large"
            iou = _iou(back.astype(bool), mask)
            ious[size].append(iou)
            if not holes:
                assert iou == 1.0, (img["file_name"], ann["id"])
            else:  # the outline keeps every pixel of the mask and fills its holes
                filled = back.astype(bool)
                assert (filled | mask).sum() == filled.sum()
                assert iou == pytest.approx(mask.sum() / filled.sum())
    print("YOLO outline IoU by size (n, min, median):", {
        k: (len(v), round(min(v), 4), round(float(np.median(v)), 4)) for k, v in ious.items() if v
    })  # fmt: skip
    assert sum(len(v) for v in ious.values()) > 0


def test_polygons_keep_every_pixel_of_shapes_without_holes_and_name_holes():
    """Generated shapes of every size (ellipses, rectangles, several parts), through
    COCO polygons and one YOLO outline, read back by pycocotools: IoU measured 1.0."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(20, 160, 2))
        picture = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(picture)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(0, w - 2)), int(rng.integers(0, h - 2))
            x1, y1 = x0 + int(rng.integers(1, w // 2)), y0 + int(rng.integers(1, h // 2))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=255)
        mask = np.asarray(picture) > 0
        rings, holes = mask_polygons(mask)
        if holes:
            continue
        polygons = [ring.ravel().tolist() for ring in rings]
        back = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, h, w)))
        assert np.array_equal(back.astype(bool), mask)
        as_written = [[round(v, 2) for v in p] for p in polygons]  # as write_coco rounds
        assert np.array_equal(export.polygons_to_mask(as_written, h, w), mask)  # the review's
        obj = LabelledObject(1, "x", 1.0, [0, 0, 1, 1], int(mask.sum()), mask_to_rle(mask))
        line = export.yolo_line(obj, height=h, width=w)
        points = np.array(line.split()[1:], float).reshape(-1, 2) * [w, h]
        one = coco_mask.frPyObjects([points.ravel().tolist()], h, w)
        assert _iou(coco_mask.decode(coco_mask.merge(one)).astype(bool), mask) == 1.0
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False
    assert mask_polygons(ring)[1] is True


def test_a_yolo_line_of_a_large_mask_in_parts_needs_little_more_memory_than_its_tracing():
    """Two large discs (one object cut in two, as by a pole, on a 1400-pixel-wide photo) and
    a row of specks: one YOLO outline, exact when read back, and joining the 36 outlines
    takes under 5 MB more than decoding and tracing the mask. The nearest point of two
    outlines was searched over all their pairs: 110 MB more here (measured), and 2.3 GB and
    40 s for one speckled mask of a 12 MP phone photo."""
    import tracemalloc

    h, w = 700, 1400
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - 350) ** 2 + (xx - 350) ** 2 < 300**2) | (
        (yy - 350) ** 2 + (xx - 1050) ** 2 < 300**2
    )
    mask[680:683, 20:1380:40] = True  # 34 specks of 3x1 pixels
    obj = LabelledObject(1, "x", 1.0, [0, 0, w, h], int(mask.sum()), mask_to_rle(mask))

    def peak_of(fn):
        tracemalloc.start()
        try:
            return fn(), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    (rings, _), tracing = peak_of(lambda: mask_polygons(rle_to_mask(obj.rle)))
    assert len(rings) == 36
    line, peak = peak_of(lambda: export.yolo_line(obj, height=h, width=w))
    assert peak - tracing < 5e6, f"{tracing / 1e6:.1f} MB to trace, {peak / 1e6:.1f} MB in all"
    points = np.array(line.split()[1:], float).reshape(-1, 2) * [w, h]
    one = coco_mask.frPyObjects([points.ravel().tolist()], h, w)
    assert np.array_equal(coco_mask.decode(coco_mask.merge(one)).astype(bool), mask)


def test_coco_polygons_are_optional_and_masks_with_holes_keep_rle(tmp_path):
    square = np.zeros((40, 50), bool)
    square[5:30, 10:40] = True
    ring = square.copy()
    ring[12:20, 18:30] = False
    objects = [
        LabelledObject(1, "a", 0.9, [10.0, 5.0, 40.0, 30.0], int(m.sum()), mask_to_rle(m))
        for m in (square, ring)
    ]
    image = LabelledImage(1, "a.png", tmp_path / "a.png", 40, 50, objects)
    data = LabelledSet(categories=["a"], images=lambda: iter([image]))
    export.write_coco(tmp_path, data, segmentation="polygon")
    coco = COCO(str(tmp_path / "annotations.json"))
    first, second = coco.dataset["annotations"]
    assert isinstance(first["segmentation"], list)  # a polygon: no holes
    assert isinstance(second["segmentation"], dict)  # RLE: a polygon would fill the hole
    assert np.array_equal(coco.annToMask(first).astype(bool), square)
    assert np.array_equal(coco.annToMask(second).astype(bool), ring)
    assert first["bbox"] == [10.0, 5.0, 30.0, 25.0]


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mid", "after"])  # killed during a write, or right after it
@pytest.mark.kill
def test_kill_at_every_write_then_the_same_call_finishes_identically(
    mode, small, text_segmenter, tmp_path
):
    folder, (ref_out, _, calls) = small
    expected = dataset_files(ref_out)
    real = export.atomic_path
    for n in range(1, len(calls) + 1):
        out = tmp_path / f"kill{n}"
        count = 0

        @contextmanager
        def dying(path, n=n):
            nonlocal count
            count += 1
            path = Path(path)
            if count != n:
                with real(path) as tmp:
                    yield tmp
                return
            if mode == "mid":  # killed while writing: a partial temporary file stays behind
                (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"partial")
                raise Killed(f"write {n} ({path.name}, mid)")
            with real(path) as tmp:
                yield tmp
            raise Killed(f"write {n} ({path.name}, after)")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(export, "atomic_path", dying)
            with pytest.raises(Killed):
                run(text_segmenter, folder, out)
        if calls[n - 1] == "annotations.json" and mode == "mid":
            assert not (out / "annotations.json").exists()  # no half file looks complete
        summary = run(text_segmenter, folder, out)  # the same call again
        assert summary.labelled == 2 and len(calls) == 24, (n, mode)  # 24: + the YOLO file list
        assert not [p for p in out.rglob("*.tmp")], (n, mode)
        assert dataset_files(out) == expected, (n, mode, calls[n - 1])


def test_a_finished_data_set_is_not_labelled_again(reference, text_segmenter, folder, tmp_path):
    out, _, _ = reference
    before = dataset_files(out)
    segments = []
    real = text_segmenter.segment
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(text_segmenter, "segment", lambda *a, **k: segments.append(a) or real(*a, **k))
        run(text_segmenter, folder, out)
    assert segments == [] and dataset_files(out) == before


def test_images_gone_from_the_folder_leave_the_yolo_layout_too(text_segmenter, tmp_path):
    """Delete an image (one in a sub-folder) and make another unreadable, run again: YOLO's
    images/ and labels/ equal a fresh run's on what is left (they kept the gone images and
    their labels, which ultralytics would train on), and only textseg's own files go."""
    import shutil

    photos = write_folder(tmp_path / "photos", good=3, odd=False)
    out = tmp_path / "dataset"
    run(text_segmenter, photos, out)
    assert (out / "labels" / "sub" / "img2.txt").is_file()
    (photos / "sub" / "img2.jpg").unlink()
    (photos / "img1.jpg").write_text("no longer an image")
    (out / "labels" / "mine.txt").write_text("a file textseg did not write")
    run(text_segmenter, photos, out)
    fresh = tmp_path / "fresh"
    shutil.copytree(photos, tmp_path / "photos2")
    run(text_segmenter, tmp_path / "photos2", fresh)

    def yolo(root: Path) -> dict[str, bytes]:
        return {
            k: v for k, v in dataset_files(root).items() if k.startswith(("images/", "labels/"))
        }

    kept = yolo(out)
    assert kept.pop("labels/mine.txt") == b"a file textseg did not write"
    assert kept == yolo(fresh) and sorted(kept) == ["images/img0.jpg", "labels/img0.txt"]
    assert not (out / "images" / "sub").exists() and not (out / "labels" / "sub").exists()


def test_two_images_yolo_would_label_alike_are_refused_before_any_is_labelled(
    text_segmenter, tmp_path
):
    """sub/img2.jpg and sub/img2.png would share labels/sub/img2.txt. It was found by the
    merge, after every image had been labelled (hours, on a large set), with annotations.json
    rewritten and summary.json not; now before anything is written. COCO alone is fine."""
    photos = write_folder(tmp_path / "photos", good=3, odd=False)
    make_sample_image(photos / "sub" / "img2.png", height=40, width=50, seed=9)
    out = tmp_path / "dataset"
    with pytest.raises(LabelError) as info:
        run(text_segmenter, photos, out)
    message = str(info.value)
    assert "sub/img2.jpg and sub/img2.png would share labels/sub/img2.txt" in message
    assert "rename one" in message and "\n" not in message
    assert not out.exists()
    summary = run(text_segmenter, photos, out, formats=("coco",))
    assert summary.labelled == 4


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(prompt="car, person"), "prompt"),
        (dict(classes="car=vehicle"), "classes"),
        (dict(box_threshold=0.1), "box_threshold"),
        (dict(box_thresholds={"car": 0.2}), "box_thresholds"),
        (dict(nms_iou=0.7), "nms_iou"),
        (dict(model="another model"), "model"),
    ],
)
def test_changed_settings_on_resume_are_refused_in_one_line(
    change, named, text_segmenter, tmp_path
):
    photos = write_folder(tmp_path / "photos", good=1, odd=False)
    out = tmp_path / "dataset"
    run(text_segmenter, photos, out)
    before = dataset_files(out)
    prompt = change.pop("prompt", PROMPT)
    with pytest.raises(LabelError) as info:
        label_dataset(
            text_segmenter,
            photos,
            prompt,
            out=out,
            **{**FORCE, "progress": False, "model": "tiny", **change},
        )
    message = str(info.value)
    assert "\n" not in message and f"labelled with {named} " in message
    assert "run with the same settings to resume" in message
    assert dataset_files(out) == before  # nothing written


def test_an_out_holding_another_data_set_or_other_files_is_refused(text_segmenter, tmp_path):
    a = write_folder(tmp_path / "a", good=1, odd=False)
    b = write_folder(tmp_path / "b", good=1, odd=False)
    out = tmp_path / "dataset"
    run(text_segmenter, a, out)
    with pytest.raises(LabelError, match=r"holds the data set of .*a, not of .*b; choose another"):
        run(text_segmenter, b, out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(LabelError, match=r"holds other files \(thesis.pdf\) and no textseg data"):
        run(text_segmenter, a, other)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.pdf"]


# --------------------------------------------------------------------------- thresholds, classes


def test_per_class_thresholds_equal_filtering_each_phrase_by_its_own(text_segmenter, sample_image):
    base = dict(text_threshold=0.0, nms_iou=1.0)  # no duplicate removal: pure filtering
    everything = text_segmenter.segment(sample_image, "car, person", box_threshold=0.0, **base)
    cars = sorted(float(s) for s, lab in zip(everything.scores, everything.labels) if lab == "car")
    assert len(cars) > 2
    cut = cars[len(cars) // 2]
    mine = text_segmenter.segment(
        sample_image, "car, person", box_threshold=0.0, box_thresholds={"car": cut}, **base
    )
    keep = [
        i
        for i in range(len(everything))
        if everything.labels[i] != "car" or everything.scores[i] >= cut
    ]
    assert mine.labels == [everything.labels[i] for i in keep]
    assert np.array_equal(mine.masks, everything.masks[keep])
    with pytest.raises(ValueError, match="'bus', not a phrase of the prompt"):
        text_segmenter.segment(sample_image, "car", box_thresholds={"bus": 0.3})


def test_classes_merge_phrases_and_thresholds_may_name_a_class(text_segmenter, tmp_path):
    photos = write_folder(tmp_path / "photos", good=1, odd=False)
    out = tmp_path / "dataset"
    summary = label_dataset(
        text_segmenter,
        photos,
        "red car, blue car, person",
        out=out,
        classes="red car=car, blue car=car",
        box_thresholds={"car": 0.0, "person": 1.0},  # no person scores above 1.0
        text_threshold=0.0,
        box_threshold=0.0,
        max_objects=4,
        progress=False,
    )
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["car", "person"]
    assert summary.objects["person"] == 0 and summary.objects["car"] > 0
    run_json = json.loads((out / STATE_DIR / "run.json").read_text())
    assert run_json["box_thresholds"] == {"red car": 0.0, "blue car": 0.0, "person": 1.0}
    with pytest.raises(LabelError, match="'bus' is not a phrase of the prompt"):
        label_dataset(text_segmenter, photos, "car", out=tmp_path / "x", classes="bus=vehicle")
    with pytest.raises(LabelError, match="box threshold truck=: not a phrase or class"):
        label_dataset(
            text_segmenter, photos, "car", out=tmp_path / "x", box_thresholds={"truck": 1}
        )


# --------------------------------------------------------------------------- the command line


def test_cli_label_prints_the_summary_and_exits_1_for_skipped_images(
    model_dirs, folder, tmp_path, capsys
):
    out = tmp_path / "dataset"
    argv = [
        "label", str(folder), "--prompt", PROMPT, "--out", str(out),
        "--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"]),
        "--device", "cpu", "--box-threshold", "0", "--box-threshold", "person=0.5",
        "--text-threshold", "0", "--max-objects", "2", "--format", "yolo", "--no-progress",
        "--no-per-image",
    ]  # fmt: skip
    assert main(argv) == 1  # three odd images skipped
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("textseg label: 6 images: 3 labelled, 3 skipped, 0 failed;")
    assert any(line.startswith("textseg label: skipped cut.jpg: ") for line in lines)
    assert (out / "data.yaml").is_file() and not (out / "annotations.json").exists()
    assert not (out / "per_image").exists()
    run_json = json.loads((out / STATE_DIR / "run.json").read_text())
    assert run_json["box_thresholds"] == {"person": 0.5} and run_json["box_threshold"] == 0.0
    assert main([*argv[:-2], "--box-threshold", "person=0.6"]) == 2  # changed: refused
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labelled with box_thresholds" in err


def test_cli_label_bad_arguments_are_one_line(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["label", str(folder), "--prompt", "car", "--out", str(tmp_path / "o"),
              "--box-threshold", "car=1.5"])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not in [0, 1]" in err
    with pytest.raises(SystemExit):
        main(["label", str(tmp_path / "nope"), "--prompt", "car", "--out", str(tmp_path / "o")])
    assert "not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- torchrun


def _cli(model_dirs, folder: Path, out: Path, *, nproc: int | None) -> list[str]:
    args = [
        "-m", "textseg", "label", str(folder), "--prompt", PROMPT, "--out", str(out),
        "--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"]),
        "--device", "cpu", "--box-threshold", "0", "--text-threshold", "0",
        "--max-objects", "3", "--format", "coco", "--format", "yolo", "--no-progress",
    ]  # fmt: skip
    if nproc is None:
        return [sys.executable, *args]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(nproc), *args]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.kill
def test_two_gloo_processes_equal_one_and_a_killed_pair_resumes_in_one(model_dirs, tmp_path):
    photos = write_folder(tmp_path / "photos", good=5)
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    done = subprocess.run(
        _cli(model_dirs, photos, one, nproc=None),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr  # the odd images are skipped
    done = subprocess.run(
        _cli(model_dirs, photos, two, nproc=2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    assert "textseg label: 8 images: 5 labelled, 3 skipped" in done.stdout
    assert done.stdout.count("textseg label: 8 images") == 1  # rank 0 alone reports
    expected = dataset_files(one)
    assert dataset_files(two) == expected

    pair = subprocess.Popen(
        _cli(model_dirs, photos, killed, nproc=2), env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    records = killed / STATE_DIR / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(pair.pid, signal.SIGKILL)  # the launcher and both ranks, at once
    pair.wait()
    assert 3 <= len(list(records.glob("*.json"))) and not (killed / "annotations.json").exists()
    done = subprocess.run(
        _cli(model_dirs, photos, killed, nproc=None),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    assert dataset_files(killed) == expected


@pytest.mark.slow
@pytest.mark.kill  # a real signal to our own process handling: stack (a) runs it
def test_ctrl_c_is_one_line_with_status_130_and_the_same_command_resumes(model_dirs, tmp_path):
    """A real SIGINT (Ctrl-C) mid-run: one line, status 130, no traceback; the same command
    again labels the rest. SIGINT is reset to its default in the child, so that Python
    installs its Ctrl-C handler even where CI starts this process with SIGINT ignored."""
    photos = write_folder(tmp_path / "photos", good=12, odd=False)
    out = tmp_path / "out"
    command = _cli(model_dirs, photos, out, nproc=None)
    run = subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    records = out / STATE_DIR / "records"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None and not any(records.glob("*.json")):
        time.sleep(0.02)
    assert run.poll() is None, run.communicate()
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "textseg: interrupted (Ctrl-C); the same command again resumes where it stopped"
    )
    assert 1 <= len(list(records.glob("*.json"))) < 12 and not (out / "annotations.json").exists()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 12
