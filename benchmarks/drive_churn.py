"""Bytes a 300-epoch deit-tiny run replaces or deletes on Google Drive (whose Trash counts them
against the 15 GB free quota): the old scheme (the run folder on Drive, written every epoch)
against the mirror (vitcifar.checkpoint.Mirror: train on the session's disk, copy to Drive),
in the same run.

Real files: a deit-tiny model and AdamW state (after one step) saved as last.pt and best.pt by
the real code; time is simulated (an epoch of 48 s, README's Colab T4 figure, and slower ones of
60 and 90 s), and the validation curve that decides the new-best epochs is a seeded rising curve
with noise. The mirror is the real ``Mirror`` on a fake clock, with MirrorPolicy's defaults (its
churn budget, 1.5 GB) and without the budget (``max_churn_bytes=inf``: a copy every 10 minutes
however long the run); its bytes are counted by looking at the Drive folder (name, inode, size)
before and after each of its calls.

    python benchmarks/drive_churn.py [--epochs 300]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

import torch

from vitcifar.checkpoint import (
    Mirror,
    MirrorPolicy,
    RunFolder,
    TrainState,
    atomic_save,
    metrics_text,
)
from vitcifar.config import config_for_preset
from vitcifar.model import ViT
from vitcifar.train import param_groups


def files_of(folder: Path) -> dict[tuple[str, int], int]:
    if not folder.exists():
        return {}
    return {(p.name, p.stat().st_ino): p.stat().st_size for p in folder.iterdir()}


def gone(before: dict, after: dict) -> int:
    """Bytes of the files in ``before`` that are not in ``after`` (replaced or deleted)."""
    return sum(size for key, size in before.items() if key not in after)


def new_bests(epochs: int, seed: int = 0) -> list[int]:
    """The best epoch after each epoch, for a rising, noisy validation accuracy."""
    rng, best, out = random.Random(seed), (-1.0, -1), []
    for e in range(1, epochs + 1):
        acc = 0.85 - 0.6 * math.exp(-e / 60) + rng.gauss(0, 0.004)
        if acc > best[0]:
            best = (acc, e)
        out.append(best[1])
    return out


def real_state(epochs: int) -> dict:
    model_cfg, cfg = config_for_preset("deit-tiny")
    model = ViT(model_cfg)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.peak_lr)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    row = {"epoch": 1, "lr": 5e-4, "train_loss": 1.234567, "train_acc": 0.5, "val_loss": 1.1,
           "val_acc": 0.6, "seconds": 48.1, "train_seconds": 40.2, "images_per_s": 1100.0}  # fmt: skip
    return TrainState(
        model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
        scaler={}, model_config=model_cfg.to_dict(), train_config=cfg.to_dict(),
        classes=[str(i) for i in range(10)], data={}, runtime={"device": "cuda", "amp": "float16"},
        epoch=epochs, best_epoch=epochs, best_val_acc=0.8, history=[row] * epochs,
    ).to_dict()  # fmt: skip


def old_scheme(sizes: dict[str, int], bests: list[int], row_bytes: int) -> int:
    """The run folder on Drive: last.pt and metrics.jsonl replaced after every epoch, best.pt
    (a copy of last.pt) on every new best."""
    epochs = len(bests)
    n_best = len(set(bests))
    metrics = sum(row_bytes * e for e in range(1, epochs))  # the replaced metrics.jsonl files
    return (epochs - 1) * sizes["last"] + (n_best - 1) * sizes["last"] + metrics


def new_scheme(
    tmp: Path, state: dict, bests: list[int], epoch_s: float, row: str, budget: float
) -> tuple[int, int, float]:
    """(bytes gone on Drive, last.pt copies, longest stretch of training not on Drive in s)."""
    local, drive = RunFolder(tmp / "local"), tmp / "drive"
    clock = iter(range(0, 10**9))
    t = {"now": 0.0}

    def fake_clock() -> float:
        t["now"] = next(clock) * epoch_s
        return t["now"]

    mirror = Mirror(drive, MirrorPolicy(max_churn_bytes=budget, clock=fake_clock))
    mirror.restore(local)  # the run starts (clock 0), with an empty session folder
    local.path.mkdir(parents=True)
    torch.save(state, local.last)  # the local commits: last.pt's bytes stay, best.pt's epoch moves
    churn, copies, synced_at, worst = 0, 0, 0.0, 0.0
    config = {**state["train_config"], "epochs": len(bests)}
    for e, best in enumerate(bests, start=1):
        local.metrics.write_text(row * e)
        if best == e:
            torch.save({**state, "epoch": e}, local.best)
        before = files_of(drive)
        mirror.after_commit(local, {"epoch": e, "best_epoch": best, "train_config": config})
        after = files_of(drive)
        churn += gone(before, after)
        if any(key[0] == "last.pt" and key not in before for key in after):
            copies += 1
            worst, synced_at = max(worst, e * epoch_s - synced_at), e * epoch_s
    before = files_of(drive)
    mirror.sync(local, final=True)  # the end of the call
    after = files_of(drive)
    churn += gone(before, after)
    copies += any(key[0] == "last.pt" and key not in before for key in after)
    return churn, copies, max(worst, len(bests) * epoch_s - synced_at)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    args = ap.parse_args()
    bests = new_bests(args.epochs)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "local").mkdir()
        state = real_state(args.epochs)
        atomic_save(state, tmp / "local" / "last.pt")
        atomic_save(state, tmp / "local" / "best.pt")
        row = metrics_text(state["history"][:1])
        sizes = {"last": (tmp / "local" / "last.pt").stat().st_size}
        old = old_scheme(sizes, bests, len(row))
        print(f"deit-tiny last.pt {sizes['last'] / 1e6:.1f} MB, {args.epochs} epochs, "
              f"{len(set(bests))} new-best epochs")  # fmt: skip
        print("| scheme | epoch | run | last.pt copies | Drive churn | at risk at most |")
        print("|---|---|---|---|---|---|")
        print(
            f"| old: run folder on Drive | any | any | {args.epochs} | {old / 1e9:.2f} GB | 1 epoch |"
        )
        schemes = (("mirror, no churn budget", math.inf), ("mirror (MirrorPolicy defaults)", None))
        for epoch_s in (48.0, 60.0, 90.0):
            for name, budget in schemes:
                budget = MirrorPolicy().max_churn_bytes if budget is None else budget
                run = tmp / f"run{epoch_s:.0f}-{budget}"
                churn, copies, worst = new_scheme(run, state, bests, epoch_s, row, budget)
                print(f"| {name} | {epoch_s:.0f} s | {args.epochs * epoch_s / 3600:.1f} h | {copies} "
                      f"| {churn / 1e9:.2f} GB ({old / churn:.0f}x less) | {worst / 60:.1f} min |")  # fmt: skip
        size = (run / "drive" / "last.pt").stat().st_size
        print(f"(mirror's last.pt {size / 1e6:.1f} MB deflated, best.pt "
              f"{(run / 'drive' / 'best.pt').stat().st_size / 1e6:.1f} MB weights only)")  # fmt: skip


if __name__ == "__main__":
    main()
