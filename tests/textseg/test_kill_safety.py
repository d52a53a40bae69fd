"""Every textseg output folder is one consistent set of files: a real SIGKILL of
`python -m textseg` at every write point (a fork of a warm subprocess whose textseg.export
writer kills it during or right after the n-th write), then the same command again, gives the
files of an uninterrupted run and no stray files; a batch re-run skips what is done and says so."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import textseg
import textseg.export as export
from textseg.cli import main
from textseg.testing import make_sample_image, make_sample_video

pytestmark = pytest.mark.slow

REPO = Path(textseg.__file__).resolve().parents[1]
FORCE = ["--box-threshold", "0", "--text-threshold", "0"]

# A fork server for the killed runs: it imports the CLI's whole stack once (torch,
# transformers, SAM 2: about 6 s), runs no torch op itself (so a fork is safe), and for each
# request [n, mode, argv, log] forks a child that runs the CLI with textseg.export's writer and
# remover counting; the n-th one sends SIGKILL to the child: while writing (the temporary file is
# written, not renamed: "mid") or right after ("after"). A real kill: no except, no finally, no
# atexit runs. The server answers each request with the child's wait status.
KILL_SERVER = r"""
import importlib, json, os, pkgutil, signal, sys
from contextlib import contextmanager
import textseg, textseg.export as export
from textseg.cli import main

for info in pkgutil.iter_modules(textseg.__path__):  # warm: what a run imports lazily
    if info.name == "__main__":
        continue
    importlib.import_module(f"textseg.{info.name}")
import sam2.build_sam, sam2.sam2_image_predictor  # noqa: E401
from transformers import AutoProcessor, GroundingDinoForObjectDetection  # noqa: F401

real_atomic, real_remove = export.atomic_path, export._remove


def child(at, mode, argv, log):
    count = 0

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    @contextmanager
    def atomic_path(path):
        nonlocal count
        count += 1
        n = count
        with real_atomic(path) as tmp:
            yield tmp
            if n == at and mode == "mid":
                die()
        if n == at:
            die()

    def remove(path):
        nonlocal count
        count += 1
        real_remove(path)
        if count == at:
            die()

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1), os.dup2(fd, 2)
    export.atomic_path, export._remove = atomic_path, remove
    try:
        code = main(argv)
    except SystemExit as err:
        code = err.code
    except BaseException:
        import traceback; traceback.print_exc(); code = 99  # noqa: E702
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


print("ready", flush=True)
for line in sys.stdin:
    at, mode, argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(at, mode, argv, log)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


def _tail(log: Path) -> str:
    """The end of a killed run's output, or '' when the child never opened it."""
    return log.read_text()[-2000:] if log.exists() else ""


class KillServer:
    """The CLI killed at the n-th write, each time in a fresh fork of one warm process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        script = folder / "kill_server.py"
        script.write_text(KILL_SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group: the server and a hung child, killed together
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def kill_at(self, argv: list[str], n: int, mode: str, timeout: float = 300) -> None:
        log = self.folder / f"kill{n}{mode}.log"
        self.proc.stdin.write(json.dumps([n, mode, argv, str(log)]) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)  # one line per request
        if not ready:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError((n, mode, f"no answer in {timeout} s", _tail(log)))
        status = int(self.proc.stdout.readline())
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed, (n, mode, status, _tail(log))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture
def kill_server(tmp_path):
    server = KillServer(tmp_path)
    yield server
    server.close()


def _models(model_dirs):
    return ["--detector", str(model_dirs["detector"]), "--segmenter", str(model_dirs["segmenter"])]


def _env(**extra):
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def _record(monkeypatch) -> list[tuple[str, str]]:
    """Count textseg.export's writes and removals, in order, as (kind, file name)."""
    events: list[tuple[str, str]] = []
    real_atomic, real_remove = export.atomic_path, export._remove

    def atomic_path(path):
        events.append(("write", path.name))
        return real_atomic(path)

    def remove(path):
        events.append(("remove", path.name))
        real_remove(path)

    monkeypatch.setattr(export, "atomic_path", atomic_path)
    monkeypatch.setattr(export, "_remove", remove)
    return events


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones included), by relative path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _consistent(root: Path) -> None:
    """No folder holds a segmentation.json beside masks it does not list (or without
    masks it lists)."""
    for json_file in root.glob("*/segmentation.json"):
        data = json.loads(json_file.read_text())
        if data.get("kind") == "video":
            continue
        listed = {o["mask_file"] for o in data["objects"]}
        present = {p.name for p in json_file.parent.glob("mask_*.png")}
        assert listed == present, (json_file, listed, present)


def _kill_points(events):
    """(n, mode) for every write point: during and right after each write, after each removal."""
    points = []
    for n, (kind, _) in enumerate(events, start=1):
        points += [(n, "mid"), (n, "after")] if kind == "write" else [(n, "after")]
    return points


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    make_sample_image(folder / "a.jpg", height=120, width=160)
    make_sample_image(folder / "b.jpg", height=100, width=150)
    return folder


