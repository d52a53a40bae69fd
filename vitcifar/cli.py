"""Command line: ``python -m vitcifar train|evaluate|predict|export ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from vitcifar.checkpoint import CheckpointError, check_not_a_link_loop
from vitcifar.config import preset_names
from vitcifar.data import DataError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _path(text: str) -> str:
    """A path argument; an empty one (``--out ""``) would mean the current folder, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return text


_PRESET_NOTES = {"deit-tiny": "the original notebook"}


def _preset_help(name: str) -> str:
    note = _PRESET_NOTES.get(name)
    return f"{name} ({note})" if note else name


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vitcifar", description="Train and evaluate a Vision Transformer on CIFAR-10/100."
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data_help = "cifar10 or cifar100 (downloaded to --data-root), or a path to an ImageFolder tree with train/<class>/ and test/<class>/"
    t = sub.add_parser(
        "train", help="train a model into a run folder (resumes if the folder holds last.pt)"
    )
    t.add_argument(
        "--preset",
        default="deit-tiny",
        choices=preset_names(),  # the rows of vitcifar.config.PRESET_TABLE, read when the parser is built
        help="model + recipe, a row of vitcifar.config.PRESET_TABLE: "
        + ", ".join(_preset_help(name) for name in preset_names())
        + " (default: %(default)s)",
    )
    t.add_argument("--data", required=True, type=_path, help=data_help)
    t.add_argument(
        "--data-root",
        default="./data",
        help="download folder for cifar10/cifar100 (default: %(default)s)",
    )
    t.add_argument(
        "--out", required=True, type=_path, help="run folder for checkpoints, metrics and figures"
    )
    t.add_argument("--epochs", type=_positive(int), help="epochs (preset default: 300)")
    t.add_argument(
        "--batch-size",
        type=_positive(int),
        help="batch size (preset default: deit-tiny 1024, vit-fast 512)",
    )
    t.add_argument(
        "--lr", type=_positive(float), help="peak learning rate (default: 5e-4 * batch size / 512)"
    )
    t.add_argument(
        "--subset",
        type=_positive(int),
        help="train on a class-balanced subset of N images (quick runs)",
    )
    t.add_argument(
        "--val-size",
        type=_non_negative_int,
        default=5000,
        help="training images held out for picking best.pt; 0 = pick on the test set like the original notebook (default: %(default)s)",
    )
    t.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s"
    )
    t.add_argument(
        "--amp",
        choices=["auto", "off", "fp16", "bf16"],
        help="mixed precision (default auto: bf16 on Ampere+, fp16 on T4, off on CPU)",
    )
    t.add_argument(
        "--loader",
        choices=["auto", "sample", "batch"],
        help="training input: sample = torchvision per image in worker processes (the original "
        "notebook's); batch = batched augmentation on the GPU or in CPU threads, the faster input "
        "path for CPU users with a big model too (default auto: batch on CUDA, sample on the CPU)",
    )
    gpu = t.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu-aug",
        dest="gpu_aug",
        action="store_true",
        default=None,
        help="keep the data on the GPU and augment whole batches there (default when CUDA is used)",
    )
    gpu.add_argument(
        "--no-gpu-aug",
        dest="gpu_aug",
        action="store_false",
        help="per-sample torchvision augmentation in CPU workers",
    )
    t.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (falls back to eager on failure)",
    )
    t.add_argument(
        "--num-workers", type=_non_negative_int, help="CPU DataLoader workers (default: 2)"
    )
    t.add_argument("--seed", type=int, help="random seed (default: 0)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT/last.pt with its stored settings (a folder with last.pt and the same settings resumes anyway)",
    )
    t.add_argument(
        "--no-eval", action="store_true", help="skip the final test-set evaluation of best.pt"
    )
    t.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or per-epoch lines, and no INFO logs: the data, best-epoch and "
        "evaluation summary lines stay, with warnings and errors",
    )

    e = sub.add_parser(
        "evaluate", help="evaluate a checkpoint on the test set; writes figures and metrics.json"
    )
    e.add_argument(
        "--checkpoint", required=True, type=_path, help="RUN_DIR/best.pt or RUN_DIR/last.pt"
    )
    e.add_argument("--data", required=True, type=_path, help=data_help)
    e.add_argument(
        "--data-root",
        default="./data",
        help="download folder for cifar10/cifar100 (default: %(default)s)",
    )
    e.add_argument(
        "--out",
        type=_path,
        help="folder for figures and metrics.json (default: the checkpoint's folder)",
    )
    e.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s"
    )

    pr = sub.add_parser(
        "predict",
        help="classify your own images (files or folders) with a checkpoint",
        description="Classify images of any size and mode, prepared as the training data "
        "(RGB, bicubic resize to the model's size, CIFAR-10 normalisation). Prints one line per "
        "image; an unreadable image is skipped with one line on stderr. Exit status: 0 every "
        "image predicted, 1 some images skipped, 2 usage errors (bad options, a missing "
        "checkpoint or path, no images found).",
    )
    pr.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files or folders (searched recursively)",
    )
    pr.add_argument(
        "--checkpoint", required=True, type=_path, help="RUN_DIR/best.pt or RUN_DIR/last.pt"
    )
    pr.add_argument(
        "--top-k",
        type=_positive(int),
        default=3,
        help="classes shown per image (default: %(default)s)",
    )
    tta = pr.add_mutually_exclusive_group()
    tta.add_argument(
        "--tta",
        dest="tta",
        action="store_true",
        default=None,
        help="average each image with its mirror image (default: as the checkpoint's evaluation)",
    )
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="no test-time augmentation")
    pr.add_argument("--out", type=_path, help="also write the predictions to a .csv or .json file")
    pr.add_argument(
        "--batch-size",
        type=_positive(int),
        default=256,
        help="images per forward pass (default: %(default)s)",
    )
    pr.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: %(default)s"
    )

    x = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (normalisation inside, dynamic batch)",
        description="The exported model takes RGB images (batch, 3, S, S) on the 0-255 scale "
        "(S = the model's image size; resize with a bicubic filter first) and returns logits "
        "(batch, classes). Class names and the input contract are in the file's metadata.",
    )
    x.add_argument(
        "--checkpoint", required=True, type=_path, help="RUN_DIR/best.pt or RUN_DIR/last.pt"
    )
    x.add_argument(
        "--format", default="onnx", choices=["onnx", "torchscript"], help="default: %(default)s"
    )
    x.add_argument(
        "--out",
        type=_path,
        help="output file (default: beside the checkpoint, NAME.onnx or NAME.torchscript.pt)",
    )
    x.add_argument(
        "--input-dtype",
        default="uint8",
        choices=["uint8", "float32"],
        help="ONNX input type, both on 0-255 (default: %(default)s)",
    )
    x.add_argument("--opset", type=_positive(int), help="ONNX opset (default: the exporter's)")
    return p


