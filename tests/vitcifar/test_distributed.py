"""Data-parallel training under torchrun on the CPU (gloo, 2 processes): the same weights as one
process with the same global batch, resume with another number of processes, per-rank dropout
masks that a run reproduces (and a resume continues), and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitcifar
from vitcifar.checkpoint import load_checkpoint
from vitcifar.data import load_splits
from vitcifar.distributed import Distributed, group_backend
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, train

pytestmark = pytest.mark.slow

# The Python API, as each process under torchrun runs it.
WORKER = """
import sys
import torch
from vitcifar.data import load_splits
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, train

data, out, loader, stop = sys.argv[1:5]
torch.set_num_threads(1)
splits = load_splits(data, val_size=16, subset=64, progress=False)
model = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.0, emb_dropout=0.0)
cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, warmup_frac=0.1, device="cpu", num_workers=0, loader=loader)
train(model, splits, cfg, out, progress=False, stop_after=None if stop == "all" else int(stop))
"""

# With dropout: each rank records the keep-masks of its first dropout calls (the token dropout,
# then the blocks'), and the inputs that were non-zero (where a zero says the unit was dropped).
WORKER_MASKS = """
import os
import sys
import torch
from torch import nn
from vitcifar.data import load_splits
from vitcifar.model import ViTConfig
from vitcifar.train import TrainConfig, train

data, out, stop, masks = sys.argv[1:5]
torch.set_num_threads(1)
seen = []

def record(module, inputs, output):
    if isinstance(module, nn.Dropout) and module.training and len(seen) < 3:
        seen.append((output != 0, inputs[0] != 0))

torch.nn.modules.module.register_module_forward_hook(record)
splits = load_splits(data, val_size=16, subset=64, progress=False)
model = ViTConfig(patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.2,
                  emb_dropout=0.2, drop_path=0.2)
cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, warmup_frac=0.1, device="cpu", num_workers=0,
                  loader="batch")
