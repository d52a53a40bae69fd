"""The last tracebacks of issue 20, each now one line with the documented exit status (2: a usage
or output problem): a full disk in every writer, a read-only export folder, symbolic link loops,
an --opset the exporter cannot write, an empty --out. Through the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from vitcifar.checkpoint import FORMAT, atomic_save
from vitcifar.config import TrainConfig
from vitcifar.model import ViT, ViTConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A real vitcifar checkpoint of a tiny model, written as training writes one."""
    cfg = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    atomic_save(
        {
            "format": FORMAT,
            "model": ViT(cfg).state_dict(),
            "model_config": cfg.to_dict(),
            "train_config": TrainConfig(device="cpu").to_dict(),
            "epoch": 1,
            "history": [],
            "classes": ["blue", "green", "red", "yellow"],
        },
        path,
    )
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, options)``: a real tmpfs mounted at tmp_path/name (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = []

    def mount(name: str, options: str):
        folder = tmp_path / name
        folder.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)])


@pytest.fixture
def full_disk(tmpfs):
    """A real full disk (not a simulated error): a 2 MB tmpfs filled but for one 4 KiB page,
    which the folder lock's PID takes."""
    disk = tmpfs("disk", "size=2m")
    (disk / "spare").write_bytes(b"\0" * 4096)
    try:
        with open(disk / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass
    (disk / "spare").unlink()
    return disk


@pytest.fixture
def small_disk(tmpfs):
    """A 2 MB tmpfs: smaller than a deit-tiny checkpoint (64 MB), so torch.save runs out."""
    return tmpfs("small", "size=2m")


@pytest.fixture
def read_only(tmpfs):
    return tmpfs("ro", "size=1m,ro")


# ----------------------------------------------------------------------------- a full disk


def test_disk_full_while_training(
    small_disk, image_folder, tiny_train_args, run_cli, one_error_line
):
    err = one_error_line(run_cli(*tiny_train_args(image_folder, small_disk / "run", "--no-eval")))
    assert "No space left on device while writing last.pt" in err
    assert list(small_disk.iterdir()) == []  # no partial file; the run folder it made is gone


def test_a_disk_too_full_for_the_lock_is_one_error_line(full_disk, ckpt, run_cli, one_error_line):
    (full_disk / "last-page").write_bytes(b"x")  # the page the lock would take
    out = full_disk / "model.pt"
    err = one_error_line(
        run_cli("export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out))
    )
    assert f"cannot write {full_disk} (No space left on device); choose another --out" in err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler", "last-page"]


def test_torch_save_on_a_full_disk_is_one_oserror(full_disk):
    # torch's zip writer reports the short write as "[enforce fail at inline_container.cc:...]
    # unexpected pos"; atomic_save says what it is
    with pytest.raises(OSError, match=r"No space left on device while writing last.pt") as err:
        atomic_save({"w": torch.zeros(100_000)}, full_disk / "last.pt")
    assert err.value.filename == str(full_disk / "last.pt")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_disk_full_while_evaluating(full_disk, ckpt, image_folder, run_cli, one_error_line):
    args = ["--checkpoint", str(ckpt), "--data", str(image_folder), "--device", "cpu"]
    err = one_error_line(run_cli("evaluate", *args, "--out", str(full_disk / "eval")))
    assert "No space left on device while writing confusion.png" in err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # nothing partial, no folder


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_disk_full_while_exporting(full_disk, ckpt, fmt, run_cli, one_error_line):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = full_disk / "model.bin"
    err = one_error_line(
        run_cli("export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(out))
    )
    assert "No space left on device while writing model.bin" in err
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_disk_full_while_writing_predictions(
    full_disk, ckpt, image_folder, run_cli, one_error_line
):
    out = full_disk / "preds.csv"
    done = run_cli(
        "predict",
        "--checkpoint",
        str(ckpt),
        "--device",
        "cpu",
        str(image_folder),
        "--out",
        str(out),
    )
    assert "No space left on device while writing preds.csv" in one_error_line(done)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_into_a_read_only_folder(read_only, ckpt, fmt, run_cli, one_error_line):
    out = read_only / "model.bin"
    err = one_error_line(
        run_cli("export", "--checkpoint", str(ckpt), "--format", fmt, "--out", str(out))
    )
    assert f"cannot write {read_only} (Read-only file system); choose another --out" in err


def test_export_opset_outside_what_the_exporter_writes(ckpt, tmp_path, run_cli, one_error_line):
    pytest.importorskip("onnx")
    from vitcifar.export import supported_opsets

    low, high = supported_opsets()
    out = tmp_path / "model.onnx"
    for opset in (1, high + 1):
        done = run_cli(
            "export", "--checkpoint", str(ckpt), "--opset", str(opset), "--out", str(out)
        )
        err = one_error_line(done)
        assert (
            f"--opset {opset} is outside what the installed exporter writes ({low} to {high})"
            in err
        )
        assert "wrote" not in done.stdout and not out.exists()


def test_export_opset_below_the_attentions_is_one_line_without_the_ir_dump(
    ckpt, tmp_path, run_cli, one_error_line
):
    # ONNX has scaled_dot_product_attention from opset 14: a common older choice (11, 13) once
    # ran both exporters and printed the TorchScript-based one's IR graph, ~480 lines, on stdout.
    pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    done = run_cli("export", "--checkpoint", str(ckpt), "--opset", "13", "--out", str(out))
    err = one_error_line(done)
    assert "--opset 13 is outside what the installed exporter writes (14 to " in err
    assert done.stdout == "" and not out.exists()


def test_export_writes_the_opset_asked_for(ckpt, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from vitcifar.export import export_model

    out = export_model(ckpt, tmp_path / "m17.onnx", opset=17)  # below the exporter's own 18
    versions = {o.domain: o.version for o in onnx.load(str(out)).opset_import}
    assert versions.get("", versions.get("ai.onnx")) == 17


# ----------------------------------------------------------------------------- links and paths


@pytest.fixture
def loop(tmp_path):
    path = tmp_path / "loop.pt"
    os.symlink(path.name, path)  # loop.pt -> loop.pt
    return path


@pytest.mark.parametrize("command", ["export", "evaluate", "predict"])
def test_checkpoint_that_is_a_symlink_loop(
    command, loop, image_folder, tmp_path, run_cli, one_error_line
):
    extra = {
        "export": ["--out", str(tmp_path / "m.pt"), "--format", "torchscript"],
        "evaluate": ["--data", str(image_folder), "--out", str(tmp_path / "eval")],
        "predict": [str(image_folder)],
    }[command]
    err = one_error_line(run_cli(command, "--checkpoint", str(loop), *extra))
    assert f"checkpoint {loop} is a symbolic link loop" in err


def test_image_that_is_a_symlink_loop(ckpt, tmp_path, run_cli, one_error_line):
    image = tmp_path / "cat.png"
    os.symlink(image.name, image)
    err = one_error_line(run_cli("predict", "--checkpoint", str(ckpt), str(image)))
    assert f"image {image} is a symbolic link loop" in err


def test_export_out_that_is_a_symlink_loop(ckpt, loop, run_cli, one_error_line):
    err = one_error_line(
        run_cli("export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(loop))
    )
    assert f"--out {loop} is a symbolic link loop" in err


def test_train_out_empty_is_refused_and_nothing_is_written(
    image_folder, tmp_path, tiny_train_args, run_cli, one_error_line
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    err = one_error_line(run_cli(*tiny_train_args(image_folder, "", "--no-eval"), cwd=cwd))
    assert "argument --out: an empty path" in err
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_other_empty_paths_are_refused(command, ckpt, image_folder, run_cli, one_error_line):
    extra = {
        "evaluate": ["--data", str(image_folder)],
        "predict": [str(image_folder)],
        "export": [],
    }
    err = one_error_line(run_cli(command, "--checkpoint", str(ckpt), *extra[command], "--out", ""))
    assert "argument --out: an empty path" in err


def test_train_api_refuses_an_empty_run_folder(image_folder, tmp_path, monkeypatch):
    from vitcifar.data import load_splits
    from vitcifar.train import train

    monkeypatch.chdir(tmp_path)
    splits = load_splits(str(image_folder), val_size=8, subset=32, progress=False)
    with pytest.raises(ValueError, match="the run folder is an empty path"):
        train(ViTConfig(num_classes=4), splits, TrainConfig(epochs=1, device="cpu"), "")
    assert list(tmp_path.iterdir()) == []
