"""Box and point prompts: checked and named (pure), sent to SAM 2 as they are (tiny real
SAM 2, compared with Meta's SAM2ImagePredictor), alone or added to the finder's objects,
through the API, the JSON and the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from textseg import PromptError, load, save
from textseg.boxes import mask_boxes
from textseg.cli import main
from textseg.images import load_image
from textseg.user_prompts import parse_user_prompts

FORCE = {"box_threshold": 0.0, "text_threshold": 0.0}


# --- pure: checking and naming ----------------------------------------------------------


def test_boxes_are_named_in_order_or_by_the_user_and_clipped():
    u = parse_user_prompts([[10, 20, 50, 60], (-5, 0, 400, 30)], None, None, height=100, width=200)
    assert u.box_names == ["box 1", "box 2"]
    np.testing.assert_array_equal(u.boxes, [[10, 20, 50, 60], [0, 0, 200, 30]])
    named = parse_user_prompts({"my cup": (1, 2, 3, 4)}, None, None, height=10, width=10)
    assert named.box_names == ["my cup"] and len(named) == 1


def test_points_form_one_object_or_one_per_name():
    u = parse_user_prompts(None, [(5, 5), (8, 9)], [1, 0], height=20, width=20)
    assert u.point_names == ["point"] and u.point_labels[0].tolist() == [1, 0]
    assert u.point_groups[0].dtype == np.float32 and u.point_groups[0].shape == (2, 2)
    default = parse_user_prompts(None, [(5, 5)], None, height=20, width=20)
    assert default.point_labels[0].tolist() == [1]
    named = parse_user_prompts(
        None, {"cat": [(1, 1)], "dog": [(2, 2), (3, 3)]}, {"dog": [1, 0]}, height=9, width=9
    )
    assert named.point_names == ["cat", "dog"]
    assert [lab.tolist() for lab in named.point_labels] == [[1], [1, 0]]


@pytest.mark.parametrize(
    ("boxes", "points", "labels", "message"),
    [
        ([[50, 50, 40, 60]], None, None, r"box 1 \[50.0, 50.0, 40.0, 60.0\] has no area"),
        ([[300, 0, 400, 10]], None, None, "has no area inside the 200x100 image"),
        ([[1, 2, 3]], None, None, r"shape \(N × 4\)"),
        ([["a", 1, 2, 3]], None, None, "must be numbers"),
        (None, [(10, 10)], [2], "1 \\(on the object\\) or 0"),
        (None, [(10, 10), (20, 20)], [1], "per point \\(2\\)"),
        (None, [(10, 10)], [0], "only negative points"),
        (None, [(250, 10)], None, r"point \(250, 10\) of 'point' is outside the 200x100 image"),
        (None, None, [1], "point_labels were given without points"),
        (None, [], None, "has no points"),
    ],
)
def test_bad_boxes_and_points_say_what_is_wrong(boxes, points, labels, message):
    with pytest.raises(PromptError, match=message):
        parse_user_prompts(boxes, points, labels, height=100, width=200)


def test_mask_boxes_enclose_the_pixels():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:7] = True
    np.testing.assert_array_equal(mask_boxes(masks), [[3, 2, 7, 5], [0, 0, 0, 0]])


# --- SAM 2 gets exactly the user's prompts -------------------------------------------------


def test_points_reach_sam2_as_meta_predictor_gets_them(text_segmenter, sample_image):
    """Two points (one negative): our predict == SAM2ImagePredictor for the same prompt."""
    sam = text_segmenter.segmenter
    image = np.asarray(load_image(sample_image))
    sam.set_image(image)
    pts = np.array([[100.0, 150.0], [200.0, 60.0]], np.float32)
    labels = np.array([1, 0])
    masks, scores = sam.predict(points=pts[None], point_labels=labels[None])
    ref, ref_iou, _ = sam.predictor.predict(
        point_coords=pts, point_labels=labels, multimask_output=False
    )
    assert masks.shape == (1, 240, 320)
    np.testing.assert_array_equal(masks[0], ref[0] > 0)
    np.testing.assert_allclose(scores[0], ref_iou[0], rtol=1e-6)
    # the negative point is a real input: without it the logits differ
    alone, _, _ = sam.predictor.predict(
        point_coords=pts[:1], point_labels=labels[:1], multimask_output=False, return_logits=True
    )
    both, _, _ = sam.predictor.predict(
        point_coords=pts, point_labels=labels, multimask_output=False, return_logits=True
    )
    assert not np.allclose(alone, both)


def test_predict_refuses_prompts_of_the_wrong_shape(text_segmenter, sample_image):
    sam = text_segmenter.segmenter
    sam.set_image(np.asarray(load_image(sample_image)))
    with pytest.raises(ValueError, match="needs boxes, points, or both"):
        sam.predict()
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        sam.predict(points=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 boxes but 1 point groups"):
        sam.predict(np.zeros((2, 4)), points=np.zeros((1, 1, 2)))


def test_boxes_alone_segment_with_their_names_and_no_finder(text_segmenter, sample_image):
    sam = text_segmenter.segmenter
    boxes = [[20, 30, 120, 140], [150, 40, 300, 200]]
    seg = text_segmenter.segment(sample_image, boxes=boxes)
    assert seg.labels == ["box 1", "box 2"] and seg.kinds == ["box", "box"]
    assert seg.prompt == "" and seg.phrases == ()
    np.testing.assert_array_equal(seg.boxes, np.array(boxes, np.float32))
    np.testing.assert_array_equal(seg.scores, [1.0, 1.0])
    ref, ref_scores = sam.predict(np.array(boxes, np.float32))  # same image, same boxes
    np.testing.assert_array_equal(seg.masks, ref)
    np.testing.assert_array_equal(seg.mask_scores, ref_scores)
    assert seg.text_match == [None, None] and seg.presence_scores == [None, None]
    # an empty text prompt with boxes is no text prompt (what a UI sends)
    assert text_segmenter.segment(sample_image, "  ", boxes=boxes).labels == ["box 1", "box 2"]


def test_points_and_boxes_are_added_to_the_finders_objects(text_segmenter, sample_image):
    seg = text_segmenter.segment(
        sample_image,
        "cat, remote",
        boxes={"my cup": (10, 10, 90, 90)},
        points=[(160, 120)],
        max_objects=3,
        **FORCE,
    )
    assert seg.labels[:2] == ["my cup", "point"] and seg.kinds[:2] == ["box", "points"]
    assert seg.kinds[2:] == ["text"] * 3 and set(seg.labels[2:]) <= {"cat", "remote"}
    assert len(seg) == 5 and seg.masks.shape == (5, 240, 320)
    alone = text_segmenter.segment(sample_image, "cat, remote", max_objects=3, **FORCE)
    np.testing.assert_array_equal(seg.boxes[2:], alone.boxes)  # the finder's are unchanged
    np.testing.assert_array_equal(seg.masks[2:], alone.masks)
    # the points object's box encloses its mask
    if seg.masks[1].any():
        np.testing.assert_array_equal(seg.boxes[1], mask_boxes(seg.masks[1:2])[0])


def test_user_prompts_on_a_downscaled_working_copy_come_back_at_full_size(text_segmenter, tmp_path):
    from textseg import TextSegmenter
    from textseg.testing import make_sample_image

    path = make_sample_image(tmp_path / "big.png", height=300, width=400)
    small = TextSegmenter(text_segmenter.detector, text_segmenter.segmenter, max_side=200)
    seg = small.segment(path, boxes=[[40, 40, 360, 260]], points=[(200, 150), (30, 30)],
                        point_labels=[1, 0])  # fmt: skip
    assert seg.masks.shape == (2, 300, 400)
    np.testing.assert_array_equal(seg.boxes[0], [40, 40, 360, 260])


def test_nothing_to_segment_and_bad_points_are_clear_errors(text_segmenter, sample_image):
    with pytest.raises(PromptError, match="nothing to segment"):
        text_segmenter.segment(sample_image)
    with pytest.raises(PromptError, match="outside the 320x240 image"):
        text_segmenter.segment(sample_image, points=[(400, 10)])
    with pytest.raises(PromptError, match="nothing to segment"):  # up front, not per image
        text_segmenter.segment_many([sample_image], None, progress=False)


def test_user_objects_are_saved_and_loaded_with_their_kind(text_segmenter, sample_image, tmp_path):
    seg = text_segmenter.segment(sample_image, boxes=[[20, 30, 120, 140]], points=[(200, 100)])
    save(seg, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "segmentation.json").read_text())
    assert [o["kind"] for o in data["objects"]] == ["box", "points"]
    assert [o["label"] for o in data["objects"]] == ["box 1", "point"]
    back = load(tmp_path / "out")
    assert back.kinds == ["box", "points"] and back.labels == ["box 1", "point"]
    np.testing.assert_array_equal(back.masks, seg.masks)


def test_segment_many_applies_boxes_to_every_image(text_segmenter, sample_image, tmp_path):
    items = text_segmenter.segment_many(
        [sample_image, sample_image], None, boxes=[[10, 10, 100, 100]], progress=False
    )
    assert [it.segmentation.labels for it in items] == [["box 1"], ["box 1"]]


# --- CLI ----------------------------------------------------------------------------------


def _models(model_dirs):
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


@pytest.mark.slow
def test_cli_box_and_point_prompts(model_dirs, sample_image, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(sample_image), "--out", str(out), "--box", "10,20,100,120",
            "--box", "150,30,300,200,my cup", "--point", "160,120", "--point", "20,20,0"]  # fmt: skip
    assert main(argv + _models(model_dirs)) == 0
    assert "3 objects: 1 box 1, 1 my cup, 1 point" in capsys.readouterr().out
    data = json.loads((out / sample_image.stem / "segmentation.json").read_text())
    assert [o["kind"] for o in data["objects"]] == ["box", "box", "points"]
    assert data["objects"][1]["box_xyxy"] == [150, 30, 300, 200]
    assert Image.open(out / sample_image.stem / "overlay.png").size == (320, 240)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box", "1,2,3"], "is not x0,y0,x1,y1"),
        (["--point", "1,2,5"], "is not x,y\\[,label\\]"),
        (["--point", "a,b"], "is not x,y\\[,label\\]"),
        ([], "give --prompt, --box or --point"),
        (["--box", "1,2,3,4,a", "--box", "5,6,7,8,a"], "--box names must differ"),
        (["--prompt", "cat", "--min-text-match", "0.2"], "needs the SAM 3 checker"),
        (["--prompt", "cat", "--backend", "sam3", "--detector-size", "512"], "GroundingDINO's"),
        (["--prompt", "cat", "--detector-size", "8"], "at least 32 pixels"),
    ],
)
def test_cli_bad_prompts_are_one_line_errors(sample_image, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(sample_image), "--out", str(tmp_path / "o"), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
