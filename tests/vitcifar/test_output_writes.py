"""evaluate and export are as kill-safe as training: a kill at any of their writes leaves no
partial file under a final name, and the same call again ends with the uninterrupted result
(the kills are injected as tests/vitcifar/test_run_folder.py does for training)."""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pytest
import torch

import vitcifar.checkpoint as checkpoint
from vitcifar.checkpoint import LOCK_NAME
from vitcifar.data import load_splits
from vitcifar.export import export_model, read_metadata
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, train

pytestmark = pytest.mark.slow

EVAL_FILES = ["confusion.png", "misclassified.png", "curves.png", "attention.png", "metrics.json"]


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no ``except Exception`` in the code catches it."""


@pytest.fixture(scope="module")
def splits(image_folder):
    return load_splits(str(image_folder), val_size=16, subset=64, progress=False)


@pytest.fixture(scope="module")
def best(splits, tmp_path_factory):
    model = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, device="cpu", num_workers=0)
    out = tmp_path_factory.mktemp("run")
    train(model, splits, cfg, out, progress=False)
    return out / "best.pt"


def counting_writes(monkeypatch):
    calls, real = [], checkpoint.atomic_write

    def counting(path, write):
        calls.append(path.name)
        real(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", counting)
    return calls


def dying_at(monkeypatch, n: int, mode: str):
    """``atomic_write`` killed at its n-th call: while writing (a partial temporary file stays,
    as a SIGKILL leaves it) or right after the rename."""
    real, count = checkpoint.atomic_write, 0

    def dying(path, write):
        nonlocal count
        count += 1
        if count == n:
            if mode == "mid":
                (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"partial")
            else:
                real(path, write)
            raise Killed(f"write {n} ({path.name}, {mode})")
        real(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", dying)


def folder_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def eval_reference(best, splits, tmp_path_factory):
    from vitcifar.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval_reference")
    with pytest.MonkeyPatch.context() as mp:
        calls = counting_writes(mp)
        evaluate(best, splits.test, out_dir=out, device="cpu")
    return folder_bytes(out), calls


def test_evaluate_writes_figures_then_metrics_json_last(eval_reference):
    files, calls = eval_reference
    assert calls == EVAL_FILES  # metrics.json, written last, is the set's commit point
    assert sorted(files) == sorted(EVAL_FILES)  # no lock file, no temporary file left
    metrics = json.loads(files["metrics.json"])
    import hashlib

    assert metrics["files"] == {
        name: hashlib.sha256(files[name]).hexdigest() for name in EVAL_FILES[:-1]
    }


@pytest.mark.parametrize("mode", ["mid", "after"])
@pytest.mark.kill
def test_evaluate_killed_at_every_write_then_the_same_call_finishes_identically(
    mode, eval_reference, best, splits, tmp_path
):
    from vitcifar.evaluate import evaluate

    expected, calls = eval_reference
    for n in range(1, len(calls) + 1):
        out = tmp_path / f"kill{n}"
        with pytest.MonkeyPatch.context() as mp:
            dying_at(mp, n, mode)
            with pytest.raises(Killed):
                evaluate(best, splits.test, out_dir=out, device="cpu")
        # what the kill left: whole files under final names, never a partial one
        for name, data in folder_bytes(out).items():
            if not name.startswith("."):
                assert data == expected[name], (n, mode, name)
        evaluate(best, splits.test, out_dir=out, device="cpu")  # the same call again
        assert folder_bytes(out) == expected, (n, mode)  # the temporary file is gone too


def test_evaluate_over_an_older_evaluation_replaces_every_file(
    eval_reference, best, splits, tmp_path
):
    from vitcifar.evaluate import evaluate

    out = tmp_path / "again"
    out.mkdir()
    for name in EVAL_FILES:
        (out / name).write_bytes(b"older")
    evaluate(best, splits.test, out_dir=out, device="cpu")
    assert folder_bytes(out) == eval_reference[0]


# ----------------------------------------------------------------------------- export


def logits_of(path, fmt, x):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(["logits"], {"images": x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")(x).detach().numpy()


def final_files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.kill
def test_export_killed_at_every_point_leaves_no_file_or_the_whole_one(fmt, best, tmp_path):
    if fmt == "onnx":
        for name in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(name)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    name = "model.onnx" if fmt == "onnx" else "model.pt"
    ref = tmp_path / "ref"
    with pytest.MonkeyPatch.context() as mp:
        calls = counting_writes(mp)
        export_model(best, ref / name, format=fmt)
    assert calls == [name]  # one write: graph and metadata go in together
    expected_meta, expected_logits = read_metadata(ref / name), logits_of(ref / name, fmt, x)
    assert expected_meta["classes"] == checkpoint.load_checkpoint(best)["classes"]
    assert final_files(ref) == [name]

    import vitcifar.export as export_module

    for point in ["exporter", "mid", "after"]:
        out = tmp_path / point
        with pytest.MonkeyPatch.context() as mp:
            if point == "exporter":  # killed while the exporter runs, before anything is written

                def dying_exporter(*args, **kwargs):
                    raise Killed("in the exporter")

                mp.setattr(export_module, "_exported_bytes", dying_exporter)
            else:
                dying_at(mp, 1, point)
            with pytest.raises(Killed):
                export_model(best, out / name, format=fmt)
        left = final_files(out) if out.exists() else []
        assert LOCK_NAME not in left
        if point == "after":  # killed after the rename: the whole file, metadata included
            assert name in left and read_metadata(out / name) == expected_meta
        else:  # no file under the final name, at most a temporary one
            assert name not in left and all(re.fullmatch(rf"\.{name}\..*\.tmp", f) for f in left)
        export_model(best, out / name, format=fmt)  # the same call again
        assert final_files(out) == [name], point
        assert read_metadata(out / name) == expected_meta
        np.testing.assert_allclose(logits_of(out / name, fmt, x), expected_logits, atol=1e-5)


# ----------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask_as_open_does(umask, mode, best, tmp_path):
    """A checkpoint, a run's files and an export get 0o666 less the umask, as files made by
    open() do: written through tempfile.mkstemp they were 0o600 whatever the umask, so another
    user of a shared machine (a model server) could not read an exported model."""
    old = os.umask(umask)
    try:
        checkpoint.atomic_save({"x": torch.zeros(2)}, tmp_path / "state.pt")
        export_model(best, tmp_path / "model.pt", format="torchscript")
        checkpoint.atomic_write(tmp_path / "notes.txt", lambda f: f.write(b"hi"))
    finally:
        os.umask(old)
    for name in ("state.pt", "model.pt", "notes.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "notes.txt", "state.pt"]
