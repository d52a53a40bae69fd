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
from vitcifar.train import eta_text, train

pytestmark = pytest.mark.slow

EPOCH_S = 240.0  # what one epoch "takes" on the fake clock
POLICY = dict(max_loss_s=600.0, best_every_s=7200.0)


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
    under test is untouched: the folder is looked at before and after each ``atomic_write``.
    ``train``'s lock file (a dozen bytes a call, not the mirror's) is not counted."""

    def __init__(self, path) -> None:
        self.path = path
        self.seen: dict[tuple[str, int], int] = {}
        self.churn = 0
        self.writes: list[str] = []

    def look(self) -> None:
        now = {}
        if self.path.exists():
            for p in self.path.iterdir():
                if p.name == checkpoint.LOCK_NAME:
                    continue
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


def files(folder, kit):
    return kit.run_files(folder, listing=False)  # the drive and the session hold mirror.json too


@pytest.fixture(scope="module")
def mirrored(tiny_cfg, splits, kit):
    """``mirrored(tmp, clock=None, policy=None, epochs=10, **train_kw)``: a call of ``train``
    into tmp/local, mirrored to tmp/drive (``policy`` overrides POLICY's fields)."""

    def call(tmp, clock=None, policy=None, *, epochs=10, **kw):
        policy = MirrorPolicy(**{**POLICY, **(policy or {})}, clock=clock or FakeClock())
        return train(tiny_cfg, splits, kit.cfg(epochs=epochs), tmp / "drive", progress=False,
                     local_dir=tmp / "local", mirror_policy=policy, **kw)  # fmt: skip

    return call


@pytest.fixture(scope="module")
def plain(tiny_cfg, splits, kit, tmp_path_factory):
    """The old scheme: the run folder on Drive itself, written after every epoch."""
    folder = tmp_path_factory.mktemp("plain") / "drive"
    drive = FakeDrive(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", drive.wrap(checkpoint.atomic_write))
        train(tiny_cfg, splits, kit.cfg(epochs=10), folder, progress=False)
    drive.look()
    return files(folder, kit), drive


@pytest.fixture(scope="module")
def reference(mirrored, tmp_path_factory):
    """An uninterrupted mirrored run of 10 epochs (40 simulated minutes); the fake Drive that
    watched it; the clock at each mirror of last.pt; and the writes (local and mirror) it made."""
    return watched_run(mirrored, tmp_path_factory.mktemp("mirrored"))


@pytest.fixture(scope="module")
def short(mirrored, tmp_path_factory):
    """The same for 4 epochs (mirrored after epoch 2 and 4): the kill test's reference."""
    return watched_run(mirrored, tmp_path_factory.mktemp("short"), epochs=4)


def watched_run(mirrored, tmp, calls=({},), **kw):
    """``mirrored(tmp, **call, **kw)`` for each of ``calls`` (one by default; e.g. a
    ``stop_after`` then the rest), watched by one fake Drive and one clock."""
    drive, clock, synced, written = FakeDrive(tmp / "drive"), FakeClock(), [], []
    counted = drive.wrap(checkpoint.atomic_write)

    def watch(path, fn):
        written.append(path)
        if path == tmp / "drive" / "last.pt":
            synced.append(clock.t)
        counted(path, fn)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", watch)
        for call in calls:
            mirrored(tmp, clock, **call, **kw)
    drive.look()
    return tmp, drive, synced, written


def test_the_mirror_ends_with_the_runs_files_and_churns_a_fraction_of_the_old_scheme(
    plain, reference, kit
):
    (expected, old), (tmp, new, synced, _) = plain, reference
    got = files(tmp / "drive", kit)
    best = load_checkpoint(tmp / "drive" / "best.pt")
    assert not {"optimizer", "scheduler", "scaler", "rng"} & best.keys()  # weights only
    kit.assert_same(got, expected)  # the same training as the unmirrored run, bit for bit
    kit.assert_same(files(tmp / "local", kit), expected)
    # 10 epochs of 240 s, at most 600 s at risk: last.pt mirrored after every second epoch only
    assert new.writes.count("last.pt") == 5 and old.writes.count("last.pt") == 10
    assert synced == [3 * EPOCH_S, 5 * EPOCH_S, 7 * EPOCH_S, 9 * EPOCH_S, 11 * EPOCH_S]
    gaps = [b - a for a, b in zip([EPOCH_S, *synced], synced)]  # the clock read once at the start
    assert max(gaps) <= POLICY["max_loss_s"]  # a disconnect loses at most 600 s of training
    # best.pt: the first when the mirror has none, then only at the end (best_every_s = 2 h)
    assert new.writes.count("best.pt") <= 2
    last_size = (tmp / "local" / "last.pt").stat().st_size
    assert old.churn >= 9 * last_size  # 9 replaced last.pt, plus best.pt copies
    assert new.churn < 4 * last_size + (tmp / "drive" / "best.pt").stat().st_size + 10_000
    assert new.churn < 0.5 * old.churn
    assert (tmp / "drive" / "last.pt").stat().st_size < last_size  # deflated
    note = json.loads((tmp / "drive" / "mirror.json").read_text())
    best_epoch = got["best_epoch"][0]  # the mirror's count of its churn is the fake Drive's
    assert note == {"epoch": 10, "best_epoch": best_epoch, "metrics": 10, "churn": new.churn}


@pytest.mark.parametrize("mode", ["mid", "after"])  # killed during a write, or right after it
@pytest.mark.kill
def test_kill_at_every_write_then_the_same_call_finishes_identically(
    mode, short, mirrored, kit, tmp_path
):
    done, _, _, calls = short
    expected = files(done / "drive", kit)
    kit.assert_same(files(done / "local", kit), expected)
    real = checkpoint.atomic_write
    assert [p.name for p in calls if p.parent == done / "drive"].count("last.pt") == 2
    for n in range(1, len(calls) + 1):
        tmp = tmp_path / f"kill{n}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(checkpoint, "atomic_write", kit.dying_at(n, mode, real))
            with pytest.raises(kit.Killed):
                mirrored(tmp, epochs=4)
        mirrored(tmp, epochs=4)  # the same call again
        for where in ("drive", "local"):
            assert not list((tmp / where).glob(".*.tmp")), (n, mode, where)
        kit.assert_same(files(tmp / "drive", kit), expected)
        kit.assert_same(files(tmp / "local", kit), expected)


def test_a_disconnect_continues_from_the_mirror_and_loses_only_what_was_not_mirrored(
    plain, mirrored, kit, tmp_path, caplog
):
    expected, _ = plain
    clock, often = FakeClock(), {"best_every_s": 0.0}  # best.pt too at every mirror: no lag
    mirrored(tmp_path, clock, often, stop_after=3)  # mirrored after 2 and at the end
    # the next session trains epoch 4 and 5 (mirrored after 5), then dies in epoch 6; the
    # session after it continues from the mirror's epoch 5 to the end
    seen = []

    def die_in_epoch_6(path, write):
        if path.name == "last.pt" and path.parent.name == "local":
            seen.append(path)
            if len(seen) == 3:
                raise kit.Killed("disconnect")
        real(path, write)

    real = checkpoint.atomic_write
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint, "atomic_write", die_in_epoch_6)
        with pytest.raises(kit.Killed):
            mirrored(tmp_path, policy=often)
    assert load_checkpoint(tmp_path / "drive" / "last.pt")["epoch"] == 5
    shutil.rmtree(tmp_path / "local")  # a new session: the old one's disk is gone
    with caplog.at_level(logging.INFO, logger="vitcifar"):
        run = mirrored(tmp_path, policy=often)
    assert "continuing from its mirror" in caplog.text and "resuming" in caplog.text
    assert [r["epoch"] for r in run.history] == list(range(1, 11))
    kit.assert_same(files(tmp_path / "drive", kit), expected)


# ----------------------------------------------------------------------------- the churn budget


def budget_of(reference, copies):
    """A churn budget of ``copies`` times the mirror's last.pt (the tiny model's file size)."""
    return copies * (reference[0] / "drive" / "last.pt").stat().st_size


def test_a_long_run_spaces_its_copies_to_stay_within_the_churn_budget(
    reference, mirrored, kit, tmp_path, caplog
):
    done, unbudgeted, every_2, _ = reference
    budget = budget_of(reference, 2.8)  # the run without it replaces 4 last.pt and a best.pt
    with caplog.at_level(logging.WARNING, logger="vitcifar"):
        tmp, drive, synced, _ = watched_run(mirrored, tmp_path, policy={"max_churn_bytes": budget})
    assert drive.churn <= budget < unbudgeted.churn
    kit.assert_same(files(tmp / "drive", kit), files(done / "drive", kit))  # the same training
    # after the first copy (epoch 2, it replaces nothing) the copies come every 4 epochs
    assert synced == [3 * EPOCH_S, 7 * EPOCH_S, 11 * EPOCH_S] and len(every_2) == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # once, not every epoch
    assert "copied every 16 min instead of every 10" in warnings[0]
    assert (
        "lose up to 16 min" in warnings[0] and "raise MirrorPolicy.max_churn_bytes" in warnings[0]
    )
    assert json.loads((tmp / "drive" / "mirror.json").read_text())["churn"] == drive.churn


def test_a_run_that_fits_its_budget_copies_as_without_one(reference, mirrored, tmp_path, caplog):
    _, unbudgeted, every_2, _ = reference
    budget = unbudgeted.churn + budget_of(reference, 0.5)  # what it needs, and half a copy
    with caplog.at_level(logging.WARNING, logger="vitcifar"):
        tmp, drive, synced, _ = watched_run(mirrored, tmp_path, policy={"max_churn_bytes": budget})
    assert synced == every_2 and drive.writes == unbudgeted.writes
    assert abs(drive.churn - unbudgeted.churn) < 1000  # metrics.jsonl's timings differ
    assert json.loads((tmp / "drive" / "mirror.json").read_text())["churn"] == drive.churn
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_churn_budget_carries_over_a_resume(reference, mirrored, kit, tmp_path):
    done, _, _, _ = reference
    budget = budget_of(reference, 2.8)
    calls = ({"stop_after": 5}, {})  # two sessions: epochs 1-5 (mirrored at the end), 6-10
    tmp, drive, synced, _ = watched_run(
        mirrored, tmp_path, calls, policy={"max_churn_bytes": budget}
    )
    # the second session has the budget less what the first one replaced: 1 more copy, at the
    # end (a second session with the whole budget would copy after epoch 8 too, and exceed it)
    assert drive.churn <= budget
    assert len(synced) == 3  # after epoch 2, at the first call's end (5) and the second's (10)
    assert json.loads((tmp / "drive" / "mirror.json").read_text())["churn"] == drive.churn
    kit.assert_same(files(tmp / "drive", kit), files(done / "drive", kit))


def test_a_mirror_record_from_before_the_churn_count_still_loads(mirrored, tmp_path):
    mirrored(tmp_path, epochs=1)
    record = tmp_path / "drive" / "mirror.json"
    note = json.loads(record.read_text())
    assert note.pop("churn") == 0  # one epoch: every file written once, none replaced
    record.write_text(json.dumps(note))  # the record's form before the budget
    mirror = checkpoint.Mirror(tmp_path / "drive", MirrorPolicy(clock=FakeClock()))
    mirror.restore(checkpoint.RunFolder(tmp_path / "local"))
    assert mirror.held == {"epoch": 1, "best_epoch": 1} and not mirror.dirty  # complete
    assert mirror.churn == 0


def test_a_session_copy_whose_mirror_is_gone_is_refused_and_kept(mirrored, tmp_path):
    mirrored(tmp_path, stop_after=1)
    shutil.rmtree(tmp_path / "drive")
    before = sorted(p.name for p in (tmp_path / "local").iterdir())
    with pytest.raises(
        RunFolderError, match=r"has no last.pt, but the session's copy .* holds epochs 1-1"
    ):
        mirrored(tmp_path)
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == before


# ----------------------------------------------------------------------------- messages and ETA


def test_a_changed_recipe_is_refused_in_the_callers_terms(tiny_cfg, splits, tmp_path, kit):
    train(tiny_cfg, splits, kit.cfg(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"lr: 0.003 -> 0.1.*pass --resume .* another --out$"):
        train(tiny_cfg, splits, kit.cfg(epochs=1, lr=0.1), tmp_path, progress=False)
    with pytest.raises(ValueError) as err:
        train(tiny_cfg, splits, kit.cfg(epochs=1, lr=0.1), tmp_path, progress=False,
              knobs=NOTEBOOK_KNOBS)  # fmt: skip
    assert "set RESUME = True to continue it" in str(err.value)
    assert str(err.value).endswith("or choose another RUN_NAME") and "--" not in str(err.value)


def test_diverging_in_the_notebook_names_its_parameters(tiny_cfg, splits, tmp_path, kit):
    from vitcifar.machine import TrainingDiverged

    with pytest.raises(TrainingDiverged) as err:
        train(tiny_cfg, splits, kit.cfg(epochs=1, lr=1e6), tmp_path, progress=False,
              knobs=NOTEBOOK_KNOBS)  # fmt: skip
    assert "lower LR" in str(err.value) and "--" not in str(err.value)


def test_out_of_memory_in_the_notebook_names_its_parameters(
    tiny_cfg, splits, tmp_path, monkeypatch, kit
):
    from vitcifar.machine import TrainingOutOfMemory
    from vitcifar.model import ViT

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def forward(self, x):  # the GPU's error, raised where a forward pass runs out of memory
        raise oom("CUDA out of memory. Tried to allocate 12.70 GiB")

    monkeypatch.setattr(ViT, "forward", forward)
    with pytest.raises(TrainingOutOfMemory) as err:
        train(tiny_cfg, splits, kit.cfg(epochs=1, batch_size=32), tmp_path, progress=False,
              knobs=NOTEBOOK_KNOBS)  # fmt: skip
    msg = str(err.value)
    assert "at BATCH_SIZE = 32" in msg and "rerun with BATCH_SIZE = 16" in msg and "--" not in msg


def test_eta_text():
    assert eta_text(3, []) == "?"
    assert eta_text(0, [10.0]) == "0s"
    assert eta_text(2, [10.0, 20.0]) == "30s"
    assert eta_text(5, [50.0]) == "4m 10s"
    assert eta_text(299, [48.0]) == "3h 59m"


def test_epoch_lines_show_the_eta_from_this_sessions_epochs_only(
    tiny_cfg, splits, tmp_path, caplog, kit
):
    train(tiny_cfg, splits, kit.cfg(epochs=4), tmp_path, progress=False, stop_after=1)
    with caplog.at_level(logging.INFO, logger="vitcifar.train"):
        run = train(tiny_cfg, splits, kit.cfg(epochs=4), tmp_path, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3
    session = [row["seconds"] for row in run.history[1:]]  # epoch 1 ran in another call
    for k, line in enumerate(lines):
        assert line.endswith(f"ETA {eta_text(4 - (k + 2), session[: k + 1])}"), line
    assert lines[-1].endswith("ETA 0s")
