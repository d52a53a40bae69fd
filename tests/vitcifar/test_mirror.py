"""A run folder mirrored to a second place (Google Drive): the mirror is written rarely, so Drive's
Trash does not fill up, a disconnect loses at most ``max_loss_s`` of training, and a kill at any
write (local or mirror), then the same call again, ends with the files of an uninterrupted run
(vitcifar.checkpoint.Mirror)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

import vitcifar.checkpoint as checkpoint
from vitcifar.checkpoint import MirrorPolicy, RunFolderError, load_checkpoint
from vitcifar.colab import NOTEBOOK_KNOBS
from vitcifar.data import AugmentConfig, load_splits
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, eta_text, train

pytestmark = pytest.mark.slow

TIMING = ("seconds", "train_seconds", "images_per_s")
EPOCH_S = 240.0  # what one epoch "takes" on the fake clock
POLICY = dict(max_loss_s=600.0, best_every_s=7200.0)


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no ``except Exception`` in the code catches it."""


class FakeClock:
    """Each reading is ``step`` seconds after the previous one: the mirror reads the clock once
    when a run starts and once per epoch, so an epoch lasts ``step``."""

    def __init__(self, step: float = EPOCH_S) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


class FakeDrive:
    """Counts what a folder's files cost on Google Drive, whose Trash keeps every replaced or
    deleted file: the size of every (name, inode) that disappears between two looks. The code
    under test is untouched: the folder is looked at before and after each ``atomic_write``."""

    def __init__(self, path) -> None:
        self.path = path
        self.seen: dict[tuple[str, int], int] = {}
        self.churn = 0
        self.writes: list[str] = []

    def look(self) -> None:
        now = {}
        if self.path.exists():
            for p in self.path.iterdir():
                st = p.stat()
                now[(p.name, st.st_ino)] = st.st_size
        self.churn += sum(size for key, size in self.seen.items() if key not in now)
        self.seen = now

    def wrap(self, write):
        def counted(path, fn):
            inside = path.parent == self.path
            if inside:
                self.look()
            write(path, fn)
            if inside:
                self.writes.append(path.name)
                self.look()

        return counted


