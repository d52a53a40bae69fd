"""Figures for a finished run. Each function returns a ``matplotlib.figure.Figure`` (no pyplot
global state, so they work headless and show inline in notebooks with ``display(fig)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_confusion", "plot_curves", "plot_misclassified"]


def plot_confusion(cm: np.ndarray, classes: Sequence[str], *, normalize: bool = True) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(classes)
    side = min(3.0 + 0.5 * k, 14.0)  # 10 classes: 8 in; 100 classes: 14 in, not 61
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix" + (" (fraction of each true class)" if normalize else ""),
    )
    fontsize = 9 if k <= 20 else max(3, int(400 / k))  # 100 classes: 4 pt
    ax.set_xticklabels(classes, rotation=90 if k > 20 else 45, ha="right", fontsize=fontsize)
    ax.set_yticklabels(classes, fontsize=fontsize)
    if k <= 20:  # values in the cells only while they stay readable
        for i in range(k):
            for j in range(k):
                v = shown[i, j]
                ax.text(
                    j,
                    i,
                    f"{v:.2f}" if normalize else f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.5 * shown.max() else "black",
                )
    return fig


def plot_curves(history: Sequence[dict[str, Any]], *, best_epoch: int | None = None) -> Figure:
    """Loss, accuracy and learning rate per epoch from a whole run's history (metrics.jsonl rows),
    with point markers (a 1-epoch run shows its point) and a dashed line at ``best_epoch``."""
    ep = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    style = {"marker": "o", "markersize": 3}
    ax_loss.plot(ep, [r["train_loss"] for r in history], label="train (mixed targets)", **style)
    ax_loss.plot(ep, [r["val_loss"] for r in history], label="validation", **style)
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.plot(ep, [r["train_acc"] for r in history], label="train (vs. dominant label)", **style)
    ax_acc.plot(ep, [r["val_acc"] for r in history], label="validation", **style)
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    ax_lr.plot(ep, [r["lr"] for r in history], **style)
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in (ax_loss, ax_acc, ax_lr):
        if best_epoch is not None and best_epoch > 0:
            ax.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label="best.pt")
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_acc.legend()
    return fig


def plot_misclassified(
    images: torch.Tensor,
    true: torch.Tensor,
    pred: torch.Tensor,
    classes: Sequence[str],
    *,
    n: int = 25,
) -> Figure:
    """Grid of up to ``n`` misclassified images (uint8 (N, C, H, W)) titled 'true → predicted'."""
    wrong = torch.nonzero(true != pred).flatten()[:n]
    cols = max(1, min(5, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows), layout="constrained")
    fig.suptitle(f"misclassified: {int((true != pred).sum())} of {len(true)}")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong.tolist()):
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.set_title(f"{classes[int(true[i])]} → {classes[int(pred[i])]}", fontsize=8)
    return fig


ATTENTION_CAPTION = (
    "Bottom row: the attention that each image patch gets in the last block, averaged over heads "
    "(from the [CLS] token, or with mean pooling from all tokens); each map is scaled to its own "
    "maximum, so 1 marks the patch attended to most."
)


def plot_attention(images: torch.Tensor, heat: torch.Tensor, labels: Sequence[str]) -> Figure:
    """Images (uint8 (N, C, H, W)) above their last-block attention heat maps ((N, h, w)), with a
    colour bar and a caption that says what the maps show."""
    n = len(images)
    fig = Figure(figsize=(max(6.0, 2.0 * n + 1.0), 4.8), layout="constrained")
    fig.suptitle("where the last block looks")
    axes = np.atleast_2d(fig.subplots(2, n)).reshape(2, n)
    im = None
    for i in range(n):
        axes[0, i].imshow(images[i].permute(1, 2, 0).numpy())
        axes[0, i].set_title(labels[i], fontsize=8)
        h = heat[i].float()
        im = axes[1, i].imshow((h / h.max().clamp_min(1e-12)).numpy(), cmap="magma", vmin=0, vmax=1)
        for ax in axes[:, i]:
            ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes[1, :].tolist(), shrink=0.9, label="relative attention")
    fig.supxlabel(ATTENTION_CAPTION, fontsize=8, wrap=True)
    return fig
