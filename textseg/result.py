"""The result of segmenting one image with one prompt."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Segmentation"]


@dataclass
class Segmentation:
    """Objects found in one image for one prompt, sorted by descending score.

    N is the number of objects; N = 0 is a valid result. All coordinates refer to the
    image as displayed (EXIF orientation applied) at its original size.

    boxes: (N, 4) float32, XYXY in pixels (x0, y0, x1, y1), inside [0, W] × [0, H].
    scores: (N,) float32 in [0, 1], the detector's confidence for the label.
    labels: N phrases, each one of `phrases`.
    masks: (N, H, W) bool, one mask per object at the original image size.
    mask_scores: (N,) float32, SAM 2's predicted IoU of each mask.
    image_size: (H, W) in pixels.
    prompt: the normalised prompt the detector read, e.g. "skateboard. cap.".
    phrases: the prompt's phrases, e.g. ("skateboard", "cap").
    image: the RGB image that was segmented (kept for drawing and saving; not compared).
    source: where the image came from (a path or a description), for file names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]
    masks: np.ndarray
    mask_scores: np.ndarray
    image_size: tuple[int, int]
    prompt: str
    phrases: tuple[str, ...] = ()
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    source: str | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        h, w = self.image_size
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.mask_scores = np.asarray(self.mask_scores, dtype=np.float32).reshape(n)
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.shape != (n, h, w):
            raise ValueError(f"masks must have shape {(n, h, w)} (N, H, W), got {self.masks.shape}")
        self.labels = list(self.labels)
        self.phrases = tuple(self.phrases)
        if self.phrases and any(label not in self.phrases for label in self.labels):
            raise ValueError(f"labels {self.labels} must all be among phrases {self.phrases}")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(
        cls, *, image_size: tuple[int, int], prompt: str, phrases: tuple[str, ...] = (), **kwargs
    ) -> Segmentation:
        """A result with no objects for an image of `image_size` (H, W)."""
        h, w = image_size
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            labels=[],
            masks=np.zeros((0, h, w), bool),
            mask_scores=np.zeros(0, np.float32),
            image_size=(h, w),
            prompt=prompt,
            phrases=phrases,
            **kwargs,
        )

    def counts(self) -> dict[str, int]:
        """How many objects of each label, in order of first appearance."""
        return dict(Counter(self.labels))

    def summary(self) -> str:
        """One line, e.g. "3 objects: 2 cat, 1 remote" or "no objects"."""
        if not self.labels:
            return "no objects"
        parts = ", ".join(f"{n} {label}" for label, n in self.counts().items())
        noun = "object" if len(self) == 1 else "objects"
        return f"{len(self)} {noun}: {parts}"
