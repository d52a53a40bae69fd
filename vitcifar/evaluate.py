"""Evaluate a model: ``evaluate_model`` (loss, accuracy, predictions; used by training on the
validation set too) and ``evaluate`` of a checkpoint on a test set: accuracy, per-class report,
confusion matrix, figures.

report = evaluate("runs/x/best.pt", splits.test)   # saves PNGs + metrics.json beside it
report.accuracy, report.figures["confusion"]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from vitcifar.checkpoint import (
    CheckpointError,
    hold_folder,
    load_checkpoint,
    load_state_into,
    write_in_order,
)
from vitcifar.config import TrainConfig, ViTConfig
from vitcifar.data import DataError, ImageSet, Splits, check_fits_model, eval_batches, normalize
from vitcifar.machine import resolve_amp, resolve_device
from vitcifar.model import ViT, attention_map
from vitcifar.plots import plot_attention, plot_confusion, plot_curves, plot_misclassified

__all__ = [
    "EvalReport",
    "check_finite",
    "evaluate",
    "evaluate_model",
    "load_model",
    "model_and_classes",
    "run_history",
]


@dataclass
class EvalReport:
    """Test metrics of one checkpoint. ``confusion`` is (K, K) int, rows = true class."""

    accuracy: float
    loss: float
    report: dict[str, Any]  # sklearn classification_report(output_dict=True)
    confusion: np.ndarray
    classes: list[str]
    predictions: torch.Tensor  # (N,) int64
    figures: dict[str, Figure] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"test accuracy {self.accuracy:.4f}  loss {self.loss:.4f}"]
        for c in self.classes:
            r = self.report[c]
            lines.append(
                f"  {c:>12s}  precision {r['precision']:.3f}  recall {r['recall']:.3f}  f1 {r['f1-score']:.3f}"
            )
        return "\n".join(lines)


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    data,
    *,
    device: torch.device,
    batch_size: int = 1024,
    amp: torch.dtype | None = None,
    tta_flip: bool = False,
) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions (N,) on CPU) of ``model`` on an ``ImageSet``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    preds = []
    for x, y in eval_batches(data, batch_size=batch_size, device=device):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
            if tta_flip:
                logits = logits + model(x.flip(-1))
        logits = logits.float() / (2 if tta_flip else 1)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        preds.append(logits.argmax(dim=-1))
    model.train(was_training)
    if not preds:
        return float("nan"), float("nan"), torch.empty(0, dtype=torch.int64)
    pred = torch.cat(preds).cpu()
    n = len(pred)
    return float(loss_sum) / n, float((pred == data.labels.cpu()).float().mean()), pred


def load_model(
    checkpoint: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[ViT, dict[str, Any]]:
    """Rebuild the model stored in ``checkpoint`` (its EMA weights when the run kept an EMA)."""
    ckpt = load_checkpoint(checkpoint)
    try:
        cfg = ViTConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{checkpoint} has an unusable model_config: {err}") from err
    check_finite(ckpt, checkpoint)
    model = ViT(cfg)
    load_state_into(model, _weights(ckpt), checkpoint)
    return model.to(device).eval(), ckpt


def _weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    return ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]


def check_finite(ckpt: dict[str, Any], checkpoint: str | os.PathLike) -> None:
    """Refuse a checkpoint whose weights (the EMA's when it has them, as ``load_model`` uses) hold
    NaN or inf (a run that diverged): they would give NaN probabilities and a meaningless
    accuracy, not an error."""
    state = _weights(ckpt)
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{checkpoint} holds weights that are not finite (NaN or inf in {shown}): the run "
            "diverged before this file was written; use an earlier checkpoint, or retrain with a "
            "lower --lr"
        )


def model_and_classes(
    model_or_checkpoint: ViT | str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ViT, list[str], dict[str, Any] | None]:
    """(model, class names, checkpoint or None) from a ``ViT`` or a checkpoint path (loaded on
    ``device``; a ``ViT`` stays where it is). Names: ``classes``, else the checkpoint's, else
    "0", "1", ...; a count that does not match the model is a ValueError."""
    if isinstance(model_or_checkpoint, torch.nn.Module):
        model, ckpt = model_or_checkpoint, None
    else:
        model, ckpt = load_model(model_or_checkpoint, device=device)
    if not isinstance(model, ViT):
        raise TypeError(f"expected a vitcifar ViT or a checkpoint path, got {type(model).__name__}")
    k = model.config.num_classes
    stored = ckpt.get("classes") if ckpt is not None else None
    names = list(classes or stored or [str(i) for i in range(k)])
    if len(names) != k:
        raise ValueError(f"{len(names)} class names given for a model with {k} classes")
    return model, names, ckpt


@torch.no_grad()
def mistake_probabilities(
    model: ViT,
    images: torch.Tensor,
    wrong: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int,
    tta_flip: bool,
) -> torch.Tensor:
    """(N, K) softmax of the images at the indices ``wrong`` (uint8 (N, C, H, W)), scored as
    evaluation scores them (mirror-averaged logits with ``tta_flip``); NaN in the other rows,
    which are not computed. For the misclassified figure's order and titles."""
    probs = torch.full((len(images), model.config.num_classes), float("nan"))
    for start in range(0, len(wrong), batch_size):
        idx = wrong[start : start + batch_size]
        x = normalize(images[idx].to(device))
        logits = (model(x) + model(x.flip(-1))) / 2 if tta_flip else model(x)
        probs[idx] = logits.float().softmax(dim=-1).cpu()
    return probs


def run_history(checkpoint: str | os.PathLike, ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole run's history. best.pt stores the history up to its own epoch; the run folder's
    metrics.jsonl (kept in line with last.pt) has every epoch, and is used when it continues
    ``ckpt``'s history (the same run)."""
    own = list(ckpt["history"])
    metrics = Path(checkpoint).parent / "metrics.jsonl"
    try:
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return own
    return rows if len(rows) >= len(own) and rows[: len(own)] == own else own


def evaluate(
    checkpoint: str | os.PathLike,
    test: ImageSet,
    *,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    n_misclassified: int = 25,
    save: bool = True,
) -> EvalReport:
    """Evaluate ``checkpoint`` on ``test``; save figures and ``metrics.json`` to ``out_dir``
    (default: the checkpoint's folder) unless ``save=False``."""
    from sklearn.metrics import classification_report, confusion_matrix

    if not isinstance(test, ImageSet):
        hint = (
            "pass splits.test (or splits.val)"
            if isinstance(test, Splits)
            else "use load_test_set(...) or ImageSet(images, labels, classes)"
        )
        raise TypeError(f"test must be a vitcifar ImageSet, got {type(test).__name__}; {hint}")
    if not len(test):
        raise DataError(
            "the test set is empty: there is nothing to evaluate; pass a set with images"
        )
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, device=dev)
    tcfg = TrainConfig.from_dict(ckpt["train_config"])
    classes = list(ckpt.get("classes") or test.classes)
    if len(classes) != model.config.num_classes or list(test.classes) != classes:
        raise ValueError(
            f"the test set's classes {list(test.classes)} do not match the checkpoint's {classes}"
        )
    check_fits_model(test, model.config, "test")
    loss, acc, pred = evaluate_model(
        model,
        test,
        device=dev,
        batch_size=tcfg.eval_batch_size,
        amp=resolve_amp("auto", dev),
        tta_flip=tcfg.tta_flip,
    )
    true = test.labels.cpu()
    labels = list(range(len(classes)))
    report = classification_report(
        true, pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    cm = confusion_matrix(true, pred, labels=labels)
    probs = mistake_probabilities(
        model, test.images, torch.nonzero(true != pred).flatten(), device=dev,
        batch_size=tcfg.eval_batch_size, tta_flip=tcfg.tta_flip,
    )  # fmt: skip
    figures = {
        "confusion": plot_confusion(cm, classes),
        "misclassified": plot_misclassified(
            test.images.cpu(), true, pred, classes, n=n_misclassified, probs=probs
        ),
    }
    history = run_history(checkpoint, ckpt)
    if history:
        figures["curves"] = plot_curves(history, best_epoch=ckpt.get("best_epoch"))
    present = [c for c in labels if (true == c).any()]
    shown = [int(torch.nonzero(true == c)[0]) for c in present[:10]]  # first image of each class
    heat = attention_map(model, normalize(test.images[shown].to(dev))).cpu()
    names = [classes[int(true[i])] for i in shown]
    figures["attention"] = plot_attention(test.images[shown].cpu(), heat, names)
    result = EvalReport(acc, loss, report, cm, classes, pred, figures)
    if save:
        out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
        pngs = {f"{name}.png": _png(fig) for name, fig in figures.items()}
        metrics = {
            "checkpoint": str(checkpoint),
            "epoch": ckpt["epoch"],
            "test_accuracy": acc,
            "test_loss": loss,
            "best_val_acc": ckpt.get("best_val_acc"),
            "num_parameters": model.num_parameters(),
            "classification_report": report,
            "confusion_matrix": cm.tolist(),
            "classes": classes,
            # the figures written with this file, which is written last: the set's commit point
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in pngs.items()},
        }
        text = json.dumps(metrics, indent=2).encode()
        writes = [(name, partial(_write_bytes, data=data)) for name, data in pngs.items()]
        with hold_folder(out, command="evaluate"):
            write_in_order(out, [*writes, ("metrics.json", partial(_write_bytes, data=text))])
        result.files = {name: out / f"{name}.png" for name in figures} | {
            "metrics": out / "metrics.json"
        }
    return result


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _write_bytes(f, *, data: bytes) -> None:
    f.write(data)
