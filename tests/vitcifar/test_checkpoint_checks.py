"""Checkpoints are checked before anything is built from them: the checksum of their tensors, the
type of every stored field, the bounds of the model config, finite weights. Each bad file is one
line from the CLI (exit status 2), never a traceback, a NaN probability or an accuracy."""

from __future__ import annotations

import importlib
import logging
import zipfile

import pytest
import torch

from vitcifar.checkpoint import (
    CHECKSUM_KEY,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    tensor_checksum,
)
from vitcifar.data import load_splits
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def best(image_folder, tmp_path_factory):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    model = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, device="cpu", num_workers=0)
    out = tmp_path_factory.mktemp("checked")
    train(model, splits, cfg, out, progress=False)
    return out / "best.pt"


def edited(best, tmp_path, name: str, edit) -> str:
    """A copy of ``best`` with ``edit(ckpt)`` applied, written as the project writes (checksum)."""
    ckpt = load_checkpoint(best)
    edit(ckpt)
    path = tmp_path / name
    atomic_save(ckpt, path)
    return str(path)


def evaluate_args(checkpoint, image_folder, tmp_path):
    return (
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(image_folder),
        "--out",
        str(tmp_path / "eval"),
        "--device",
        "cpu",
    )


def test_every_written_checkpoint_carries_the_checksum_of_its_tensors(best):
    raw = torch.load(best, weights_only=True)
    assert raw[CHECKSUM_KEY] == tensor_checksum(raw)
    assert raw[CHECKSUM_KEY]["tensors"] > len(raw["model"])  # weights, optimizer, RNG states
    assert CHECKSUM_KEY not in load_checkpoint(best)  # the loaded dict is the TrainState's


