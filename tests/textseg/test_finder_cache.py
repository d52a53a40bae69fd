"""The finder's image cache and input size, and the GroundingDINO family (GroundingDINO and
MM-GroundingDINO built from transformers' real classes) through one adapter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from textseg import TextSegmenter
from textseg.detector import GroundingDinoDetector
from textseg.images import load_image
from textseg.prompt import parse_prompt
from textseg.testing import make_sample_image

FORCE = {"box_threshold": 0.0, "text_threshold": 0.0}


@pytest.fixture(scope="module", params=["grounding-dino", "mm-grounding-dino"])
def family_dir(request, model_dirs, mm_dir):
    return model_dirs["detector"] if request.param == "grounding-dino" else mm_dir


def _same(a, b):
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.phrase_ids, b.phrase_ids)


def test_family_members_load_through_one_adapter(family_dir, runtime, sample_image):
    det = GroundingDinoDetector.from_pretrained(family_dir, runtime=runtime)
    expected = {"grounding-dino": "GroundingDinoForObjectDetection",
                "mm-grounding-dino": "MMGroundingDinoForObjectDetection"}  # fmt: skip
    assert type(det.model).__name__ == expected[det.model.config.model_type]
    prompt = parse_prompt("cat, remote control")
    found = det.detect(load_image(sample_image), prompt, **FORCE)
    assert len(found.scores) == det.model.config.num_queries
    assert set(found.phrase_ids.tolist()) <= {0, 1}  # labels are always the user's phrases


def test_cached_boxes_equal_an_uncached_run_exactly(family_dir, runtime, sample_image):
    image = load_image(sample_image)
    cached = GroundingDinoDetector.from_pretrained(family_dir, runtime=runtime)
    fresh = GroundingDinoDetector.from_pretrained(family_dir, runtime=runtime, cache_images=0)
    first = cached.detect(image, parse_prompt("cat"), **FORCE)
    assert cached.backbone_runs == 1
    for text in ("cat, remote", "a red car", "cat"):
        prompt = parse_prompt(text)
        again = cached.detect(image, prompt, **FORCE)
        _same(again, fresh.detect(image, prompt, **FORCE))
    assert cached.backbone_runs == 1  # three more prompts, the backbone ran once
    assert fresh.backbone_runs == 3 and len(fresh._cache) == 0
    _same(first, fresh.detect(image, parse_prompt("cat"), **FORCE))
    # and the backbone is back to the class's own forward after each call
    assert "forward" not in vars(cached.model.model.backbone)


def test_our_inputs_equal_the_processors(text_segmenter, sample_image):
    """Image and text are prepared apart (to cache the image); together they are exactly
    what the processor makes of both."""
    det = text_segmenter.detector
    image = load_image(sample_image)
    prompt = parse_prompt("cat, remote")
    joint = det.processor(images=image, text=prompt.text, return_tensors="pt")
    entry = det._image_entry(image, None)
    text = det.processor.tokenizer(prompt.text, return_tensors="pt")
    torch.testing.assert_close(entry.pixel_values, joint["pixel_values"], rtol=0, atol=0)
    for key, value in text.items():
        torch.testing.assert_close(value, joint[key], rtol=0, atol=0)


def test_cache_is_bounded_and_keyed_by_pixels_and_size(model_dirs, runtime, sample_image):
    det = GroundingDinoDetector.from_pretrained(model_dirs["detector"], runtime=runtime)
    image = load_image(sample_image)
    other = image.transpose(0)  # mirrored: other pixels
    prompt = parse_prompt("cat")
    det.detect(image, prompt, **FORCE)
    det.detect(image.copy(), prompt, **FORCE)  # same pixels, new object: reused
    assert det.backbone_runs == 1
    det.detect(other, prompt, **FORCE)  # one entry kept: the first image leaves
    det.detect(image, prompt, **FORCE)
    assert det.backbone_runs == 3 and len(det._cache) == 1
    det.detect(image, prompt, size=96, **FORCE)  # another input size is another entry
    assert det.backbone_runs == 4
    det.cache_images = 2
    det.detect(other, prompt, **FORCE)
    det.detect(image, prompt, size=96, **FORCE)
    assert det.backbone_runs == 5 and len(det._cache) == 2
    det.clear_cache()
    assert len(det._cache) == 0
    with pytest.raises(ValueError, match="cache_images"):
        GroundingDinoDetector(model=det.model, processor=det.processor, runtime=runtime,
                              cache_images=-1)  # fmt: skip


def test_detector_size_sets_the_models_input(text_segmenter, sample_image):
    det = text_segmenter.detector
    image = load_image(sample_image)  # 320 x 240
    assert det.default_size == 128  # the test model's processor; 800 as released
    assert det._image_entry(image, None).pixel_values.shape[-2] == 128  # shortest side
    assert det._image_entry(image, 64).pixel_values.shape[-2] == 64
    with pytest.raises(ValueError, match="detector_size must be None or a whole number >= 32"):
        det.detect(image, parse_prompt("cat"), size=8, **FORCE)
    seg = text_segmenter.segment(sample_image, "cat", detector_size=64, max_objects=2, **FORCE)
    assert len(seg) == 2 and seg.masks.shape == (2, 240, 320)
    with pytest.raises(ValueError, match="detector_size must be"):
        text_segmenter.segment(sample_image, "cat", detector_size=True)


def test_mm_grounding_dino_runs_the_whole_pipeline(mm_dir, model_dirs, sample_image):
    ts = TextSegmenter.from_pretrained(detector=mm_dir, segmenter=model_dirs["segmenter"],
                                       device="cpu")  # fmt: skip
    seg = ts.segment(sample_image, "Cat, remote.", max_objects=3, **FORCE)
    assert len(seg) == 3 and set(seg.labels) <= {"cat", "remote"}
    assert ts.detector.backbone_runs == 1
    ts.segment(sample_image, "dog", max_objects=1, **FORCE)
    assert ts.detector.backbone_runs == 1


def test_calls_from_several_threads_each_get_their_own_image(model_dirs, runtime, tmp_path):
    """The cached backbone is swapped in per call: overlapping calls must not see each
    other's image (they take turns), and the cache must not store one image under another."""
    det = GroundingDinoDetector.from_pretrained(
        model_dirs["detector"], runtime=runtime, cache_images=4
    )
    images = [
        load_image(make_sample_image(tmp_path / f"{i}.jpg", height=200, width=260, seed=i))
        for i in range(4)
    ]
    prompts = [parse_prompt(p) for p in ("cat", "remote", "a red car", "cat, remote")]
    expected = [det.detect(im, p, **FORCE) for im, p in zip(images, prompts)]
    det.clear_cache()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):  # the first round fills the cache concurrently, then reads it
            got = pool.map(lambda job: det.detect(*job, **FORCE), zip(images, prompts))
            for found, want in zip(got, expected):
                _same(found, want)
    assert det.backbone_runs == 8  # 4 before, then each image once more