def _train(args: argparse.Namespace) -> int:
    from vitcifar.checkpoint import RunFolder, load_checkpoint
    from vitcifar.config import config_for_preset
    from vitcifar.data import load_splits
    from vitcifar.distributed import Distributed
    from vitcifar.evaluate import evaluate
    from vitcifar.machine import resolve_device
    from vitcifar.model import ViTConfig
    from vitcifar.train import train

    overrides = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "device": args.device,
            "amp": args.amp,
            "gpu_aug": args.gpu_aug,
            "loader": args.loader,
            "compile": args.compile or None,
            "num_workers": args.num_workers,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    model_cfg, cfg = config_for_preset(args.preset, **overrides)
    folder = RunFolder(args.out)  # checked before the data is loaded, which can take minutes
    folder.check_new_run()
    folder.check_writable()
    source = {"data": args.data, "val_size": args.val_size, "subset": args.subset, "seed": cfg.seed}
    last = Path(args.out) / "last.pt"
    if args.resume and last.exists():  # the run's own data split, whatever the command line says
        ckpt = load_checkpoint(last)
        source = ckpt.get("data", {}).get("source") or source
        model_cfg = ViTConfig.from_dict(ckpt["model_config"])
    # under torchrun: rank 0 downloads first, then the others read
    dist = Distributed.from_env(resolve_device(cfg.device))
    if not dist.is_main:
        dist.barrier()
    splits = load_splits(
        source["data"],
        data_root=args.data_root,
        val_size=source["val_size"],
        subset=source["subset"],
        seed=source["seed"],
        image_size=model_cfg.image_size,
        progress=not args.quiet and dist.is_main,
    )
    if dist.is_main:
        dist.barrier()
    model_cfg = replace(model_cfg, num_classes=len(splits.classes))
    say = print if dist.is_main else (lambda *a, **k: None)  # one process speaks
    say(
        f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test images, "
        f"{len(splits.classes)} classes"
        + (f"; {dist.world_size} processes" if dist.enabled else "")
    )
    run = train(model_cfg, splits, cfg, args.out, resume=args.resume, progress=not args.quiet)
    say(
        f"best validation accuracy {run.best_val_acc:.4f} at epoch {run.best_epoch}; run folder {run.out_dir}"
    )
    if not args.no_eval and dist.is_main:
        report = evaluate(run.out_dir / "best.pt", splits.test, device=args.device)
        print(report.summary())
        print("wrote " + ", ".join(str(p) for p in report.files.values()))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from vitcifar.checkpoint import load_checkpoint
    from vitcifar.data import load_test_set
    from vitcifar.evaluate import check_finite, evaluate

    ckpt = load_checkpoint(args.checkpoint)
    check_finite(ckpt, args.checkpoint)  # before minutes of loading the test set
    image_size = ckpt["model_config"].get("image_size", 32)
    test = load_test_set(args.data, data_root=args.data_root, image_size=image_size)
    report = evaluate(args.checkpoint, test, out_dir=args.out, device=args.device)
    print(report.summary())
    print("wrote " + ", ".join(str(p) for p in report.files.values()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from vitcifar.predict import find_images, predict

    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out {args.out}: use a .csv or .json file name")
    paths = find_images(args.images)
    if not paths:
        raise DataError(f"no image files found in {' '.join(args.images)}")
    preds = predict(
        args.checkpoint,
        paths,
        top_k=args.top_k,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        skip_errors=True,
    )
    for _, reason in preds.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if len(preds):
        print(preds.table())
    if args.out:
        print(f"wrote {preds.save(args.out)}")
    if preds.skipped:
        print(
            f"vitcifar: {len(preds)} of {len(paths)} images predicted, {len(preds.skipped)} skipped",
            file=sys.stderr,
        )
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from vitcifar.export import export_model

    ckpt, out = Path(args.checkpoint), _export_out(args)
    check_not_a_link_loop(ckpt, "checkpoint")
    check_not_a_link_loop(out, "--out", ValueError)
    if out.resolve() == ckpt.resolve():
        raise ValueError(f"--out {out} would overwrite the checkpoint; choose another file name")
    try:
        export_model(ckpt, out, format=args.format, input_dtype=args.input_dtype, opset=args.opset)
    except (ImportError, RuntimeError) as err:  # a missing extra, or the exporter failed
        print(f"vitcifar: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.format}, {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _export_out(args: argparse.Namespace) -> Path:
    ckpt = Path(args.checkpoint)
    suffix = ".onnx" if args.format == "onnx" else ".torchscript.pt"
    return Path(args.out) if args.out else ckpt.with_name(ckpt.stem + suffix)


_COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export}

# The folder each command writes, locked for the whole command (vitcifar.checkpoint.hold_folder):
# a second writer is refused before minutes of data loading, not after them.
_WRITES_INTO = {
    "train": lambda args: Path(args.out),
    "evaluate": lambda args: Path(args.out or Path(args.checkpoint).parent),
    "predict": lambda args: Path(args.out).parent if args.out else None,
    "export": lambda args: _export_out(args).parent,
}


def _run_locked(args: argparse.Namespace) -> int:
    from vitcifar.checkpoint import RunFolder, hold_folder
    from vitcifar.distributed import Distributed

    folder = _WRITES_INTO[args.command](args)
    if folder is None:
        return _COMMANDS[args.command](args)
    dist = None
    if args.command == "train":
        RunFolder(folder).check_writable()  # its own message for a --out below a file
        dist = Distributed.from_env()  # under torchrun rank 0 holds the lock for all
    with hold_folder(folder, command=args.command, dist=dist):
        return _COMMANDS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    from vitcifar.machine import TrainingDiverged, TrainingOutOfMemory, is_out_of_memory

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not getattr(args, "quiet", False) else logging.WARNING,
        format="%(message)s",
    )
    try:
        return _run_locked(args)
    except KeyboardInterrupt:  # Ctrl-C: every file is whole (atomic writes), so no traceback
        again = "resumes from the last finished epoch" if args.command == "train" else "redoes it"
        print(f"vitcifar: interrupted (Ctrl-C); the same command again {again}", file=sys.stderr)
        return 130
    except (DataError, CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"vitcifar: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk or a folder that vanished while writing
        print(f"vitcifar: error: {err.strerror or err} ({err.filename or ''})", file=sys.stderr)
        return 2
    except TrainingOutOfMemory as err:
        print(f"vitcifar: out of memory: {err}", file=sys.stderr)
        return 1
    except TrainingDiverged as err:
        print(f"vitcifar: training stopped: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # out of GPU memory outside training (evaluate, predict, export)
        if not is_out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        print(
            f"vitcifar: out of memory: {first}; free the GPU (another notebook or process) or "
            "use --device cpu",
            file=sys.stderr,
        )
        return 1
