"""SAM 2 adapter: local loading paths, clear load errors, the embedding cache, mask shapes."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from textseg.errors import ModelLoadError
from textseg.segmenter import Sam2Segmenter


@pytest.fixture(scope="module")
def segmenter(text_segmenter):
    return text_segmenter.segmenter


def _image(h=90, w=120, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_embedding_is_computed_once_per_image(model_dirs, runtime):
    seg = Sam2Segmenter.from_pretrained(model_dirs["segmenter"], runtime=runtime)
    a, b = _image(seed=1), _image(seed=2)
    assert seg.set_image(a) is True
    assert seg.set_image(a.copy()) is False  # same pixels, new array: reused
    assert seg.encode_count == 1
    assert seg.set_image(b) is True and seg.encode_count == 2
    assert seg.set_image(a) is True and seg.encode_count == 3


def test_masks_have_the_image_size_or_the_requested_one(segmenter):
    segmenter.set_image(_image())
    boxes = np.array([[10, 10, 60, 50], [0, 0, 120, 90], [70, 20, 110, 80]], np.float32)
    masks, scores = segmenter.predict(boxes)
    assert masks.shape == (3, 90, 120) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    big, big_scores = segmenter.predict(boxes, output_size=(180, 240))
    assert big.shape == (3, 180, 240)
    np.testing.assert_allclose(big_scores, scores)
    # upsampled masks agree with the image-size ones on most pixels (random weights give
    # ragged masks, so the boundary is a large share of them; unrelated masks agree ~50%)
    assert (big[:, ::2, ::2] == masks).mean() > 0.85
    one, _ = segmenter.predict(boxes[:1])
    np.testing.assert_array_equal(one[0], masks[0])


def test_multimask_keeps_the_best_scored_proposal(segmenter):
    segmenter.set_image(_image(seed=3))
    boxes = np.array([[10, 10, 60, 50], [30, 5, 100, 70]], np.float32)
    _, scores = segmenter.predict(boxes, multimask=True)
    _, ious, _ = segmenter.predictor.predict(box=boxes, multimask_output=True)
    np.testing.assert_allclose(scores, ious.reshape(2, 3).max(axis=1), rtol=1e-5)


def test_predict_before_set_image(model_dirs, runtime):
    seg = Sam2Segmenter.from_pretrained(model_dirs["segmenter"], runtime=runtime)
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict(np.zeros((1, 4)))


def test_checkpoint_file_with_an_explicit_config(model_dirs, runtime, tmp_path):
    ckpt = shutil.copy(model_dirs["segmenter"] / "model.pt", tmp_path / "my_weights.pt")
    with pytest.raises(ModelLoadError, match="--segmenter-config"):
        Sam2Segmenter.from_pretrained(ckpt, runtime=runtime)
    seg = Sam2Segmenter.from_pretrained(
        ckpt, runtime=runtime, config=model_dirs["segmenter"] / "config.yaml"
    )
    assert seg.predictor.model.image_size == 256


def test_checkpoint_that_does_not_fit_its_config(model_dirs, runtime, tmp_path):
    # Named like Meta's file, so the released sam2.1_hiera_t config is used: a mismatch.
    ckpt = shutil.copy(model_dirs["segmenter"] / "model.pt", tmp_path / "sam2.1_hiera_tiny.pt")
    with pytest.raises(ModelLoadError, match="does not fit its config"):
        Sam2Segmenter.from_pretrained(ckpt, runtime=runtime)


def test_bad_specs_say_what_to_do(runtime, tmp_path):
    with pytest.raises(ModelLoadError, match="unknown SAM 2 model.*facebook/sam2.1-hiera-tiny"):
        Sam2Segmenter.from_pretrained("facebook/sam3-giant", runtime=runtime)
    with pytest.raises(ModelLoadError, match="no such SAM 2 checkpoint"):
        Sam2Segmenter.from_pretrained(tmp_path / "gone.pt", runtime=runtime)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("model: {}\n")
    with pytest.raises(ModelLoadError, match="config.yaml and model.pt"):
        Sam2Segmenter.from_pretrained(tmp_path / "half", runtime=runtime)
    with pytest.raises(ModelLoadError, match="has no config"):
        Sam2Segmenter.from_local(config="configs/nope.yaml", checkpoint=None, runtime=runtime)


def test_missing_sam2_install_says_how_to_install(runtime, monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # as if sam2 were not installed
    with pytest.raises(
        ModelLoadError, match="SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2"
    ):
        Sam2Segmenter.from_pretrained("facebook/sam2.1-hiera-tiny", runtime=runtime)