@pytest.mark.kill
def test_batch_killed_at_every_write_then_run_again_is_the_uninterrupted_result(
    model_dirs, inputs, tmp_path, monkeypatch, capsys, kill_server
):
    """a.jpg already holds results of other settings (2 objects: re-saved over), b.jpg is
    new; the batch is killed at each of its writes and run again."""
    base = [str(inputs), "--prompt", "cat, remote", *FORCE, *_models(model_dirs)]
    before = tmp_path / "before"
    assert main([str(inputs / "a.jpg"), "--out", str(before), "--max-objects", "2"] + base[1:]) == 0
    assert len(list((before / "a").glob("mask_*.png"))) == 2
    argv = base + ["--max-objects", "1"]

    reference = tmp_path / "reference"
    shutil.copytree(before, reference)
    events = _record(monkeypatch)
    assert main(argv + ["--out", str(reference)]) == 0
    monkeypatch.undo()
    expected = _files(reference)
    assert {name.split("/")[0] for name in expected} == {"a", "b"}
    for folder in ("a", "b"):
        assert len([n for n in expected if n.startswith(f"{folder}/mask_")]) == 1
        assert {f"{folder}/overlay.png", f"{folder}/segmentation.json"} <= expected.keys()
    # the fixed order: pending file, old JSON removed, masks, overlay, stale masks, JSON, pending
    names = [name for _, name in events]
    assert names.count("segmentation.json") == 4 and names[0] == export.PENDING_NAME
    commits = [n for n, e in enumerate(events, start=1) if e == ("write", "segmentation.json")]

    capsys.readouterr()
    for n, mode in _kill_points(events):
        out = tmp_path / f"kill{n}{mode}"
        shutil.copytree(before, out)
        kill_server.kill_at(argv + ["--out", str(out)], n, mode)
        _consistent(out)
        assert main(argv + ["--out", str(out)]) == 0, (n, mode)  # the same command again
        captured = capsys.readouterr()
        assert _files(out) == expected, (n, mode)  # no stray file, every byte the same
        assert "note:" not in captured.err, (n, mode)  # no a_2 / b_2 beside a partial a / b
        done = sum(n > c or (n == c and mode == "after") for c in commits)  # committed
        said = f"textseg: skipped {done} done, {2 - done} to do"
        assert (said in captured.err) == bool(done), (n, mode, captured.err)

    # the finished folder run again: nothing is written, the output says so
    events = _record(monkeypatch)
    assert main(argv + ["--out", str(reference)]) == 0
    captured = capsys.readouterr()
    assert [e for e in events if e[0] == "write"] == []
    assert "textseg: skipped 2 done, 0 to do" in captured.err
    assert captured.out.count("done already") == 2 and _files(reference) == expected
    # other settings: redone
    monkeypatch.undo()
    assert main(base + ["--max-objects", "2", "--out", str(reference)]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert len(list((reference / "a").glob("mask_*.png"))) == 2


@pytest.mark.kill
def test_video_killed_at_every_write_then_run_again_is_the_uninterrupted_result(
    model_dirs, tmp_path, monkeypatch, capsys, kill_server
):
    pytest.importorskip("av")
    clip = make_sample_video(tmp_path / "clip.mp4")
    argv = [str(clip), "--prompt", "ball", "--every", "4", "--max-frames", "5"]
    argv += ["--max-objects", "1", *FORCE, *_models(model_dirs)]
    reference = tmp_path / "reference"
    events = _record(monkeypatch)
    assert main(argv + ["--out", str(reference)]) == 0
    monkeypatch.undo()
    expected = _files(reference)
    assert sorted(expected) == ["clip/overlay.mp4", "clip/preview.gif", "clip/segmentation.json"]
    assert [name for kind, name in events if kind == "write"] == [
        "overlay.mp4",
        export.PENDING_NAME,
        "preview.gif",
        "segmentation.json",
    ]  # fmt: skip  (overlay.mp4 is drawn to its temporary file, then the folder is claimed)

    capsys.readouterr()
    for n, mode in _kill_points(events):
        out = tmp_path / f"kill{n}{mode}"
        kill_server.kill_at(argv + ["--out", str(out)], n, mode)
        assert main(argv + ["--out", str(out)]) == 0, (n, mode)
        captured = capsys.readouterr()
        assert _files(out) == expected, (n, mode)
        assert "note:" not in captured.err and "skipped" not in captured.err, (n, mode)

    assert main(argv + ["--out", str(reference)]) == 0  # done: kept, and said so
    assert "done already" in capsys.readouterr().out and _files(reference) == expected


def _seg(n: int):
    import numpy as np
    from PIL import Image

    masks = np.zeros((n, 20, 30), bool)
    for i in range(n):
        masks[i, i : i + 5, i : i + 6] = True
    return textseg.Segmentation(
        boxes=np.array([[i, i, i + 6, i + 5] for i in range(n)], np.float32).reshape(n, 4),
        scores=np.full(n, 0.5), labels=["cat"] * n, masks=masks, mask_scores=np.full(n, 0.9),
        image_size=(20, 30), prompt="cat.", phrases=("cat",), image=Image.new("RGB", (30, 20)),
        source="a.png",
    )  # fmt: skip


def test_a_failed_write_leaves_no_folder_with_masks_and_no_json(tmp_path, monkeypatch):
    """An OSError (here: the disk fills up at the overlay) while re-saving: the save's files
    go, no folder is left with masks and no segmentation.json; the error is one line."""
    folder = tmp_path / "a"
    export.save(_seg(2), folder)
    real = export.atomic_path

    def full(path):
        if path.name == "overlay.png":
            raise OSError(28, "No space left on device")
        return real(path)

    monkeypatch.setattr(export, "atomic_path", full)
    with pytest.raises(export.OutputError, match=r"a: cannot write the results \(No space"):
        export.save(_seg(1), folder)
    assert not folder.exists()
    with pytest.raises(export.OutputError):
        export.save(_seg(1), tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
