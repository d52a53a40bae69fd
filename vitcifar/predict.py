"""Classify your own images with a trained checkpoint.

preds = predict("runs/vit-fast/best.pt", ["cat.jpg", "photos/"], top_k=3)
print(preds.table()); preds.labels, preds.probabilities   # (N,) class names, (N, K) float32
preds.save("preds.csv")                                    # or .json

Every image goes through the package's one image rule (``vitcifar.images.decode_image``, which
training's ImageFolder loading and evaluation use too): upright by its EXIF orientation, 8-bit RGB
(16-bit scaled, floats on [0, 1], alpha dropped), resized to the model's ``image_size`` with PIL's
bicubic filter (only when its size differs), then ``normalize`` with the CIFAR-10 mean/std.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitcifar.checkpoint import check_not_a_link_loop, hold_folder, write_in_order
from vitcifar.data import ImageSet, normalize
from vitcifar.evaluate import model_and_classes
from vitcifar.images import IMAGE_EXTENSIONS, DataError, ImageInput, decode_image, describe
from vitcifar.machine import resolve_device
from vitcifar.model import ViT

__all__ = ["ImageInput", "Predictions", "find_images", "predict", "prepare_image"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading images


def prepare_image(image: ImageInput, *, image_size: int, name: str | None = None) -> torch.Tensor:
    """One image -> uint8 (3, image_size, image_size), prepared exactly as the training data.

    image: a path or the file's bytes; a PIL image of any mode (RGB, RGBA, L, P, CMYK, I;16, ...);
        a numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), as ``np.asarray(pil_image)``
        gives; or a torch tensor (C, H, W) with C in 1, 3, 4, as torchvision gives. Arrays and
        tensors: uint8 (0-255), uint16 (0-65535), float on [0, 1], or other integers in [0, 255].
        The rule is ``vitcifar.images``' (training's too).
    Raises ``DataError`` with a one-line message naming the image.
    """
    pixels = decode_image(image, image_size, name=name or describe(image, 0))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively, by extension, sorted).

    Raises ``DataError`` for a path that does not exist. A file given by name is kept whatever
    its extension, so that an unreadable one is reported rather than silently ignored. A file
    reached twice (named, and inside a folder) is listed once, where first reached.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            inside = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not inside:
                log.warning("%s: no image files (%s) in this folder", p, " ".join(IMAGE_EXTENSIONS))
            found += inside
        elif p.exists():
            found.append(p)
        else:
            check_not_a_link_loop(p, "image", DataError)
            raise DataError(f"{raw}: no such file or folder")
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def _expand(images: Any) -> list[tuple[str, Any]]:
    """(name, image) pairs from one image, a folder, a batch array/tensor, an ``ImageSet`` (its
    images), or a sequence of them."""
    if isinstance(images, ImageSet):
        images = images.images
    if isinstance(images, (str, os.PathLike)):
        return [(str(p), p) for p in find_images([images])]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:  # a batch
        if isinstance(images, np.ndarray):
            return [(f"<ndarray {i}>", a) for i, a in enumerate(images)]
        return [(f"<Tensor {i}>", t) for i, t in enumerate(images)]
    if isinstance(images, (bytes, bytearray, Image.Image, np.ndarray, torch.Tensor)):
        return [(describe(images, 0), images)]
    out: list[tuple[str, Any]] = []
    seen: set[Path] = set()  # a file named and also inside a named folder is predicted once
    for i, item in enumerate(images):
        if not isinstance(item, (str, os.PathLike)):
            out.append((describe(item, i), item))
            continue
        paths = find_images([item]) if Path(item).is_dir() else [Path(item)]
        for p in paths:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append((str(item) if p == Path(item) else str(p), p))
    return out


# ----------------------------------------------------------------------------- the result


@dataclass
class Predictions:
    """Class probabilities for N images.

    ``probabilities`` is (N, K) float32, softmax over the model's K classes, rows summing to 1;
    ``sources[i]`` names image i (its path, or ``<Tensor i>`` etc. for in-memory images).
    ``skipped`` lists ``(source, reason)`` for images that could not be read (``skip_errors``).
    """

    sources: list[str]
    classes: list[str]
    probabilities: np.ndarray  # (N, K) float32
    top_k: int
    tta: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def top_indices(self) -> np.ndarray:
        """(N, top_k) int64 class indices, most probable first (ties: lower index first)."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")
        return order[:, : self.top_k].astype(np.int64)

    @property
    def indices(self) -> np.ndarray:
        """(N,) int64: the most probable class of each image."""
        return self.top_indices[:, 0] if len(self) else np.empty(0, dtype=np.int64)

    @property
    def labels(self) -> list[str]:
        """The most probable class name of each image."""
        return [self.classes[i] for i in self.indices]

    def top(self, i: int) -> list[tuple[str, float]]:
        """[(class name, probability)] of image ``i``, most probable first, ``top_k`` long."""
        return [(self.classes[c], float(self.probabilities[i, c])) for c in self.top_indices[i]]

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per image: source, then class_1, prob_1, ... class_k, prob_k."""
        rows = []
        for i, src in enumerate(self.sources):
            row: dict[str, Any] = {"source": src}
            for rank, (name, p) in enumerate(self.top(i), start=1):
                row[f"class_{rank}"], row[f"prob_{rank}"] = name, round(p, 6)
            rows.append(row)
        return rows

    def table(self) -> str:
        """A plain-text table: one line per image with its top-k classes and probabilities."""
        if not len(self):
            return "(no images)"
        width = min(max(len("image"), *(len(s) for s in self.sources)), 60)
        cw = max(len(c) for c in self.classes)
        header = f"{'image':<{width}}  " + "  ".join(
            f"{f'top-{r}':<{cw}} {'prob':>6}" for r in range(1, self.top_k + 1)
        )
        lines = [header]
        for i, src in enumerate(self.sources):
            shown = src if len(src) <= width else "..." + src[-(width - 3) :]
            cells = "  ".join(f"{name:<{cw}} {p:>6.1%}" for name, p in self.top(i))
            lines.append(f"{shown:<{width}}  {cells}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.csv`` (one row per image, top-k columns) or ``.json`` (top-k, every class's
        probability and the skipped images)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"cannot save predictions as {path}: use a .csv or .json file name")
        if suffix == ".csv":
            fields = ["source"] + [
                f"{k}_{r}" for r in range(1, self.top_k + 1) for k in ("class", "prob")
            ]
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.to_records())
            data = text.getvalue()
        else:
            doc = {
                "classes": self.classes,
                "top_k": self.top_k,
                "tta": self.tta,
                "predictions": [
                    {
                        "source": src,
                        "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top(i)],
                        "probabilities": [round(float(p), 6) for p in self.probabilities[i]],
                    }
                    for i, src in enumerate(self.sources)
                ],
                "skipped": [{"source": s, "error": e} for s, e in self.skipped],
            }
            data = json.dumps(doc, indent=2)
        with hold_folder(path.parent, command="predict"):
            write_in_order(path.parent, [(path.name, lambda f: f.write(data.encode()))])
        return path


# ----------------------------------------------------------------------------- predict


def _batches(
    items: list[tuple[str, Any]], *, image_size: int, batch_size: int, skip_errors: bool
) -> Iterator[tuple[list[str], torch.Tensor, list[tuple[str, str]]]]:
    """Decode ``items`` in chunks: (names, uint8 (B, 3, S, S), skipped) per chunk."""
    for start in range(0, len(items), batch_size):
        names, tensors, skipped = [], [], []
        for name, image in items[start : start + batch_size]:
            try:
                tensors.append(prepare_image(image, image_size=image_size, name=name))
                names.append(name)
            except DataError as err:
                if not skip_errors:
                    raise
                skipped.append((name, str(err)))
        empty = torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
        yield names, (torch.stack(tensors) if tensors else empty), skipped


def predict(
    model_or_checkpoint: ViT | str | os.PathLike,
    images: ImageInput | Sequence[ImageInput],
    *,
    top_k: int = 3,
    tta: bool | None = None,
    classes: Sequence[str] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    skip_errors: bool = False,
) -> Predictions:
    """Classify ``images`` with a trained model.

    model_or_checkpoint: a ``best.pt``/``last.pt`` path (its EMA weights when it has them, as
        ``load_model``), or a ``ViT``.
    images: one image or a list; each a path, a folder (its images, recursively), bytes, a PIL
        image, a numpy array (H, W[, C]) or a torch tensor (C, H, W); or a batch as one
        (N, H, W, C) array or (N, C, H, W) tensor, or an ``ImageSet`` (e.g. ``splits.test``).
        Any size and mode: see ``prepare_image``.
    top_k: how many classes ``top``/``table``/``save`` report (at most the number of classes).
    tta: average the logits of each image and its mirror image. None: as the checkpoint's
        evaluation (``TrainConfig.tta_flip``; off for a bare ``ViT``).
    classes: class names; default the checkpoint's, or "0", "1", ... for a bare ``ViT``.
    device: where a checkpoint's model runs ("auto", "cpu", "cuda"); a ``ViT`` stays where it is.
    skip_errors: record unreadable images in ``Predictions.skipped`` instead of raising.
    Raises ``DataError`` (one line, naming the image) for an unreadable image or a missing path.
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, names, ckpt = model_and_classes(
        model_or_checkpoint, classes=classes, device=resolve_device(device)
    )
    stored_tta = bool(ckpt["train_config"].get("tta_flip", False)) if ckpt is not None else False
    k = len(names)
    use_tta = stored_tta if tta is None else bool(tta)

    items = _expand(images)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    sources, probs, skipped = [], [], []
    try:
        chunks = _batches(
            items,
            image_size=model.config.image_size,
            batch_size=batch_size,
            skip_errors=skip_errors,
        )
        for chunk_names, x, chunk_skipped in chunks:
            skipped += chunk_skipped
            for _, reason in chunk_skipped:
                log.debug("skipped %s", reason)
            if not len(x):
                continue
            with torch.inference_mode():
                x = normalize(x.to(param.device)).to(param.dtype)
                logits = model(x).float()
                if use_tta:
                    logits = (logits + model(x.flip(-1)).float()) / 2
            sources += chunk_names
            probs.append(logits.softmax(dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    probabilities = np.concatenate(probs) if probs else np.empty((0, k), dtype=np.float32)
    return Predictions(sources, names, probabilities, min(int(top_k), k), use_tta, skipped)
