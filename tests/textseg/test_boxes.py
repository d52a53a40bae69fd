"""Duplicate removal (NMS within and across phrases) and clipping."""

from __future__ import annotations

import numpy as np
import pytest

from textseg.boxes import clip_boxes, remove_duplicates


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_within_phrase_duplicates_keep_the_best():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], float)
    keep = remove_duplicates(boxes, np.array([0.5, 0.9, 0.7]), np.array([0, 0, 0]), iou=0.5)
    assert keep.tolist() == [1, 2]


def test_across_phrases_the_higher_score_wins():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]], float)
    keep = remove_duplicates(boxes, np.array([0.6, 0.8, 0.3]), np.array([0, 1, 0]), iou=0.5)
    assert keep.tolist() == [1, 2]


def test_overlap_below_threshold_is_kept_and_order_is_by_score():
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], float)  # IoU = 4/16 = 0.25
    assert _iou(boxes[0], boxes[1]) == pytest.approx(0.25)
    keep = remove_duplicates(boxes, np.array([0.4, 0.8]), np.array([0, 1]), iou=0.3)
    assert keep.tolist() == [1, 0]
    keep = remove_duplicates(boxes, np.array([0.4, 0.8]), np.array([0, 1]), iou=0.2)
    assert keep.tolist() == [1]


def test_random_boxes_leave_no_pair_above_iou():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (60, 2))], axis=1)
    keep = remove_duplicates(boxes, rng.uniform(size=60), rng.integers(0, 3, 60), iou=0.4)
    kept = boxes[keep]
    assert all(_iou(a, b) <= 0.4 + 1e-6 for i, a in enumerate(kept) for b in kept[i + 1 :])
    assert 0 < len(keep) < 60


def test_empty_input_and_bad_iou():
    assert remove_duplicates(np.zeros((0, 4)), np.zeros(0), np.zeros(0), iou=0.5).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        remove_duplicates(np.zeros((1, 4)), np.ones(1), np.zeros(1), iou=1.5)


def test_clip_boxes_keeps_coordinates_inside_the_image():
    out = clip_boxes(np.array([[-5, -2, 120, 50], [10, 10, 20, 300]]), height=100, width=100)
    assert out.dtype == np.float32
    assert out.tolist() == [[0, 0, 100, 50], [10, 10, 20, 100]]