@pytest.fixture(scope="module")
def splits(image_folder):
    return load_splits(str(image_folder), val_size=16, subset=64, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return ViTConfig(
        patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.0, emb_dropout=0.0
    )


def cfg(**kw) -> TrainConfig:
    base = dict(
        epochs=6,
        batch_size=16,
        lr=3e-3,
        warmup_frac=0.1,
        device="cpu",
        num_workers=0,
        augment=AugmentConfig(randaug_ops=0),  # Mixup/CutMix stay: random draws that must resume
    )
    return TrainConfig(**{**base, **kw})


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def run_files(folder):
    """What a finished run leaves (timings taken out: they differ between runs)."""
    last, best = load_checkpoint(folder / "last.pt"), load_checkpoint(folder / "best.pt")
    metrics = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return {
        "last_epoch": last["epoch"],
        "best_epoch": (last["best_epoch"], best["epoch"]),
        "last_model": last["model"],
        "best_model": best["model"],
        "adam": {i: s["exp_avg"] for i, s in last["optimizer"]["state"].items()},
        "history": without_timing(last["history"]),
        "metrics": without_timing(metrics),
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if (
            isinstance(a[key], dict)
            and a[key]
            and isinstance(next(iter(a[key].values())), torch.Tensor)
        ):
            assert a[key].keys() == b[key].keys(), key
            assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
        else:
            assert a[key] == b[key], key


def mirrored(tiny, splits, tmp, clock=None, policy=None, **kw):
    """A call of ``train`` into tmp/local, mirrored to tmp/drive."""
    policy = MirrorPolicy(**{**POLICY, **(policy or {})}, clock=clock or FakeClock())
    return train(tiny, splits, cfg(**kw.pop("cfg", {})), tmp / "drive", progress=False,
                 local_dir=tmp / "local", mirror_policy=policy, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def plain(tiny, splits, tmp_path_factory):
    """The old scheme: the run folder on Drive itself, written after every epoch."""
    folder = tmp_path_factory.mktemp("plain") / "drive"
    drive = FakeDrive(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", drive.wrap(checkpoint.atomic_write))
        train(tiny, splits, cfg(), folder, progress=False)
    drive.look()
    return run_files(folder), drive


@pytest.fixture(scope="module")
def reference(tiny, splits, tmp_path_factory):
    """An uninterrupted mirrored run; the fake Drive that watched it; the clock at each mirror
    of last.pt; and the number of writes (local and mirror) it made."""
    return watched_run(tiny, splits, tmp_path_factory.mktemp("mirrored"))


@pytest.fixture(scope="module")
def short(tiny, splits, tmp_path_factory):
    """The same for 4 epochs (mirrored after epoch 2 and 4): the kill test's reference."""
    return watched_run(tiny, splits, tmp_path_factory.mktemp("short"), epochs=4)


def watched_run(tiny, splits, tmp, epochs=6):
    drive, clock, synced, calls = FakeDrive(tmp / "drive"), FakeClock(), [], []
    counted = drive.wrap(checkpoint.atomic_write)

    def watch(path, fn):
        calls.append(path)
        if path == tmp / "drive" / "last.pt":
            synced.append(clock.t)
        counted(path, fn)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", watch)
        mirrored(tiny, splits, tmp, clock, cfg={"epochs": epochs})
    drive.look()
    return tmp, drive, synced, calls


def test_the_mirror_ends_with_the_runs_files_and_churns_a_fraction_of_the_old_scheme(
    plain, reference
):
    (expected, old), (tmp, new, synced, _) = plain, reference
    got = run_files(tmp / "drive")
    best = load_checkpoint(tmp / "drive" / "best.pt")
    assert not {"optimizer", "scheduler", "scaler", "rng"} & best.keys()  # weights only
    assert_same(got, expected)  # the same training as the unmirrored run, bit for bit
    assert_same(run_files(tmp / "local"), expected)
    # 6 epochs of 240 s, at most 600 s at risk: last.pt mirrored after epochs 2, 4 and 6 only
    assert new.writes.count("last.pt") == 3 and old.writes.count("last.pt") == 6
    assert synced == [3 * EPOCH_S, 5 * EPOCH_S, 7 * EPOCH_S]  # clock read once at the start
    gaps = [b - a for a, b in zip([EPOCH_S, *synced], synced)]
    assert max(gaps) <= POLICY["max_loss_s"]  # a disconnect loses at most 600 s of training
    # best.pt: the first when the mirror has none, then only at the end (best_every_s = 2 h)
    assert new.writes.count("best.pt") <= 2
    last_size = (tmp / "local" / "last.pt").stat().st_size
    assert old.churn >= 5 * last_size  # 5 replaced last.pt, plus best.pt copies
    assert new.churn < 2 * last_size + (tmp / "drive" / "best.pt").stat().st_size + 10_000
    assert new.churn < 0.5 * old.churn
    assert (tmp / "drive" / "last.pt").stat().st_size < last_size  # deflated
    note = json.loads((tmp / "drive" / "mirror.json").read_text())
    assert note == {"epoch": 6, "best_epoch": got["best_epoch"][0], "metrics": 6}


@pytest.mark.parametrize("mode", ["mid", "after"])  # killed during a write, or right after it
@pytest.mark.kill
def test_kill_at_every_write_then_the_same_call_finishes_identically(
    mode, short, tiny, splits, tmp_path
):
    done, _, _, calls = short
    expected = run_files(done / "drive")
    assert_same(run_files(done / "local"), expected)
    real = checkpoint.atomic_write
    assert [p.name for p in calls if p.parent == done / "drive"].count("last.pt") == 2
    for n in range(1, len(calls) + 1):
        tmp = tmp_path / f"kill{n}"
        count = 0

        def dying(path, write, n=n):
            nonlocal count
            count += 1
            if count == n:
                if mode == "mid":  # a partial temporary file stays behind
                    (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"partial")
                if mode == "after":
                    real(path, write)
                raise Killed(f"write {n} ({path}, {mode})")
            real(path, write)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(checkpoint, "atomic_write", dying)
            with pytest.raises(Killed):
                mirrored(tiny, splits, tmp, cfg={"epochs": 4})
        mirrored(tiny, splits, tmp, cfg={"epochs": 4})  # the same call again
        for where in ("drive", "local"):
            assert not list((tmp / where).glob(".*.tmp")), (n, mode, where)
        assert_same(run_files(tmp / "drive"), expected)
        assert_same(run_files(tmp / "local"), expected)


def test_a_disconnect_continues_from_the_mirror_and_loses_only_what_was_not_mirrored(
    plain, tiny, splits, tmp_path, caplog
):
    expected, _ = plain
    clock, often = FakeClock(), {"best_every_s": 0.0}  # best.pt too at every mirror: no lag
    mirrored(tiny, splits, tmp_path, clock, often, stop_after=3)  # mirrored after 2 and at the end
    # the next session trains epoch 4 and 5 (mirrored after 5), then dies in epoch 6
    seen = []

    def die_in_epoch_6(path, write):
        if path.name == "last.pt" and path.parent.name == "local":
            seen.append(path)
            if len(seen) == 3:
                raise Killed("disconnect")
        real(path, write)

    real = checkpoint.atomic_write
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", die_in_epoch_6)
        with pytest.raises(Killed):
            mirrored(tiny, splits, tmp_path, policy=often)
    assert load_checkpoint(tmp_path / "drive" / "last.pt")["epoch"] == 5
    shutil.rmtree(tmp_path / "local")  # a new session: the old one's disk is gone
    with caplog.at_level(logging.INFO, logger="vitcifar"):
        run = mirrored(tiny, splits, tmp_path, policy=often)
    assert "continuing from its mirror" in caplog.text and "resuming" in caplog.text
    assert [r["epoch"] for r in run.history] == [1, 2, 3, 4, 5, 6]
    assert_same(run_files(tmp_path / "drive"), expected)


def test_a_session_copy_whose_mirror_is_gone_is_refused_and_kept(tiny, splits, tmp_path):
    mirrored(tiny, splits, tmp_path, stop_after=1)
    shutil.rmtree(tmp_path / "drive")
    before = sorted(p.name for p in (tmp_path / "local").iterdir())
    with pytest.raises(
        RunFolderError, match=r"has no last.pt, but the session's copy .* holds epochs 1-1"
    ):
        mirrored(tiny, splits, tmp_path)
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == before


# ----------------------------------------------------------------------------- messages and ETA


def test_a_changed_recipe_is_refused_in_the_callers_terms(tiny, splits, tmp_path):
    train(tiny, splits, cfg(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr: 0.003 -> 0.1.*pass --resume .* another --out$"):
        train(tiny, splits, cfg(epochs=1, lr=0.1), tmp_path, progress=False)
    with pytest.raises(ValueError) as err:
        train(tiny, splits, cfg(epochs=1, lr=0.1), tmp_path, progress=False, knobs=NOTEBOOK_KNOBS)
    assert "set RESUME = True to continue it" in str(err.value)
    assert str(err.value).endswith("or choose another RUN_NAME") and "--" not in str(err.value)


def test_diverging_in_the_notebook_names_its_parameters(tiny, splits, tmp_path):
    from vitcifar.machine import TrainingDiverged

    with pytest.raises(TrainingDiverged) as err:
        train(tiny, splits, cfg(epochs=1, lr=1e6), tmp_path, progress=False, knobs=NOTEBOOK_KNOBS)
    assert "lower LR" in str(err.value) and "--" not in str(err.value)


def test_out_of_memory_in_the_notebook_names_its_parameters(tiny, splits, tmp_path, monkeypatch):
    from vitcifar.machine import TrainingOutOfMemory
    from vitcifar.model import ViT

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def forward(self, x):  # the GPU's error, raised where a forward pass runs out of memory
        raise oom("CUDA out of memory. Tried to allocate 12.70 GiB")

    monkeypatch.setattr(ViT, "forward", forward)
    with pytest.raises(TrainingOutOfMemory) as err:
        train(tiny, splits, cfg(epochs=1, batch_size=32), tmp_path, progress=False,
              knobs=NOTEBOOK_KNOBS)  # fmt: skip
    msg = str(err.value)
    assert "at BATCH_SIZE = 32" in msg and "rerun with BATCH_SIZE = 16" in msg and "--" not in msg


def test_eta_text():
    assert eta_text(3, []) == "?"
    assert eta_text(0, [10.0]) == "0s"
    assert eta_text(2, [10.0, 20.0]) == "30s"
    assert eta_text(5, [50.0]) == "4m 10s"
    assert eta_text(299, [48.0]) == "3h 59m"


def test_epoch_lines_show_the_eta_from_this_sessions_epochs_only(tiny, splits, tmp_path, caplog):
    train(tiny, splits, cfg(epochs=4), tmp_path, progress=False, stop_after=1)
    with caplog.at_level(logging.INFO, logger="vitcifar.train"):
        run = train(tiny, splits, cfg(epochs=4), tmp_path, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3
    session = [row["seconds"] for row in run.history[1:]]  # epoch 1 ran in another call
    for k, line in enumerate(lines):
        assert line.endswith(f"ETA {eta_text(4 - (k + 2), session[: k + 1])}"), line
    assert lines[-1].endswith("ETA 0s")
