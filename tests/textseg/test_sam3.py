"""SAM 3 (transformers' real Sam3Model / Sam3Processor, tiny random weights): the adapter
against the plain composition, the "sam3" backend, and the semantic check of the default
pipeline (text_match, min_text_match); plus their errors and the pure IoU helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textseg import ModelLoadError, PromptError, TextSegmenter, load, save
from textseg.cli import main
from textseg.images import load_image, working_copy
from textseg.pipeline import CHECK_THRESHOLD
from textseg.prompt import parse_prompt
from textseg.sam3 import Sam3TextMasker, import_sam3, is_gated_error, sam3_load_error
from textseg.testing import make_sam3
from textseg.textmatch import mask_iou, text_match

FORCE = {"box_threshold": 0.0, "text_threshold": 0.0}

if getattr(pytest.importorskip("transformers"), "Sam3Model", None) is None:
    pytest.skip("this transformers has no Sam3Model (needs 5.0 or newer)", allow_module_level=True)


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return make_sam3(tmp_path_factory.mktemp("models") / "sam3-test")


@pytest.fixture(scope="module")
def masker(sam3_dir, runtime):
    return Sam3TextMasker.from_pretrained(sam3_dir, runtime=runtime)


@pytest.fixture(scope="module")
def sam3_segmenter(sam3_dir, model_dirs):
    return TextSegmenter.from_pretrained(
        backend="sam3", sam3=sam3_dir, segmenter=model_dirs["segmenter"], device="cpu"
    )


@pytest.fixture(scope="module")
def checked_segmenter(sam3_dir, model_dirs):
    return TextSegmenter.from_pretrained(
        detector=model_dirs["detector"],
        segmenter=model_dirs["segmenter"],
        sam3=sam3_dir,
        device="cpu",
    )


# --- the adapter --------------------------------------------------------------------------


def test_make_sam3_builds_transformers_real_classes(sam3_dir):
    from transformers import AutoModel, AutoProcessor

    assert type(AutoModel.from_pretrained(sam3_dir)).__name__ == "Sam3Model"
    assert type(AutoProcessor.from_pretrained(sam3_dir)).__name__ == "Sam3Processor"


def test_masker_equals_the_plain_composition(masker, sample_image):
    """Per phrase: processor → Sam3Model → post_process_instance_segmentation, by hand."""
    image = load_image(sample_image)
    prompt = parse_prompt("cat, red car")
    ours = masker.segment_text(image, prompt, threshold=0.2)
    proc, model = masker.processor, masker.model
    for p, phrase in enumerate(prompt.phrases):
        inputs = proc(images=image, text=phrase, return_tensors="pt")
        with torch.inference_mode():
            out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        ref = proc.post_process_instance_segmentation(
            out, threshold=0.2, mask_threshold=0.5, target_sizes=[(240, 320)]
        )[0]
        mine = ours.phrase_ids == p
        np.testing.assert_allclose(ours.scores[mine], ref["scores"].numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.boxes[mine], ref["boxes"].numpy(), rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(ours.masks[mine], ref["masks"].numpy().astype(bool))
        presence = torch.sigmoid(out.presence_logits).item()
        assert ours.presence[p] == pytest.approx(presence, rel=1e-5)
    assert ours.masks.shape[1:] == (240, 320) and ours.masks.dtype == bool


def test_masker_embeds_each_image_once(sam3_dir, runtime, sample_image):
    masker = Sam3TextMasker.from_pretrained(sam3_dir, runtime=runtime)
    image = load_image(sample_image)
    masker.segment_text(image, parse_prompt("cat, dog"), threshold=0.0)
    masker.segment_text(image.copy(), parse_prompt("remote"), threshold=0.0)
    assert masker.encode_count == 1
    masker.segment_text(image.transpose(0), parse_prompt("remote"), threshold=0.0)
    assert masker.encode_count == 2


def test_a_phrase_longer_than_sam3_reads_is_refused(masker):
    with pytest.raises(PromptError, match="tokens long but SAM 3 reads at most 32"):
        masker.check_prompt(parse_prompt("a very long description of a cat on a mat"))


# --- loading errors -----------------------------------------------------------------------


def test_gated_repository_error_says_how_to_get_access():
    # what transformers raises for a gated repo without access (an OSError around the hub's)
    err = OSError(
        "You are trying to access a gated repo.\nMake sure to have access to it at "
        "https://huggingface.co/facebook/sam3.\n401 Client Error."
    )
    assert is_gated_error(err)
    message = str(sam3_load_error("facebook/sam3", err))
    assert "gated" in message and "https://huggingface.co/facebook/sam3" in message
    assert "ask for access" in message and "hf auth login" in message and "HF_TOKEN" in message
    other = str(sam3_load_error("nope/nope", OSError("nope/nope is not a valid model id")))
    assert "ask for access" not in other and "make_sam3" in other


def test_missing_sam3_classes_name_the_transformers_to_install(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "Sam3Model", None)
    with pytest.raises(ModelLoadError, match=r"Sam3Model .* \(5.0 or newer\).*pip install -U"):
        import_sam3()


def test_missing_local_sam3_says_what_to_pass(tmp_path, runtime):
    with pytest.raises(ModelLoadError, match="no such SAM 3 folder"):
        Sam3TextMasker.from_pretrained(str(tmp_path / "a" / "b"), runtime=runtime)
    with pytest.raises(ModelLoadError, match="config.json"):
        Sam3TextMasker.from_pretrained(tmp_path, runtime=runtime)


# --- backend "sam3" -----------------------------------------------------------------------


def test_sam3_backend_returns_a_segmentation_with_presence(sam3_segmenter, sample_image):
    ts = sam3_segmenter
    assert ts.backend == "sam3" and ts.detector is None
    # random weights give every query about the same box: nms_iou=1 keeps them apart
    seg = ts.segment(sample_image, "Cat, remote.", box_threshold=0.0, nms_iou=1.0, max_objects=5)
    assert len(seg) == 5 and seg.masks.shape == (5, 240, 320)
    assert set(seg.labels) <= {"cat", "remote"} and seg.kinds == ["text"] * 5
    assert set(seg.phrase_presence) == {"cat", "remote"}
    assert seg.presence_scores == [seg.phrase_presence[label] for label in seg.labels]
    # score = query score × presence score, so never above the presence score
    assert all(s <= p + 1e-6 for s, p in zip(seg.scores, seg.presence_scores))
    assert (np.diff(seg.scores) <= 0).all()
    np.testing.assert_array_equal(seg.mask_scores, seg.scores)
    assert seg.text_match == [None] * 5
    # a threshold above every score: no objects, but still the presence per phrase
    none = ts.segment(sample_image, "cat", box_threshold=1.0)
    assert len(none) == 0 and set(none.phrase_presence) == {"cat"}


def test_sam3_backend_second_prompt_reuses_the_embedding(sam3_segmenter, sample_image):
    ts = sam3_segmenter
    ts.segment(sample_image, "cat", box_threshold=0.0, max_objects=1)
    before = ts.masker.encode_count
    ts.segment(sample_image, "dog, remote", box_threshold=0.0, max_objects=1)
    assert ts.masker.encode_count == before


def test_sam3_backend_takes_boxes_and_points_too(sam3_segmenter, sample_image, tmp_path):
    seg = sam3_segmenter.segment(
        sample_image, "cat", boxes=[[10, 10, 100, 100]], points=[(200, 120)],
        box_threshold=0.0, nms_iou=1.0, max_objects=2,
    )  # fmt: skip
    assert seg.kinds == ["box", "points", "text", "text"]
    assert seg.presence_scores[:2] == [None, None] and seg.presence_scores[2] is not None
    save(seg, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "segmentation.json").read_text())
    assert set(data["phrase_presence"]) == {"cat"}
    assert data["objects"][2]["presence_score"] == pytest.approx(seg.presence_scores[2])
    back = load(tmp_path / "out")
    assert back.phrase_presence == pytest.approx(seg.phrase_presence)


def test_sam3_backend_refuses_groundingdino_options(sam3_segmenter, sample_image, sam3_dir):
    with pytest.raises(ValueError, match="detector_size sets GroundingDINO's input size"):
        sam3_segmenter.segment(sample_image, "cat", detector_size=512)
    with pytest.raises(ValueError, match="min_text_match needs the SAM 3 checker"):
        sam3_segmenter.segment(sample_image, "cat", min_text_match=0.5)
    with pytest.raises(ValueError, match="backend 'sam3' does not use it"):
        TextSegmenter.from_pretrained(backend="sam3", sam3=sam3_dir, detector="x")
    with pytest.raises(ValueError, match="is not one of groundingdino\\+sam2, sam3"):
        TextSegmenter.from_pretrained(backend="sam2")


# --- the semantic check -------------------------------------------------------------------


def test_mask_iou_and_text_match_by_hand():
    a = np.zeros((1, 4, 4), bool)
    a[0, :2, :2] = True  # 4 pixels
    b = np.zeros((3, 4, 4), bool)
    b[0, :2, :] = True  # 8 pixels, 4 shared → 4/8
    b[1] = a[0]  # identical → 1
    np.testing.assert_allclose(mask_iou(a[0], b), [0.5, 1.0, 0.0])
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((1, 4, 4), bool)).tolist() == [0.0]
    masks = np.concatenate([a, a])
    # object 0 is phrase 0 (reference masks of phrase 0: b[0] only), object 1 is phrase 2
    out = text_match(masks, [0, 2], b, [0, 1, 1])
    np.testing.assert_allclose(out, [0.5, 0.0])
    with pytest.raises(ValueError, match="one phrase id"):
        text_match(masks, [0], b, [0, 1, 1])


def test_checker_scores_each_text_object(checked_segmenter, sample_image):
    ts = checked_segmenter
    assert ts.backend == "groundingdino+sam2" and ts.checker is not None
    seg = ts.segment(sample_image, "cat, remote", boxes=[[5, 5, 60, 60]], max_objects=4, **FORCE)
    assert seg.text_match[0] is None  # the user's box has no phrase
    values = np.array(seg.text_match[1:], dtype=np.float32)
    assert len(values) == 4 and ((values >= 0) & (values <= 1)).all()
    # the same numbers by hand: SAM 3's masks for each phrase, best IoU
    image = load_image(sample_image)
    prompt = parse_prompt("cat, remote")
    ref = ts.checker.segment_text(
        working_copy(image, max_side=ts.max_side), prompt, threshold=CHECK_THRESHOLD,
        output_size=(240, 320),
    )  # fmt: skip
    ids = np.array([prompt.phrases.index(label) for label in seg.labels[1:]])
    np.testing.assert_allclose(values, text_match(seg.masks[1:], ids, ref.masks, ref.phrase_ids))


def test_min_text_match_drops_only_text_objects_below_it(checked_segmenter, sample_image):
    ts = checked_segmenter
    every = ts.segment(sample_image, "cat, remote", max_objects=6, **FORCE)
    values = np.array(every.text_match, dtype=np.float32)
    cut = float(np.median(values))
    kept = ts.segment(
        sample_image, "cat, remote", boxes=[[5, 5, 60, 60]], max_objects=6,
        min_text_match=cut, **FORCE,
    )  # fmt: skip
    assert kept.kinds[0] == "box"
    assert kept.text_match[1:] == [v for v in every.text_match if v >= cut]
    assert len(kept) - 1 == int((values >= cut).sum())
    assert len(ts.segment(sample_image, "cat", min_text_match=0.0, max_objects=3, **FORCE)) == 3


def test_min_text_match_without_a_checker_says_how_to_load_one(text_segmenter, sample_image):
    with pytest.raises(ValueError, match="min_text_match needs the SAM 3 checker"):
        text_segmenter.segment(sample_image, "cat", min_text_match=0.3)
    with pytest.raises(ValueError, match="min_text_match must be in"):
        text_segmenter.segment(sample_image, "cat", min_text_match=2.0)


# --- CLI ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_sam3_backend_and_checker(sam3_dir, model_dirs, sample_image, tmp_path, capsys):
    sam2 = ["--segmenter", str(model_dirs["segmenter"]), "--sam3", str(sam3_dir)]
    out = tmp_path / "sam3"
    argv = [str(sample_image), "--prompt", "cat", "--out", str(out), "--backend", "sam3",
            "--box-threshold", "0", "--nms-iou", "1", "--max-objects", "2", *sam2]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / sample_image.stem / "segmentation.json").read_text())
    assert len(data["objects"]) == 2 and set(data["phrase_presence"]) == {"cat"}
    out = tmp_path / "checked"
    argv = [str(sample_image), "--prompt", "cat", "--out", str(out), "--detector",
            str(model_dirs["detector"]), "--box-threshold", "0", "--text-threshold", "0",
            "--max-objects", "3", "--min-text-match", "0", *sam2]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / sample_image.stem / "segmentation.json").read_text())
    assert len(data["objects"]) == 3
    assert all(0 <= o["text_match"] <= 1 for o in data["objects"])
    capsys.readouterr()
