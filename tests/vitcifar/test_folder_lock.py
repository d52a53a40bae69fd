"""One writer per folder: a second process (or an orphaned torchrun worker) is refused with one
line naming the holder's PID, and the lock of a killed process is taken over. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitcifar.checkpoint import LOCK_NAME, FolderLock, FolderLockedError

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time
from vitcifar.checkpoint import FolderLock
lock = FolderLock(sys.argv[1], "train").acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of tmp_path/run until the test ends (or kills it)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(
    holder, image_folder, tiny_train_args, run_cli, one_error_line
):
    folder, proc = holder
    with pytest.raises(
        FolderLockedError, match=rf"in use by another vitcifar process \(PID {proc.pid}, train\)"
    ) as err:
        FolderLock(folder, "evaluate").acquire()
    assert err.value.pid == proc.pid
    err = one_error_line(run_cli(*tiny_train_args(image_folder, folder, "--no-eval")))
    assert f"PID {proc.pid}, train" in err and f"kill {proc.pid}" in err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing else was written


def test_the_lock_of_a_killed_process_is_taken_over(holder):
    folder, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lock_file = folder / LOCK_NAME
    assert lock_file.read_text().split()[0] == str(proc.pid)  # left behind, stale
    with FolderLock(folder, "train") as lock:  # the kernel released the dead process's lock
        assert lock_file.read_text() == f"{os.getpid()} train\n"
        done = subprocess.run(
            [sys.executable, "-c", HOLDER, str(folder)], capture_output=True, text=True, timeout=60
        )
        assert f"PID {os.getpid()}, train" in done.stderr  # the live holder, not the dead one
        assert lock.path == lock_file
    assert not lock_file.exists()  # released: the folder is as the run left it


def test_the_lock_is_reentrant_in_one_process_and_leaves_no_trace(tmp_path):
    folder = tmp_path / "new" / "out"
    with FolderLock(folder, "train"):
        with FolderLock(folder, "evaluate"):  # e.g. train, then its own final evaluation
            pass
        assert (folder / LOCK_NAME).exists()
    assert not (tmp_path / "new").exists()  # created for the lock, empty, removed again


def small_checkpoint(path: Path) -> Path:
    """A real vitcifar checkpoint of a tiny untrained model, written as training writes one."""
    from vitcifar.checkpoint import FORMAT, atomic_save
    from vitcifar.config import TrainConfig
    from vitcifar.model import ViT, ViTConfig

    cfg = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    atomic_save(
        {
            "format": FORMAT,
            "model": ViT(cfg).state_dict(),
            "model_config": cfg.to_dict(),
            "train_config": TrainConfig().to_dict(),
            "epoch": 1,
            "history": [],
            "classes": ["blue", "green", "red", "yellow"],
        },
        path,
    )
    return path


def test_export_evaluate_and_predict_into_a_locked_folder_are_refused(
    holder, tmp_path, image_folder, run_cli, one_error_line
):
    folder, proc = holder
    ckpt = small_checkpoint(tmp_path / "best.pt")
    out = str(folder / "model.pt")
    err = one_error_line(
        run_cli("export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", out)
    )
    assert f"PID {proc.pid}, train" in err
    args = ["--checkpoint", str(ckpt), "--device", "cpu"]
    err = one_error_line(
        run_cli("evaluate", *args, "--data", str(image_folder), "--out", str(folder))
    )
    assert f"PID {proc.pid}, train" in err
    done = run_cli("predict", *args, str(image_folder), "--out", str(folder / "preds.csv"))
    assert f"PID {proc.pid}, train" in one_error_line(done)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]


# ----------------------------------------------------------------------------- torchrun


def torchrun_cmd(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vitcifar",
        *args,
    ]


def test_torchrun_ranks_stop_alike_when_the_folder_is_locked(holder, image_folder, tiny_train_args):
    folder, proc = holder
    t0 = time.monotonic()
    done = subprocess.run(
        torchrun_cmd(*tiny_train_args(image_folder, folder, "--no-eval")),
        capture_output=True,
        text=True,
        timeout=240,  # a rank left waiting in a collective would hang until this
    )
    assert done.returncode != 0
    assert f"PID {proc.pid}" in done.stderr
    assert not (folder / "last.pt").exists()
    assert time.monotonic() - t0 < 240


def _pids_with(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (this test's unique run folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the orphans through /proc")
def test_orphaned_torchrun_workers_cannot_corrupt_a_resume(
    image_folder, tmp_path, tiny_train_args, run_cli, one_error_line
):
    folder = tmp_path / "orphans"
    args = tiny_train_args(image_folder, folder, "--no-eval")
    args[args.index("--epochs") + 1] = "400"  # long enough to outlive torchrun
    agent = subprocess.Popen(
        torchrun_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers = []
    try:
        deadline = time.monotonic() + 180
        while not (folder / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (folder / "last.pt").exists(), "the run did not finish an epoch in time"
        writer = int((folder / LOCK_NAME).read_text().split()[0])
        agent.send_signal(signal.SIGKILL)  # torchrun killed; its workers run in new sessions
        agent.wait()
        time.sleep(1.0)
        workers = [p for p in _pids_with(str(folder)) if p != agent.pid]
        if writer not in workers:
            pytest.skip("torch elastic stopped its workers with torchrun here: no orphans")
        err = one_error_line(
            run_cli(*tiny_train_args(image_folder, folder, "--no-eval", "--resume"))
        )
        assert f"PID {writer}, train" in err and "outlived torchrun" in err
    finally:
        if agent.poll() is None:
            agent.kill()
        for pid in workers or _pids_with(str(folder)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
