"""End-to-end training on a tiny model and a generated data set (CPU, seconds)."""

import os
import shutil
from dataclasses import replace

import pytest
import torch

from vitcifar.checkpoint import CheckpointError, atomic_save, load_checkpoint
from vitcifar.data import AugmentConfig, DataError, load_splits
from vitcifar.evaluate import evaluate, load_model
from vitcifar.train import TrainConfig, TrainingDiverged, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def splits(image_folder):
    return load_splits(str(image_folder), val_size=16, progress=False)


def quick_cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=2,
        batch_size=32,
        lr=3e-3,
        warmup_frac=0.1,
        device="cpu",
        num_workers=0,
        eval_batch_size=64,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


def test_tiny_vit_learns_well_above_chance(splits, tiny_cfg, tmp_path):
    cfg = quick_cfg(epochs=12, augment=AugmentConfig(randaug_ops=0, mixup_alpha=0, cutmix_alpha=0))
    run = train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    assert run.best_val_acc >= 0.75  # chance is 0.25
    report = evaluate(tmp_path / "run" / "best.pt", splits.test, device="cpu")
    assert report.accuracy >= 0.75
    assert report.confusion.shape == (4, 4) and report.confusion.sum() == len(splits.test)
    assert set(report.classes) == {"red", "green", "blue", "yellow"}
    for name in ("confusion", "misclassified", "curves", "attention", "metrics"):
        assert report.files[name].exists() and report.files[name].stat().st_size > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12
    assert run.history[0]["train_loss"] > run.history[-1]["train_loss"]


def _weights(path):
    return load_checkpoint(path)["model"]


