"""Proof of learning on real data without a GPU: the original notebook's pipeline against ours.

    python benchmarks/cpu_learning_parity.py --data /tmp/cifar10      # about 30 min on 2 cores

(Unpack the data first: ``mkdir -p /tmp/cifar10 && tar -xzf ../shared/data/cifar10-jpeg.tar.gz
-C /tmp/cifar10``.) One small ViT is trained on a class-balanced subset of the real CIFAR-10, with
the same model, seed, epochs, batch size, peak learning rate and augmentation recipe, by:

  (a) the original notebook's pipeline, written plainly below: torchvision's per-sample
      transforms in a DataLoader, a MixUp/CutMix collate, ``torch.optim.lr_scheduler.OneCycleLR``
      (its defaults: cosine warm-up over 30 %, momentum cycling) and a plain loop;
  (b) ``vitcifar.train`` with ``loader="sample"`` (the per-sample path, our CPU default);
  (c) ``vitcifar.train`` with ``loader="batch"`` (``BatchAugment``, the path that GPU runs use,
      here in CPU threads);
  (d) the ``vit-fast`` recipe (its model choices and recipe) at the same size and budget.

It prints each run's validation accuracy per epoch, and the test accuracy (10,000 images) of the
weights with the best validation accuracy, then a table; a PNG of the curves goes to --out.
Target: (b) and (c) each within 1 point of (a), or better.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

# One small ViT: 0.8 M parameters, 65 tokens of width 128 (deit-tiny is 5.4 M, 192 wide, 12 deep).
SMALL = {"patch_size": 4, "dim": 128, "depth": 6, "heads": 4, "mlp_ratio": 2.0}


# ----------------------------------------------------------------------------- (a), plainly


class PlainAugmented(torch.utils.data.Dataset):
    """uint8 images (N, 3, 32, 32) through RandomCrop + flip + RandAugment(2, 9), one at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.transform = v2.Compose(
            [
                v2.RandomCrop(32, padding=4),
                v2.RandomHorizontalFlip(),
                v2.RandAugment(num_ops=2, magnitude=9),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


class PlainCollate:
    """Stack, scale to [0, 1], normalise, then MixUp or CutMix (one per batch)."""

    def __init__(self, num_classes: int) -> None:
        self.mix = v2.RandomChoice(
            [
                v2.MixUp(alpha=0.8, num_classes=num_classes),
                v2.CutMix(alpha=1.0, num_classes=num_classes),
            ]
        )
        self.norm = v2.Normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch]).float() / 255.0
        y = torch.tensor([b[1] for b in batch])
        return self.mix(self.norm(x), y)


