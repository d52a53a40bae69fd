"""One writer per output folder: an OS file lock (fcntl.flock) on OUT/.textseg.lock.

    with folder_lock(out):      # OutputError naming the holder's PID when another run has it
        ...                     # write OUT/<image>/...

The lock file holds the holder's PID. The kernel drops a flock when its process dies, even
by SIGKILL, so a lock left by a killed run is free: the next run takes it and writes its own
PID. On release the file is removed while still locked; a run that opened the old file in
the meantime sees that the path now names another file (or none) and tries again, so two
runs never both hold the lock. The lock is re-entrant within a process (the CLI holds it
around the batch and the videos, `TextSegmenter.iter_many` takes it again).

Standard library only (textseg keeps this tiny module of its own; vitcifar has its own).
Where fcntl does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from textseg.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "folder_lock", "lock_holder"]

LOCK_NAME = ".textseg.lock"

_held: dict[str, list] = {}  # resolved folder -> [fd, depth], the locks this process holds
_guard = threading.Lock()


def lock_holder(folder: str | os.PathLike) -> int | None:
    """The PID written in `folder`'s lock file (whether or not it still holds it), or None."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _read_pid(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID right after it takes the lock
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def _acquire(folder: Path) -> int | None:
    if fcntl is None:
        return None
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise OutputError(
                f"{folder} is in use by another textseg run (PID {pid}); wait for it to "
                "finish, stop it, or choose another output folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # released (and removed) between our open and our flock: try again
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _release(folder: Path, fd: int | None) -> None:
    if fd is None:
        return
    try:
        (folder / LOCK_NAME).unlink(missing_ok=True)  # still locked: nobody takes it meanwhile
    except OSError:
        pass
    finally:
        os.close(fd)  # drops the flock


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold `folder`'s lock (the folder must exist) for the block. Raises OutputError (one
    line, naming the holder's PID) when another process holds it; OSError when the lock file
    cannot be created (read-only or unwritable folder)."""
    path = Path(folder)
    key = str(path.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(path), 1]
    try:
        yield
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(path, entry[0])
