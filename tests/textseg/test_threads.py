"""One TextSegmenter shared by threads: overlapping calls give exactly the sequential
results (SAM 2's set_image -> predict is held together; the detector keeps its own lock and
its image cache)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from textseg import TextSegmenter
from textseg.testing import make_sample_image

pytestmark = pytest.mark.slow

THREADS, CALLS = 4, 6


def _calls(tmp_path):
    sizes = [(120, 160), (100, 150), (90, 200), (140, 110)]
    images = [
        make_sample_image(tmp_path / f"img{i}.png", height=h, width=w, seed=i)
        for i, (h, w) in enumerate(sizes)
    ]
    kinds = [
        dict(prompt="cat, remote", box_threshold=0.0, text_threshold=0.0, max_objects=3),
        dict(boxes=[(5, 5, 80, 70), (30, 20, 100, 90)]),
        dict(points=[(40, 30), (60, 50)], point_labels=[1, 0]),
        dict(prompt="cat", boxes=[(10, 10, 60, 60)], box_threshold=0.0, text_threshold=0.0),
    ]
    # every thread walks the images and kinds in another order, so calls on different
    # images overlap all the time
    return [
        [(images[(t + c) % 4], kinds[(t * 3 + c) % 4]) for c in range(CALLS)]
        for t in range(THREADS)
    ]


def _run(ts: TextSegmenter, image, kind):
    kind = dict(kind)
    return ts.segment(image, kind.pop("prompt", None), **kind)


def test_threads_give_exactly_the_sequential_results(model_dirs, tmp_path):
    ts = TextSegmenter.from_pretrained(
        detector=model_dirs["detector"], segmenter=model_dirs["segmenter"], device="cpu"
    )
    plan = _calls(tmp_path)
    expected = [[_run(ts, image, kind) for image, kind in calls] for calls in plan]
    got: list[list] = [[None] * CALLS for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        start.wait()
        try:
            for c, (image, kind) in enumerate(plan[t]):
                got[t][c] = _run(ts, image, kind)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for t in range(THREADS):
        for c in range(CALLS):
            a, b = got[t][c], expected[t][c]
            assert a.labels == b.labels and a.kinds == b.kinds, (t, c)
            differ = int((a.masks != b.masks).sum()) if a.masks.shape == b.masks.shape else -1
            assert differ == 0, (t, c, differ)  # pixel for pixel
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.mask_scores, b.mask_scores)
            np.testing.assert_array_equal(a.scores, b.scores)