train(model, splits, cfg, out, progress=False, stop_after=None if stop == "all" else int(stop))
torch.save(seen, f"{masks}.rank{os.environ['RANK']}.pt")
"""


def torchrun(n: int, *args: str) -> subprocess.CompletedProcess:
    # the processes import this vitcifar (the one under test), whatever else is installed
    path = os.pathsep.join(
        [str(Path(vitcifar.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(n),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_process(image_folder, out, loader, stop_after=None):
    splits = load_splits(str(image_folder), val_size=16, subset=64, progress=False)
    model = ViTConfig(
        patch_size=8, dim=32, depth=2, heads=2, num_classes=4, dropout=0.0, emb_dropout=0.0
    )
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        lr=3e-3,
        warmup_frac=0.1,
        device="cpu",
        num_workers=0,
        loader=loader,
    )
    return train(model, splits, cfg, out, progress=False, stop_after=stop_after)


def assert_close_runs(a, b):
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 2
    for k in ca["model"]:
        a, b = ca["model"][k].clone(), cb["model"][k].clone()
        if k.endswith("attn.qkv.bias"):
            # The key bias cancels in the softmax: its gradient is pure rounding noise, which Adam
            # scales up to lr-sized steps, so only it is compared loosely (lr 3e-3, 8 steps).
            assert torch.allclose(a[32:64], b[32:64], atol=1e-4), k
            a[32:64] = b[32:64] = 0
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), k
    for ra, rb in zip(ca["history"], cb["history"]):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_acc"] == pytest.approx(rb["val_acc"], abs=1e-6)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "worker.py"
    path.write_text(WORKER)
    return str(path)


@pytest.mark.parametrize("loader", ["sample", "batch"])
def test_two_processes_equal_one_with_the_same_global_batch(worker, image_folder, tmp_path, loader):
    torchrun(2, worker, str(image_folder), str(tmp_path / "ddp"), loader, "all")
    one_process(image_folder, tmp_path / "one", loader)
    assert_close_runs(tmp_path / "ddp", tmp_path / "one")
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["runtime"]["processes"] == 2
    assert not [p for p in (tmp_path / "ddp").iterdir() if p.suffix == ".tmp"]


def test_killed_two_process_run_resumes_in_one_process(worker, image_folder, tmp_path):
    torchrun(
        2, worker, str(image_folder), str(tmp_path / "run"), "batch", "1"
    )  # then the machine goes
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1
    run = one_process(image_folder, tmp_path / "run", "batch")  # one GPU left
    assert [r["epoch"] for r in run.history] == [1, 2]
    one_process(image_folder, tmp_path / "straight", "batch")
    assert_close_runs(tmp_path / "run", tmp_path / "straight")


@pytest.fixture(scope="module")
def dropout_runs(image_folder, tmp_path_factory):
    """Two identical 2-process runs with dropout and drop-path: their folders and masks."""
    root = tmp_path_factory.mktemp("ddp_dropout")
    script = root / "worker_masks.py"
    script.write_text(WORKER_MASKS)
    for name in ("a", "b"):
        torchrun(2, str(script), str(image_folder), str(root / name), "all", str(root / name))
    return root, script


def _masks(prefix):
    return [torch.load(f"{prefix}.rank{r}.pt") for r in range(2)]


def assert_same_run(a, b):
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] == 2
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    numbers = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")  # not the timings
    assert [[r[k] for k in numbers] for r in ca["history"]] == [
        [r[k] for k in numbers] for r in cb["history"]
    ]
    for r in range(2):
        assert torch.equal(ca["rng"]["ranks"][r]["torch"], cb["rng"]["ranks"][r]["torch"])


def test_each_rank_draws_its_own_dropout_masks(dropout_runs):
    root, _ = dropout_runs
    (keep0, valid0), (keep1, valid1) = (masks[0] for masks in _masks(root / "a"))
    both = valid0 & valid1  # units whose input was non-zero on both ranks
    assert both.float().mean() > 0.9
    assert keep0[both].float().mean() == pytest.approx(0.8, abs=0.05)  # dropout=0.2 drops there
    assert keep1[both].float().mean() == pytest.approx(0.8, abs=0.05)
    same = (keep0[both] == keep1[both]).float().mean()
    assert same < 0.8, f"the ranks dropped the same units ({same:.0%} of the masks agree)"
    ckpt = load_checkpoint(root / "a" / "last.pt")
    assert ckpt["runtime"]["processes"] == 2 and len(ckpt["rng"]["ranks"]) == 2


def test_a_two_process_run_with_dropout_is_reproducible(dropout_runs):
    root, _ = dropout_runs
    for ra, rb in zip(_masks(root / "a"), _masks(root / "b")):
        assert len(ra) == len(rb) == 3
        for (ka, va), (kb, vb) in zip(ra, rb):
            assert torch.equal(ka, kb) and torch.equal(va, vb)
    assert_same_run(root / "a", root / "b")


def test_a_killed_two_process_run_with_dropout_resumes_exactly(
    dropout_runs, image_folder, tmp_path
):
    root, script = dropout_runs
    run = tmp_path / "run"
    torchrun(2, str(script), str(image_folder), str(run), "1", str(tmp_path / "first"))
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    torchrun(2, str(script), str(image_folder), str(run), "all", str(tmp_path / "second"))
    assert_same_run(run, root / "a")  # each rank continued its own stream, not rank 0's


def test_torchrun_cli_trains_with_one_speaker(image_folder, tmp_path, tiny_train_args):
    done = torchrun(
        2, "-m", "vitcifar", *tiny_train_args(image_folder, tmp_path / "run", "--no-eval")
    )
    assert done.stdout.count("data: 32 train / 8 val / 64 test images, 4 classes; 2 processes") == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_shards_cover_the_global_batch_and_odd_batches_are_refused():
    x = torch.arange(12)
    parts = [Distributed(rank=r, world_size=3).shard(x) for r in range(3)]
    assert torch.equal(torch.cat(parts), x)
    with pytest.raises(
        ValueError, match="--batch-size 10 .* over 3 processes; use a multiple of 3"
    ):
        Distributed(rank=0, world_size=3).check_batch(10)
    assert torch.equal(Distributed().shard(x), x)


@pytest.mark.parametrize(
    ("device", "cuda_available", "backend"),
    [
        ("cpu", True, "gloo"),
        ("cpu", False, "gloo"),
        ("cuda", True, "nccl"),
        (None, True, "nccl"),
        (None, False, "gloo"),
        ("cuda:1", True, "nccl"),
    ],
)
def test_the_group_backend_follows_the_training_device(device, cuda_available, backend):
    # --device cpu under torchrun on a GPU machine (the GPU check's torchrun tests) needs gloo
    assert group_backend(device, cuda_available) == backend