def test_a_flipped_byte_in_tensor_data_is_a_clear_error(
    best, tmp_path, image_folder, run_cli, one_error_line
):
    damaged = tmp_path / "damaged.pt"
    data = bytearray(best.read_bytes())
    with zipfile.ZipFile(best) as z:  # the largest tensor record: the bytes of a weight matrix
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    assert info.compress_type == zipfile.ZIP_STORED
    data[start + info.file_size // 2] ^= 0x10
    damaged.write_bytes(bytes(data))
    torch.load(damaged, weights_only=True)  # torch alone does not notice
    with pytest.raises(CheckpointError, match=r"damaged.pt is damaged: its tensors do not match"):
        load_checkpoint(damaged)
    err = one_error_line(run_cli(*evaluate_args(damaged, image_folder, tmp_path)))
    assert "damaged.pt is damaged" in err and "test accuracy" not in err
    assert not (tmp_path / "eval").exists()


def test_a_file_without_a_checksum_loads_with_a_note(best, tmp_path, caplog):
    raw = torch.load(best, weights_only=True)
    del raw[CHECKSUM_KEY]
    old = tmp_path / "old.pt"
    torch.save(raw, old)  # as vitcifar wrote files before it recorded checksums
    with caplog.at_level(logging.INFO, logger="vitcifar.checkpoint"):
        ckpt = load_checkpoint(old)
    assert "old.pt has no tensor checksum" in caplog.text
    assert torch.equal(ckpt["model"]["head.weight"], raw["model"]["head.weight"])


def test_config_bomb_is_refused_before_any_model_is_built(
    best, tmp_path, monkeypatch, run_cli, one_error_line
):
    bomb = edited(best, tmp_path, "bomb.pt", lambda c: c["model_config"].update(depth=10**6))
    evaluate_module = importlib.import_module("vitcifar.evaluate")  # not the function of that name
    built = []
    monkeypatch.setattr(evaluate_module, "ViT", lambda cfg: built.append(cfg))
    with pytest.raises(CheckpointError, match=r"depth=1000000 is beyond what vitcifar builds"):
        evaluate_module.load_model(bomb)
    assert built == []  # refused before the model (3.2 GB and rising, issue 20) was allocated
    err = one_error_line(run_cli("predict", "--checkpoint", bomb, "--device", "cpu", str(best)))
    assert "bomb.pt: model_config depth=1000000 is beyond what vitcifar builds" in err


@pytest.mark.parametrize(
    "field, value",
    [("dim", 100_000), ("image_size", 4096), ("heads", 1000), ("patch_size", 512)],
)
def test_model_config_bounds(best, tmp_path, field, value):
    path = edited(best, tmp_path, "big.pt", lambda c: c["model_config"].update({field: value}))
    with pytest.raises(CheckpointError, match=rf"{field}={value} is beyond what vitcifar builds"):
        load_checkpoint(path)


def test_a_model_too_big_in_total_is_refused(best, tmp_path):
    path = edited(
        best, tmp_path, "wide.pt", lambda c: c["model_config"].update(dim=4096, depth=128)
    )
    with pytest.raises(CheckpointError, match=r"asks for a model beyond what vitcifar builds"):
        load_checkpoint(path)


def test_nan_weights_give_no_probability_and_no_accuracy(
    best, tmp_path, image_folder, run_cli, one_error_line
):
    nan = edited(best, tmp_path, "nan.pt", lambda c: c["model"]["head.weight"].fill_(float("nan")))
    done = run_cli("predict", "--checkpoint", nan, "--device", "cpu", str(image_folder))
    err = one_error_line(done)
    assert "nan.pt holds weights that are not finite (NaN or inf in head.weight)" in err
    assert "nan%" not in done.stdout and done.stdout == ""
    done = run_cli(*evaluate_args(nan, image_folder, tmp_path))
    assert "not finite" in one_error_line(done) and "accuracy" not in done.stdout
    assert not (tmp_path / "eval").exists()


def _set(section, key, value):
    def edit(ckpt):
        if section is None:
            ckpt[key] = value
        else:
            ckpt[section][key] = value

    return edit


MALFORMED = {
    # a train config that does not compare: epochs as text ('<' between str and int)
    "train config that does not compare": (
        _set("train_config", "epochs", "10"),
        r"train_config.epochs is '10' \(str\), not a whole number",
    ),
    "config that is a string": (
        _set(None, "model_config", "ViTConfig(dim=192)"),
        r"model_config is 'ViTConfig\(dim=192\)' \(str\), not a dict of ViTConfig settings",
    ),
    "garbage config value": (
        _set("model_config", "dim", [1, 2]),
        r"model_config.dim is \[1, 2\] \(list\), not a whole number",
    ),
    "garbage choice": (
        _set("model_config", "pool", "max"),
        r"model_config.pool is 'max' \(str\), not one of \('cls', 'mean'\)",
    ),
    "history that is a string": (
        _set(None, "history", "epoch 1: 0.5"),
        r"history is 'epoch 1: 0.5' \(str\), not a list of epochs",
    ),
    "train config with a tensor": (
        _set("train_config", "lr", torch.tensor(1e-3)),
        r"train_config.lr is tensor\(0.0010\) \(Tensor\), not a finite number or None",
    ),
    "nested augment config": (
        _set(None, "train_config", {"augment": {"flip": "yes"}}),
        r"train_config.augment.flip is 'yes' \(str\), not true or false",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_but_loadable_checkpoints_are_one_error_line(
    case, best, tmp_path, image_folder, run_cli, one_error_line
):
    edit, message = MALFORMED[case]
    path = edited(best, tmp_path, "odd.pt", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    err = one_error_line(run_cli(*evaluate_args(path, image_folder, tmp_path)))
    assert "odd.pt" in err


class Payload:  # an arbitrary object: unpickling it could run code
    def __reduce__(self):
        return (print, ("this must never run",))


def test_malicious_pickle_refusal_keeps_torchs_warning_whole(
    tmp_path, image_folder, run_cli, one_error_line
):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "vitcifar-checkpoint/1", "model": Payload()}, evil)
    done = run_cli(*evaluate_args(evil, image_folder, tmp_path))
    err = one_error_line(done)
    assert "evil.pt is not a vitcifar checkpoint: it holds Python objects" in err
    assert "Unsupported global: GLOBAL builtins.print" in err or "GLOBAL print" in err
    assert (
        "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but it "
        "can result in arbitrary code execution. Do it only if you got the file from a trusted "
        "source." in err
    )
    assert "this must never run" not in done.stdout + done.stderr


def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(
    best, image_folder, tmp_path, run_cli, one_error_line
):
    # Realistic slips: --checkpoint given an export, a photo or the metrics. torch's weights-only
    # reader called these "Python objects that are not allowed to be loaded safely" and advised
    # weights_only=False; a TorchScript file also printed torch's UserWarning.
    from PIL import Image

    from vitcifar.export import export_model

    files = {"model.torchscript.pt": "it is a TorchScript export, for torch.jit.load"}
    export_model(best, tmp_path / "model.torchscript.pt", format="torchscript")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "photo.jpg")
    files["photo.jpg"] = "not a file that torch.save writes"
    (tmp_path / "metrics.json").write_text('{"test_accuracy": 0.5}')
    files["metrics.json"] = "not a file that torch.save writes"
    (tmp_path / "model.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")  # an ONNX protobuf's start
    files["model.onnx"] = "it is an ONNX export, for onnxruntime"
    for name, what in files.items():
        path = tmp_path / name
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert str(caught.value).startswith(f"{path} is not a torch checkpoint ({what}")
        assert "weights_only" not in str(caught.value)
    done = run_cli(*evaluate_args(tmp_path / "model.torchscript.pt", image_folder, tmp_path))
    err = one_error_line(done)  # torch's UserWarning about TorchScript no longer comes first
    assert "is not a torch checkpoint (it is a TorchScript export" in err