@torch.no_grad()
def plain_accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    norm = v2.Normalize(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(norm(images[i : i + batch].float() / 255.0))
        correct += int((logits.argmax(-1) == labels[i : i + batch]).sum())
    model.train()
    return correct / len(labels)


def run_plain(model_cfg, splits, args) -> dict:
    from vitcifar.model import ViT

    torch.manual_seed(args.seed)
    model = ViT(model_cfg)
    loader = torch.utils.data.DataLoader(
        PlainAugmented(splits.train.images, splits.train.labels),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        collate_fn=PlainCollate(len(splits.classes)),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * len(loader), pct_start=0.3
    )
    curve, best, best_state = [], -1.0, None
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            loss = torch.sum(-y * F.log_softmax(model(x), dim=-1), dim=-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = plain_accuracy(model, splits.val.images, splits.val.labels)
        curve.append(acc)
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
        print(
            f"  (a) epoch {epoch + 1}: val {acc:.4f}  {time.perf_counter() - t0:.0f}s", flush=True
        )
    model.load_state_dict(best_state)
    return {"val": curve, "test": plain_accuracy(model, splits.test.images, splits.test.labels)}


# ----------------------------------------------------------------------------- (b) (c) (d), ours


def run_ours(name, model_cfg, cfg, splits, out: Path) -> dict:
    from vitcifar import evaluate, train

    run = train(model_cfg, splits, cfg, out / name, progress=False)
    test = evaluate(out / name / "best.pt", splits.test, device="cpu", save=False).accuracy
    return {"val": [r["val_acc"] for r in run.history], "test": test}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/tmp/cifar10", help="ImageFolder CIFAR-10 (train/, test/)")
    p.add_argument("--subset", type=int, default=8000, help="training images (class-balanced)")
    p.add_argument("--val-size", type=int, default=2000, help="held-out validation images")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, all runs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes / loader threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="abcd", help="which runs, e.g. 'abc'")
    p.add_argument("--out", default="runs/cpu_learning_parity", help="run folders, PNG, JSON")
    args = p.parse_args()

    import logging

    import torchvision

    from vitcifar import TrainConfig, ViTConfig, load_splits
    from vitcifar.model import PRESETS
    from vitcifar.train import TRAIN_PRESETS

    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stdout)
    torch.set_num_threads(2)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(
            f"{out} is not empty: choose a fresh --out (run folders would resume)", file=sys.stderr
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(
        args.data, val_size=args.val_size, subset=args.subset, seed=args.seed, progress=False
    )
    print(
        f"torch {torch.__version__} | torchvision {torchvision.__version__} | "
        f"{torch.get_num_threads()} threads | {len(splits.train)} train / {len(splits.val)} val / "
        f"{len(splits.test)} test | {args.epochs} epochs, batch {args.batch_size}, peak lr {args.lr}"
    )
    model_cfg = ViTConfig(**SMALL, dropout=0.0, emb_dropout=0.0, num_classes=len(splits.classes))
    common = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "device": "cpu",
        "num_workers": args.workers,
        "eval_batch_size": 500,
        "seed": args.seed,
    }
    deit = TrainConfig(**common)  # the original recipe: warm-up 30 %, wd 0.05, Mixup/CutMix
    fast_model = replace(
        PRESETS["vit-fast"], **SMALL, num_classes=len(splits.classes)
    )  # mean pool, sin-cos positions, drop path 0.1
    fast = replace(TRAIN_PRESETS["vit-fast"], **common, loader="batch")
    runs = {
        "a": ("(a) original pipeline, plain loop", lambda: run_plain(model_cfg, splits, args)),
        "b": (
            "(b) vitcifar.train, sample loader",
            lambda: run_ours("b", model_cfg, replace(deit, loader="sample"), splits, out),
        ),
        "c": (
            "(c) vitcifar.train, batch loader",
            lambda: run_ours("c", model_cfg, replace(deit, loader="batch"), splits, out),
        ),
        "d": (
            "(d) vit-fast recipe, same size",
            lambda: run_ours("d", fast_model, fast, splits, out),
        ),
    }
    results = {}
    t_all = time.perf_counter()
    for key in args.runs:
        name, fn = runs[key]
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        results[key] = {"name": name, **fn(), "minutes": (time.perf_counter() - t0) / 60}
        print(
            f"{name}: test {results[key]['test']:.4f}, {results[key]['minutes']:.1f} min",
            flush=True,
        )
    total = (time.perf_counter() - t_all) / 60

    print(
        "\n| run | val accuracy per epoch | best val | test (best val weights) | vs (a) | minutes |"
    )
    print("|---|---|---|---|---|---|")
    base = results.get("a", {}).get("test")
    for r in results.values():
        vs = f"{100 * (r['test'] - base):+.1f} pt" if base is not None else "-"
        curve = " ".join(f"{v:.3f}" for v in r["val"])
        print(
            f"| {r['name']} | {curve} | {max(r['val']):.4f} | {r['test']:.4f} | {vs} | {r['minutes']:.1f} |"
        )
    print(f"\ntotal {total:.1f} min")
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1)
    )
    _plot(results, out / "cpu_learning_parity.png")
    print(f"wrote {out / 'results.json'} and {out / 'cpu_learning_parity.png'}")
    return 0


def _plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for r in results.values():
        ax.plot(
            range(1, len(r["val"]) + 1),
            r["val"],
            marker="o",
            label=f"{r['name']} (test {r['test']:.3f})",
        )
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="CPU learning parity, real CIFAR-10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
