"""One textseg run per output folder (textseg.lock, fcntl.flock), tried with real processes:
a second writer is refused with one line naming the holder's PID, a lock left by a killed
run is taken over, and two runs that start together never both hold it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import textseg
from textseg.lock import LOCK_NAME, folder_lock, lock_holder

pytest.importorskip("fcntl")

REPO = Path(textseg.__file__).resolve().parents[1]
FORCE = ["--box-threshold", "0", "--text-threshold", "0"]

# Takes the lock, says so, holds it until killed (or for argv[2] seconds).
HOLDER = r"""
import sys, time
from textseg.errors import OutputError
from textseg.lock import folder_lock
try:
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except OutputError as err:
    print(f"refused: {err}", flush=True)
"""


def _env():
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _holder(out: Path, seconds: float = 600) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out), str(seconds)],
        stdout=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "textseg", *argv],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(
    model_dirs, sample_image, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    holder = _holder(out)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(out) == holder.pid
        models = [
            "--detector",
            str(model_dirs["detector"]),
            "--segmenter",
            str(model_dirs["segmenter"]),
        ]
        argv = [str(sample_image), "--prompt", "cat", "--out", str(out), *FORCE, *models]
        refused = _cli(*argv)
        assert refused.returncode == 2 and refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert f"in use by another textseg run (PID {holder.pid})" in refused.stderr
        assert not (out / sample_image.stem).exists()  # nothing was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).is_file() and lock_holder(out) == holder.pid  # stale, left behind
    done = _cli(*argv)  # the dead holder's lock is free: taken over
    assert done.returncode == 0, done.stderr
    assert (out / sample_image.stem / "segmentation.json").is_file()
    assert not (out / LOCK_NAME).exists()  # released and removed at the end


def test_two_runs_starting_together_never_both_hold_the_lock(tmp_path):
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        procs = [_holder(out, seconds=2) for _ in range(2)]
        lines = sorted(p.stdout.readline().strip() for p in procs)
        for p in procs:
            p.wait(timeout=60)
        assert lines[0] == "held" and lines[1].startswith("refused:"), lines
        pids = {str(p.pid) for p in procs}
        assert any(f"(PID {pid})" in lines[1] for pid in pids), lines
        assert not (out / LOCK_NAME).exists()


def test_lock_is_reentrant_in_a_process_and_released_after(tmp_path):
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):  # the CLI holds it, iter_many takes it again
            assert lock_holder(tmp_path) == os.getpid()
        assert (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()
