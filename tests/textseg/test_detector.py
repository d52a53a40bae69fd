"""GroundingDINO adapter on a tiny random-weight model saved to and loaded from a folder."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from textseg.detector import GroundingDinoDetector, _size_field, decode_boxes
from textseg.errors import ModelLoadError, PromptError
from textseg.images import load_image
from textseg.prompt import parse_prompt


@pytest.fixture(scope="module")
def detector(text_segmenter):
    return text_segmenter.detector


def test_box_decoding_matches_the_transformers_post_processor(detector, sample_image):
    """Our decoder and the processor's agree on every query's box. The processor's
    threshold argument was renamed (box_threshold → threshold), so pick it by signature."""
    image = load_image(sample_image)
    prompt = parse_prompt("cat, remote")
    inputs = detector.processor(images=image, text=prompt.text, return_tensors="pt")
    with torch.inference_mode():
        outputs = detector.model(**inputs)
    post = detector.processor.post_process_grounded_object_detection
    params = inspect.signature(post).parameters
    kwargs = {"threshold": -1.0} if "threshold" in params else {"box_threshold": -1.0}
    if "text_labels" in params:
        kwargs["text_labels"] = [list(prompt.phrases)]
    ref = post(
        outputs,
        inputs["input_ids"],
        text_threshold=0.5,
        target_sizes=[(image.height, image.width)],
        **kwargs,
    )[0]
    ref_boxes = ref["boxes"].numpy()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, image.width)
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, image.height)
    ours = decode_boxes(outputs.pred_boxes[0], height=image.height, width=image.width)
    assert ours.shape == (detector.model.config.num_queries, 4)
    np.testing.assert_allclose(ours, ref_boxes, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("height, width", [(240, 320), (480, 200), (3, 40), (40, 3)])
def test_pixels_are_the_processors_for_wide_tall_and_three_pixel_images(detector, height, width):
    """The detector's input tensor is the one the processor makes from the PIL image, as
    transformers' docs call it, and its channels stay in RGB order. Guards the transformers
    5.9-5.20 bug where a PIL image said to be channels-last is permuted twice (a crash on a
    wide image, a zero height on a tall one), and the guess of the channel axis that a
    3-pixel side can fool."""
    from PIL import Image

    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 250, 10, 130
    rgb[: height // 2, : width // 2] = (30, 200, 90)  # a quarter of another colour
    image = Image.fromarray(rgb)
    detector.clear_cache()
    ours = detector._image_entry(image, None).pixel_values.cpu()
    # the shortest side is resized to the processor's size unless the longest would pass its cap
    short, long = min(height, width), max(height, width)
    size = detector.processor.image_processor.size
    target, cap = detector.default_size, _size_field(size, "longest_edge")
    if cap and long / short * target > cap:
        target = round(cap * short / long)
    assert ours.shape[:2] == (1, 3)
    assert abs(min(ours.shape[2:]) - target) <= 1, (ours.shape, target)
    if short > 3:  # the processor's own channel guess is sound here: our tensor must equal its
        ref = detector.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    # RGB order: in the bottom-right corner (first colour) red > blue > green, after normalising
    corner = ours[0, :, -1, -1]
    assert corner[0] > corner[2] > corner[1], corner
    # shape follows the image: tall stays tall, wide stays wide
    assert (ours.shape[2] > ours.shape[3]) == (height > width)


def test_detections_are_in_the_image_and_labelled_by_phrase(detector, sample_image):
    image = load_image(sample_image)
    prompt = parse_prompt("cat, remote control, dog")
    det = detector.detect(image, prompt, box_threshold=0.0, text_threshold=0.0)
    n = len(det.scores)
    assert n == detector.model.config.num_queries  # threshold 0 keeps every query
    assert det.boxes.shape == (n, 4) and det.boxes.dtype == np.float32
    assert (det.boxes[:, 0::2] >= 0).all() and (det.boxes[:, 0::2] <= image.width).all()
    assert (det.boxes[:, 1::2] >= 0).all() and (det.boxes[:, 1::2] <= image.height).all()
    assert set(det.phrase_ids.tolist()) <= {0, 1, 2}
    assert ((det.scores > 0) & (det.scores <= 1)).all()
    # a stricter threshold keeps exactly the detections that score above it
    cut = float(np.median(det.scores))
    strict = detector.detect(image, prompt, box_threshold=cut, text_threshold=0.0)
    assert len(strict.scores) == int((det.scores > cut).sum())
    assert len(detector.detect(image, prompt, box_threshold=0.0, text_threshold=1.0).scores) == 0


def test_prompt_over_the_token_limit_is_refused(detector):
    assert detector.max_text_tokens == 256
    tokenizer = detector.processor.tokenizer
    long = parse_prompt(", ".join(f"object {i}" for i in range(100)))
    n = len(tokenizer(long.text)["input_ids"])
    assert n > 256
    with pytest.raises(PromptError, match=rf"{n} tokens long .* at most 256"):
        detector.check_prompt(long)
    fits = parse_prompt(", ".join(f"object {i}" for i in range(20)))
    assert len(tokenizer(fits.text)["input_ids"]) <= 256
    detector.check_prompt(fits)


def test_missing_or_wrong_local_models_say_what_to_do(tmp_path, runtime):
    with pytest.raises(ModelLoadError, match="no such GroundingDINO folder.*save_pretrained"):
        GroundingDinoDetector.from_pretrained(str(tmp_path / "missing" / "dino"), runtime=runtime)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        GroundingDinoDetector.from_pretrained(tmp_path / "empty", runtime=runtime)
