"""Time-to-accuracy on one GPU: train on an ImageFolder CIFAR-10 copy within an epoch budget.

    python benchmarks/gpu_time_to_accuracy.py --data /path/to/cifar10 --epochs 50 --preset vit-fast

Prints per epoch: seconds, images/s, validation accuracy (from the training loop), then the test
accuracy, total minutes, the card and the versions; everything printed is also written to
--log (default RUN_DIR/time_to_accuracy.log). Data lives on the GPU and is augmented there
(--gpu-aug). Budget it to end well inside 10 minutes on an H100: see benchmarks/RESULTS.md.
With --device cuda where torch sees no GPU it prints one line "skipped: no CUDA ..." and exits
77 (after importing vitcifar, so that a check without a GPU still proves the imports). --json
PATH writes the summary (the JSON line printed at the end) to that file as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision


class Tee:
    """Write to the console and a log file at once."""

    def __init__(self, path: Path, stream) -> None:
        self.file, self.stream = open(path, "a", buffering=1), stream

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", required=True, help="ImageFolder CIFAR-10 (train/<class>/, test/<class>/)"
    )
    p.add_argument(
        "--epochs", type=int, required=True, help="epoch budget (the schedule spans exactly this)"
    )
    p.add_argument("--preset", default="vit-fast", choices=["deit-tiny", "vit-fast"])
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="default: the preset's rule")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--subset", type=int, help="train on N images (a quick check of the script)")
    p.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu only to check the script"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--out", default="runs/time_to_accuracy", help="run folder (a fresh one is advised)"
    )
    p.add_argument("--log", help="log file (default: OUT/time_to_accuracy.log)")
    p.add_argument("--json", type=Path, help="also write the summary to this JSON file")
    args = p.parse_args()

    import logging

    from vitcifar import config_for_preset, evaluate, load_splits, train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout = Tee(Path(args.log or out / "time_to_accuracy.log"), sys.stdout)
    sys.stderr = Tee(Path(args.log or out / "time_to_accuracy.log"), sys.stderr)
    # After the tee: a handler made earlier would keep writing to the old stderr (no epoch lines
    # in the log file).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print(
            "skipped: no CUDA (this benchmark is for a GPU machine; --device cpu checks the script)"
        )
        return 77
    card = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(
        f"card {card} | torch {torch.__version__} | torchvision {torchvision.__version__} | CUDA {torch.version.cuda}"
    )
    t_load = time.perf_counter()
    splits = load_splits(args.data, val_size=args.val_size, subset=args.subset, progress=False)
    print(
        f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test, "
        f"decoded in {time.perf_counter() - t_load:.1f}s (not counted below)"
    )
    overrides = {
        "epochs": args.epochs,
        "device": args.device,
        "gpu_aug": cuda,
        "compile": args.compile,
    }
    overrides.update(
        {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    )
    model_cfg, cfg = config_for_preset(args.preset, **overrides)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    run = train(model_cfg, splits, cfg, out, progress=False)
    sync()
    minutes = (time.perf_counter() - t0) / 60
    report = evaluate(out / "best.pt", splits.test, device=args.device)
    final = evaluate(out / "last.pt", splits.test, device=args.device, save=False)
    summary = {
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": cfg.batch_size,
        "peak_lr": cfg.peak_lr,
        "train_minutes": round(minutes, 2),
        "train_seconds_per_epoch": round(minutes * 60 / args.epochs, 2),
        "best_val_acc": run.best_val_acc,
        "best_epoch": run.best_epoch,
        "test_acc_best": report.accuracy,
        "test_acc_last": final.accuracy,
        "card": card,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    summary["benchmark"] = "time_to_accuracy"
    summary["seconds_per_epoch"] = [round(row["train_seconds"], 2) for row in run.history]
    summary["val_acc_per_epoch"] = [row.get("val_acc") for row in run.history]
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary) + "\n")
    print(
        f"\n{args.preset}, {args.epochs} epochs on {card}: test accuracy {report.accuracy:.4f} (best.pt), "
        f"{final.accuracy:.4f} (last.pt), training {minutes:.2f} min ({minutes * 60 / args.epochs:.1f} s/epoch)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
