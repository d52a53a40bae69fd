"""What a notebook user of the Python API gets wrong: each is one clear error naming the mistake
and the fix, raised before anything is written, never a deep torch traceback or a silent result."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from vitcifar import (
    PRESETS,
    TRAIN_PRESETS,
    DataError,
    ImageSet,
    Splits,
    config_for_preset,
    evaluate,
    predict,
    train,
)


@pytest.fixture(scope="module")
def run(splits, tiny_cfg, kit, tmp_path_factory):
    """A finished one-epoch run folder of the tiny model."""
    out = tmp_path_factory.mktemp("api_run")
    train(tiny_cfg, splits, kit.cfg(epochs=1), out, progress=False)
    return out


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# ----------------------------------------------------------------------------- presets


def test_a_misspelt_train_setting_names_the_close_one():
    with pytest.raises(
        TypeError, match=r"'epoch' is not a TrainConfig setting; did you mean 'epochs'"
    ):
        config_for_preset("vit-fast", epoch=3)


def test_a_model_setting_given_to_config_for_preset_says_where_it_goes():
    with pytest.raises(
        TypeError, match=r"'depth' is a model \(ViTConfig\) setting.*replace\(model_cfg"
    ):
        config_for_preset("vit-fast", depth=3)


def test_a_preset_table_lookup_with_a_typo_lists_the_presets():
    for half in (PRESETS, TRAIN_PRESETS):
        with pytest.raises(
            KeyError, match="no preset 'vitfast'; choose one of 'deit-tiny', 'vit-fast'"
        ):
            half["vitfast"]
        assert half.get("vitfast") is None and "vitfast" not in half  # Mapping's own API stays


# ----------------------------------------------------------------------------- hand-built data


def _bad_image_sets(s: ImageSet):
    x, y = s.images, s.labels
    return {
        "float on [0, 1]": ((x.float() / 255, y), r"uint8 on the 0-255 scale, got torch.float32; use \(images \* 255\)"),
        "(N, H, W, C)": ((x.permute(0, 2, 3, 1), y), r"looks like \(N, H, W, C\); use images.permute\(0, 3, 1, 2\)"),
        "one image (C, H, W)": ((x[0], y[:1]), r"must be \(N, C, H, W\), got shape \(3, 32, 32\)"),
        "numpy": ((x.numpy(), y), "must be a torch tensor, got ndarray; convert it with torch.as_tensor"),
        "label too big": ((x, y + 1), r"in \[0, 4\) for its 4 classes, got labels from 1 to 4"),
        "negative label": ((x, y - 1), r"in \[0, 4\) for its 4 classes, got labels from -1 to 2"),
        "float labels": ((x, y.float()), "integer class indices, got torch.float32; use labels.long()"),
        "one label short": ((x, y[:-1]), r"one label per image, got shape \(63,\) for 64 images"),
        "labels as a list": ((x, y.tolist()), "labels must be a torch tensor, got list"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case", ["float on [0, 1]", "(N, H, W, C)", "one image (C, H, W)", "numpy", "label too big",
             "negative label", "float labels", "one label short", "labels as a list"],
)  # fmt: skip
def test_a_hand_built_image_set_that_is_wrong_says_how_to_fix_it(splits, case):
    (images, labels), message = _bad_image_sets(splits.train)[case]
    with pytest.raises(DataError, match=message):
        ImageSet(images, labels, splits.classes)


def test_an_image_set_with_int32_labels_is_fine(splits):
    s = ImageSet(splits.train.images, splits.train.labels.int(), splits.classes)
    assert len(s) == len(splits.train)


@pytest.mark.parametrize(
    "part, images, message",
    [
        ("train", lambda x: x[:, :1], r"training images are \(1, 32, 32\).*expand\(-1, 3, -1, -1\)"),
        ("val", lambda x: x[:, :1], r"validation images are \(1, 32, 32\).*expand"),
        ("train", lambda x: x[:, :, :16, :16], r"training images are \(3, 16, 16\).*resize the images to 32x32"),
    ],
)  # fmt: skip
def test_train_refuses_images_the_model_cannot_take_and_writes_nothing(
    splits, tiny_cfg, kit, tmp_path, part, images, message
):
    given = getattr(splits, part)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    parts[part] = ImageSet(images(given.images), given.labels, given.classes)
    with pytest.raises(DataError, match=message):
        train(tiny_cfg, Splits(**parts), kit.cfg(epochs=1), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_train_with_one_image_set_instead_of_splits_says_what_it_wants(
    splits, tiny_cfg, kit, tmp_path
):
    with pytest.raises(TypeError, match="splits must be a vitcifar Splits .* got ImageSet"):
        train(tiny_cfg, splits.train, kit.cfg(epochs=1), tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------- evaluate, predict


def test_evaluate_given_the_whole_splits_points_to_splits_test(run, splits):
    with pytest.raises(TypeError, match=r"got Splits; pass splits.test"):
        evaluate(run / "best.pt", splits, save=False)


def test_evaluate_on_an_empty_set_is_one_error_and_the_run_folder_is_untouched(run, splits):
    before = _digests(run)
    empty = ImageSet(splits.test.images[:0], splits.test.labels[:0], splits.classes)
    with pytest.raises(DataError, match="the test set is empty"):
        evaluate(run / "best.pt", empty)
    gray = ImageSet(splits.test.images[:, :1], splits.test.labels, splits.classes)
    with pytest.raises(DataError, match=r"test images are \(1, 32, 32\).*expand"):
        evaluate(run / "best.pt", gray)
    assert _digests(run) == before


def test_predict_takes_an_image_set_as_its_images(run, splits):
    from_set = predict(run / "best.pt", splits.test, device="cpu")
    from_tensor = predict(run / "best.pt", splits.test.images, device="cpu")
    assert from_set.sources == from_tensor.sources and len(from_set) == len(splits.test)
    np.testing.assert_array_equal(from_set.probabilities, from_tensor.probabilities)


def test_export_to_a_folder_names_the_file_to_write_and_leaves_the_folder_alone(run):
    from vitcifar import export_model

    before = _digests(run)
    with pytest.raises(ValueError, match=r"is a folder; name the file to write, e.g. .*model.pt"):
        export_model(run / "best.pt", run, format="torchscript")
    assert _digests(run) == before and not list(run.parent.glob(f".{run.name}*.tmp"))
