"""A run folder is one consistent set of files: a kill between any two writes, then the same call
again, ends with the files of an uninterrupted run (vitcifar.checkpoint.RunFolder)."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

import vitcifar.checkpoint as checkpoint
from vitcifar.checkpoint import (
    FORMAT,
    CheckpointError,
    RunFolderError,
    TrainState,
    atomic_save,
    config_diff,
    load_checkpoint,
)
from vitcifar.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(splits, tiny_cfg, kit, tmp_path_factory):
    """An uninterrupted run, and the number of file writes it made."""
    folder = tmp_path_factory.mktemp("reference")
    calls = []
    real = checkpoint.atomic_write

    def counting(path, write):
        calls.append(path.name)
        real(path, write)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", counting)
        train(tiny_cfg, splits, kit.cfg(), folder, progress=False)
    return kit.run_files(folder), calls


def test_reference_run_writes_last_then_best_then_metrics(reference):
    _, calls = reference
    # each epoch: last.pt (the commit point), then best.pt if it is the best, then metrics.jsonl
    assert re.fullmatch(r"(last\.pt (best\.pt )?metrics\.jsonl )+", " ".join(calls) + " ")
    assert calls.count("last.pt") == 2 and calls[1] == "best.pt"  # epoch 1 is always the best


@pytest.mark.parametrize("mode", ["mid", "after"])  # killed during a write, or right after it
@pytest.mark.kill
def test_kill_at_every_write_then_the_same_call_finishes_identically(
    mode, reference, splits, tiny_cfg, tmp_path, kit
):
    expected, calls = reference
    real = checkpoint.atomic_write
    for n in range(1, len(calls) + 1):
        folder = tmp_path / f"kill{n}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(checkpoint, "atomic_write", kit.dying_at(n, mode, real))
            with pytest.raises(kit.Killed):
                train(tiny_cfg, splits, kit.cfg(), folder, progress=False)
        train(tiny_cfg, splits, kit.cfg(), folder, progress=False)  # the same call again
        got = kit.run_files(folder)
        assert not [p for p in folder.iterdir() if p.suffix == ".tmp"], (n, mode)
        kit.assert_same(got, expected)


def test_finished_run_with_stale_files_is_repaired_by_the_same_call(
    reference, splits, tiny_cfg, tmp_path, caplog, kit
):
    expected, _ = reference
    folder = tmp_path / "run"
    train(tiny_cfg, splits, kit.cfg(), folder, progress=False, stop_after=1)
    epoch1 = (folder / "last.pt").read_bytes()
    train(tiny_cfg, splits, kit.cfg(), folder, progress=False)
    (folder / "best.pt").write_bytes(epoch1)  # as if killed before best.pt of epoch 2 was written
    (folder / "metrics.jsonl").write_text("")
    last = load_checkpoint(folder / "last.pt")
    with caplog.at_level(logging.INFO, logger="vitcifar.checkpoint"):
        run = train(tiny_cfg, splits, kit.cfg(), folder, progress=False)  # nothing to train
    assert len(run.history) == 2
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert kit.without_timing(metrics) == expected["metrics"]
    if last["best_epoch"] == 2:  # best.pt was behind: re-derived from last.pt
        assert (folder / "best.pt").read_bytes() == (folder / "last.pt").read_bytes()
        assert "best.pt is behind last.pt" in caplog.text
    else:  # epoch 1 stays the best: best.pt is right as it is
        assert (folder / "best.pt").read_bytes() == epoch1
    kit.assert_same(kit.run_files(folder), expected)


def test_folder_with_another_runs_files_but_no_last_is_refused(splits, tiny_cfg, tmp_path, kit):
    folder = tmp_path / "someone_else"
    folder.mkdir()
    (folder / "best.pt").write_bytes(b"their weights")
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(RunFolderError, match=r"holds best.pt, metrics.jsonl but no last.pt"):
        train(tiny_cfg, splits, kit.cfg(epochs=1), folder, progress=False)
    assert (folder / "best.pt").read_bytes() == b"their weights"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "metrics.jsonl"]


def test_out_below_a_file_is_a_clear_error(splits, tiny_cfg, tmp_path, kit):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(
        RunFolderError, match=r"cannot write the run folder .*file.txt/run.*choose another --out"
    ):
        train(tiny_cfg, splits, kit.cfg(epochs=1), tmp_path / "file.txt" / "run", progress=False)


def test_empty_checkpoint_is_a_clear_error(tmp_path):
    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError, match=r"last.pt is empty \(0 bytes\)"):
        load_checkpoint(empty)


# ----------------------------------------------------------------------------- the resume state
# (checkpoint.TrainState): the file format stays the same both ways.

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


def test_a_written_state_has_exactly_the_format_1_keys(splits, tiny_cfg, tmp_path, kit):
    train(tiny_cfg, splits, kit.cfg(epochs=1, ema_decay=0.9), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(ckpt) == FORMAT_1_KEYS and ckpt["format"] == FORMAT
    state = TrainState.from_dict(ckpt)
    again = state.to_dict()
    assert set(again) == FORMAT_1_KEYS
    assert all(again[k] is ckpt[k] for k in FORMAT_1_KEYS - {"format"})  # no copy, no change


def test_a_checkpoint_from_before_data_runtime_and_classes_resumes_exactly(
    splits, tiny_cfg, tmp_path, kit
):
    """A last.pt without the keys added later (data, runtime, classes) continues, and ends
    where an uninterrupted run ends."""
    train(tiny_cfg, splits, kit.cfg(ema_decay=0.9), tmp_path / "straight", progress=False)
    train(tiny_cfg, splits, kit.cfg(ema_decay=0.9), tmp_path / "old", progress=False, stop_after=1)
    last = tmp_path / "old" / "last.pt"
    old = {
        k: v for k, v in load_checkpoint(last).items() if k not in ("data", "runtime", "classes")
    }
    atomic_save(old, last)
    train(tiny_cfg, splits, kit.cfg(ema_decay=0.9), tmp_path / "old", progress=False)
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
