"""The resume state (vitcifar.checkpoint.TrainState): the file format stays the same both ways,
and checkpoints written before some keys existed still resume exactly."""

from __future__ import annotations

import pytest
import torch

from vitcifar.checkpoint import (
    FORMAT,
    CheckpointError,
    TrainState,
    atomic_save,
    config_diff,
    load_checkpoint,
)
from vitcifar.data import AugmentConfig, load_splits
from vitcifar.train import TrainConfig, train

# The keys every vitcifar-checkpoint/1 file has held (train._checkpoint before TrainState).
FORMAT_1_KEYS = {
    "format",
    "model",
    "ema",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "best_val_acc",
    "best_epoch",
    "history",
    "rng",
    "model_config",
    "train_config",
    "classes",
    "data",
    "runtime",
}


@pytest.fixture(scope="module")
def splits(image_folder):
    return load_splits(str(image_folder), val_size=16, subset=48, progress=False)


def cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=2,
        batch_size=16,
        lr=3e-3,
        device="cpu",
        num_workers=0,
        ema_decay=0.9,
        augment=AugmentConfig(randaug_ops=0),  # Mixup/CutMix stay: random draws that must resume
    )
    return TrainConfig(**{**base, **kw})


def test_a_written_state_has_exactly_the_format_1_keys(splits, tiny_cfg, tmp_path):
    train(tiny_cfg, splits, cfg(epochs=1), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(ckpt) == FORMAT_1_KEYS and ckpt["format"] == FORMAT
    state = TrainState.from_dict(ckpt)
    again = state.to_dict()
    assert set(again) == FORMAT_1_KEYS
    assert all(again[k] is ckpt[k] for k in FORMAT_1_KEYS - {"format"})  # no copy, no change


@pytest.mark.slow
def test_a_checkpoint_from_before_data_runtime_and_classes_resumes_exactly(
    splits, tiny_cfg, tmp_path
):
    """A last.pt without the keys added later (data, runtime, classes) continues, and ends
    where an uninterrupted run ends."""
    train(tiny_cfg, splits, cfg(), tmp_path / "straight", progress=False)
    train(tiny_cfg, splits, cfg(), tmp_path / "old", progress=False, stop_after=1)
    last = tmp_path / "old" / "last.pt"
    old = {
        k: v for k, v in load_checkpoint(last).items() if k not in ("data", "runtime", "classes")
    }
    atomic_save(old, last)
    train(tiny_cfg, splits, cfg(), tmp_path / "old", progress=False)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(last)
    assert b["epoch"] == 2
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_a_state_without_what_a_resume_needs_names_the_file():
    with pytest.raises(CheckpointError, match=r"old\.pt is missing \['optimizer'\]"):
        TrainState.from_dict(
            {
                "format": FORMAT,
                "model": {},
                "scheduler": {},
                "scaler": {},
                "model_config": {},
                "train_config": {},
                "rng": {},
            },
            "old.pt",
        )


def test_config_diff_names_each_changed_key_and_skips_the_runtime_ones():
    a = {"lr": 1e-3, "epochs": 10, "device": "cpu"}
    b = {"lr": 2e-3, "epochs": 10, "device": "cuda", "seed": 1}
    assert config_diff(a, b, skip=("device",)) == ["lr: 0.001 -> 0.002", "seed: None -> 1"]