def test_resume_is_exact(splits, tiny_cfg, tmp_path):
    cfg = quick_cfg(epochs=2)  # full augmentation: RandAugment + Mixup/CutMix
    train(tiny_cfg, splits, cfg, tmp_path / "straight", progress=False)
    first = train(tiny_cfg, splits, cfg, tmp_path / "resumed", progress=False, stop_after=1)
    assert len(first.history) == 1
    second = train(tiny_cfg, splits, cfg, tmp_path / "resumed", progress=False)  # picks up last.pt
    assert len(second.history) == 2
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = load_checkpoint(tmp_path / "straight" / "last.pt")["optimizer"]["state"]
    sb = load_checkpoint(tmp_path / "resumed" / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_a_finished_run_called_again_says_it_is_complete(splits, tiny_cfg, tmp_path, caplog):
    # Run all again after the last epoch: it once said "resuming ... at epoch 2 of 1"
    cfg = quick_cfg(epochs=1)
    train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with caplog.at_level("INFO", logger="vitcifar"):
        again = train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    assert f"{tmp_path / 'run'} is complete (1 of 1 epochs)" in caplog.text
    assert "resuming" not in caplog.text and "epoch 2 of 1" not in caplog.text
    assert len(again.history) == 1 and (tmp_path / "run" / "last.pt").read_bytes() == before


def test_a_damaged_last_pt_says_how_to_go_on_and_the_advice_works(splits, tiny_cfg, tmp_path):
    # damaged outside our atomic writes (a disk, a sync tool): the error once only said
    # "use RUN_DIR/best.pt", which training cannot be pointed at
    cfg = quick_cfg(epochs=3)
    run = tmp_path / "run"
    train(tiny_cfg, splits, cfg, run, progress=False, stop_after=2)
    last = run / "last.pt"
    data = bytearray(last.read_bytes())
    last.write_bytes(bytes(data[: len(data) // 2]))  # cut in half
    with pytest.raises(
        CheckpointError, match=r"copy .*best\.pt over last\.pt .* choose another --out"
    ):
        train(tiny_cfg, splits, cfg, run, progress=False)
    shutil.copyfile(run / "best.pt", last)  # the advice
    done = train(tiny_cfg, splits, cfg, run, progress=False)
    assert len(done.history) == 3


def test_other_settings_never_overwrite_a_run(splits, tiny_cfg, tmp_path):
    cfg = quick_cfg(epochs=1)
    train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"lr: 0.003 -> 0.1.*pass --resume"):
        train(tiny_cfg, splits, replace(cfg, lr=0.1), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_cfg, splits, cfg, tmp_path / "empty", resume=True, progress=False)


def test_divergence_stops_with_message_and_keeps_checkpoint(splits, tiny_cfg, tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        train(tiny_cfg, splits, quick_cfg(epochs=1, lr=1e30), tmp_path / "boom", progress=False)
    assert not (tmp_path / "boom" / "last.pt").exists()  # nothing broken was written

    cfg = quick_cfg(epochs=3)
    train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False, stop_after=1)
    last = tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(last)
    ckpt["model"]["head.weight"].fill_(float("nan"))  # weights that went bad after epoch 1
    atomic_save(ckpt, last)
    poisoned = last.read_bytes()
    best = (tmp_path / "run" / "best.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"keeps the last good epoch"):
        train(tiny_cfg, splits, cfg, tmp_path / "run", progress=False)
    assert last.read_bytes() == poisoned and (tmp_path / "run" / "best.pt").read_bytes() == best


def test_interrupted_save_leaves_old_checkpoint_readable(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed after writing the temporary file, before os.replace

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.fixture(scope="module")
def finished_run(splits, tmp_path_factory):
    from vitcifar.model import ViTConfig

    cfg = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    out = tmp_path_factory.mktemp("finished")
    train(cfg, splits, quick_cfg(epochs=1), out, progress=False)
    return out / "best.pt"


def test_checkpoint_errors_name_the_file(finished_run, tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_model(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(finished_run.read_bytes()[:5000])
    with pytest.raises(
        CheckpointError, match="truncated.pt is truncated or not a torch checkpoint"
    ):
        load_model(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt is not a torch checkpoint"):  # not a zip
        load_model(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(
        CheckpointError, match="foreign.pt is a torch file but not a vitcifar checkpoint"
    ):
        load_model(foreign)


class Payload:  # an arbitrary object: unpickling it could run code
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_never_unpickles_objects(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "vitcifar-checkpoint/1", "model": Payload()}, evil)
    with pytest.raises(
        CheckpointError, match="evil.pt is not a vitcifar checkpoint: it holds Python objects"
    ):
        load_model(evil)
    assert "this must never run" not in capsys.readouterr().out


def test_checkpoint_from_another_model_shape(finished_run, tmp_path):
    ckpt = load_checkpoint(finished_run)
    ckpt["model_config"]["dim"] = 64
    other = tmp_path / "other.pt"
    atomic_save(ckpt, other)
    with pytest.raises(CheckpointError, match="other.pt holds weights of another model shape"):
        load_model(other)


def test_evaluate_refuses_other_classes(finished_run, splits):
    from vitcifar.data import ImageSet

    renamed = ImageSet(splits.test.images, splits.test.labels, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="do not match the checkpoint's"):
        evaluate(finished_run, renamed, save=False)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the fall-back on a machine without a GPU"
)
def test_gpu_aug_without_gpu_warns_and_falls_back(splits, tiny_cfg, tmp_path):
    with pytest.warns(
        UserWarning,
        match="--gpu-aug needs a CUDA GPU; none is in use, so the CPU augmentation path",
    ):
        run = train(
            tiny_cfg, splits, quick_cfg(epochs=1, gpu_aug=True), tmp_path / "run", progress=False
        )
    assert len(run.history) == 1 and (tmp_path / "run" / "last.pt").exists()


def test_resume_on_other_data_is_refused(image_folder, tiny_cfg, tmp_path):
    cfg = quick_cfg(epochs=2)
    first = load_splits(str(image_folder), val_size=16, subset=96, progress=False)
    train(tiny_cfg, first, cfg, tmp_path / "run", progress=False, stop_after=1)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    other = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    with pytest.raises(DataError, match=r"was trained on other data \(96 train / 16 val"):
        train(tiny_cfg, other, cfg, tmp_path / "run", progress=False)
    reseeded = load_splits(str(image_folder), val_size=16, subset=96, seed=1, progress=False)
    with pytest.raises(DataError, match="same --data, --subset, --val-size and --seed"):
        train(tiny_cfg, reseeded, cfg, tmp_path / "run", progress=False, resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
