"""Figures for a finished run. Each function returns a ``matplotlib.figure.Figure`` (no pyplot
global state, so they work headless and show inline in notebooks with ``display(fig)``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["plot_attention", "plot_confusion", "plot_curves", "plot_misclassified", "plural"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 epoch', '2 epochs', '0 images' (``words``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def cell_text(fraction: float) -> str:
    """A confusion cell as a percentage of its true class: '' for an empty cell (no '0.00'
    clutter), '<1' for a few, else a whole number ('87')."""
    if fraction <= 0:
        return ""
    return "<1" if fraction < 0.005 else f"{100 * fraction:.0f}"


def plot_confusion(cm: np.ndarray, classes: Sequence[str], *, normalize: bool = True) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), row-normalised by default: each
    cell is the percentage of its true class (empty cells left blank)."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(classes)
    side = min(3.0 + 0.5 * k, 14.0)  # 10 classes: 8 in; 100 classes: 14 in, not 61
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    bar = fig.colorbar(im, ax=ax, shrink=0.8)
    if normalize:
        bar.set_ticks([0, 0.25, 0.5, 0.75, 1], labels=["0%", "25%", "50%", "75%", "100%"])
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix" + (" (% of each true class)" if normalize else ""),
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
                    cell_text(v) if normalize else (f"{int(v)}" if v else ""),
                    ha="center",
                    va="center",
                    fontsize=8,
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


def misclassified_order(
    true: torch.Tensor, pred: torch.Tensor, probs: torch.Tensor | None = None
) -> torch.Tensor:
    """Indices of the misclassified images, the most confident mistakes first (by the
    probability given to the predicted class; index order without ``probs``)."""
    wrong = torch.nonzero(true != pred).flatten()
    if probs is None or len(wrong) == 0:
        return wrong
    confidence = probs[wrong, pred[wrong]].float()
    order = torch.sort(confidence, descending=True, stable=True).indices
    return wrong[order]


def plot_misclassified(
    images: torch.Tensor,
    true: torch.Tensor,
    pred: torch.Tensor,
    classes: Sequence[str],
    *,
    n: int = 25,
    probs: torch.Tensor | None = None,
) -> Figure:
    """Grid of up to ``n`` misclassified images (uint8 (N, C, H, W)), each titled with its
    predicted class and the probability given to it, and its true class. With ``probs``
    ((N, K) softmax) the most confident mistakes come first."""
    total = int((true != pred).sum())
    wrong = misclassified_order(true, pred, probs)[:n]
    cols = max(1, min(5, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(2.4 * cols, 2.7 * rows + 0.4), layout="constrained")
    order = ", most confident first" if probs is not None and total else ""
    fig.suptitle(
        f"misclassified: {total:,} of {plural(len(true), 'test image')}{order}", fontsize=12
    )
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong.tolist()):
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        p = f" {float(probs[i, pred[i]]):.0%}" if probs is not None else ""
        ax.set_title(
            f"predicted {classes[int(pred[i])]}{p}\ntrue {classes[int(true[i])]}", fontsize=10
        )
    return fig


ATTENTION_CAPTION = (
    "Under each image: the attention that each image patch gets in the last block, averaged over "
    "heads (from the [CLS] token, or with mean pooling from all tokens), laid over the image. One "
    "colour scale for all maps: 1 marks the patch attended to most in this figure."
)
ATTENTION_COLUMNS = 5  # image/overlay pairs per row: 10 classes fit 11 inches


def plot_attention(images: torch.Tensor, heat: torch.Tensor, labels: Sequence[str]) -> Figure:
    """Images (uint8 (N, C, H, W)), each above itself with its last-block attention map
    ((N, h, w), upsampled to the image) laid over it; all maps share one colour scale and one
    colour bar, and a caption says what they show. At most ATTENTION_COLUMNS images a row."""
    n = len(images)
    cols = max(1, min(ATTENTION_COLUMNS, n))
    pair_rows = max(1, -(-n // cols))
    fig = Figure(figsize=(2.2 * cols + 1.2, 4.4 * pair_rows + 0.9), layout="constrained")
    fig.suptitle("where the last block looks", fontsize=13)
    grid = np.atleast_2d(fig.subplots(2 * pair_rows, cols)).reshape(2 * pair_rows, cols)
    for ax in grid.ravel():
        ax.axis("off")
    peak = float(heat.float().max()) or 1.0  # one scale: every map over the common maximum
    im = None
    for i in range(n):
        r, c = divmod(i, cols)
        top, bottom = grid[2 * r, c], grid[2 * r + 1, c]
        picture = images[i].permute(1, 2, 0).numpy()
        height, width = picture.shape[:2]
        top.imshow(picture)
        top.set_title(labels[i], fontsize=11)
        bottom.imshow(picture)
        im = bottom.imshow(
            (heat[i].float() / peak).numpy(), cmap="magma", vmin=0.0, vmax=1.0, alpha=0.6,
            extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="bilinear",
        )  # fmt: skip
    for ax in grid.ravel():
        if not ax.has_data():  # the empty places of a last, shorter row
            fig.delaxes(ax)
    if im is not None:
        overlays = [ax for ax in grid[1::2, :].ravel() if ax.has_data()]
        fig.colorbar(im, ax=overlays, shrink=0.9, label="relative attention")
    fig.supxlabel(ATTENTION_CAPTION, fontsize=9, wrap=True)
    return fig
