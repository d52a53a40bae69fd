"""The result of segmenting one image with one prompt."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["KINDS", "Segmentation"]

KINDS = ("text", "box", "points")  # what found an object: a phrase, a user box, user points


def _optional_floats(name: str, values: object, n: int) -> list[float | None]:
    if values is None:
        return [None] * n
    out = [None if v is None else float(v) for v in values]  # type: ignore[union-attr]
    if len(out) != n:
        raise ValueError(f"{name} must have one value per object ({n}), got {len(out)}")
    return out


@dataclass
class Segmentation:
    """Objects found in one image for one prompt, sorted by descending score.

    N is the number of objects; N = 0 is a valid result. All coordinates refer to the
    image as displayed (EXIF orientation applied) at its original size.

    boxes: (N, 4) float32, XYXY in pixels (x0, y0, x1, y1), inside [0, W] × [0, H].
    scores: (N,) float32 in [0, 1], the confidence for the label: GroundingDINO's score,
        or SAM 3's (its query score times its presence score); 1.0 for a user's box/points.
    labels: N names: a phrase of `phrases` for objects found by text, else "box 1",
        "box 2", ..., "point" or the name the user gave.
    masks: (N, H, W) bool, one mask per object at the original image size.
    mask_scores: (N,) float32, SAM 2's predicted IoU of each mask (SAM 3 predicts no mask
        quality: there it repeats `scores`).
    image_size: (H, W) in pixels.
    prompt: the normalised prompt the detector read, e.g. "skateboard. cap.".
    phrases: the prompt's phrases, e.g. ("skateboard", "cap").
    image: the RGB image that was segmented (kept for drawing and saving; not compared).
    source: where the image came from (a path or a description), for file names.
    kinds: N of "text" (found by a phrase), "box" (a user's box), "points" (user points).
    text_match: N values: for text objects of the GroundingDINO + SAM 2 pipeline with a
        SAM 3 checker loaded, the best IoU of the object's mask with SAM 3's masks for its
        phrase (0 when SAM 3 finds none); None otherwise. Experimental.
    presence_scores: N values: SAM 3's presence score of the object's phrase (backend
        "sam3"); None otherwise.
    phrase_presence: SAM 3's presence score per phrase, {phrase: p in [0, 1]}, also when
        nothing was found (backend "sam3"; None otherwise).
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
    kinds: list[str] | None = None
    text_match: list[float | None] | None = None
    presence_scores: list[float | None] | None = None
    phrase_presence: dict[str, float] | None = None

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
        self.kinds = list(self.kinds) if self.kinds is not None else ["text"] * n
        self.text_match = _optional_floats("text_match", self.text_match, n)
        self.presence_scores = _optional_floats("presence_scores", self.presence_scores, n)
        if len(self.kinds) != n or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"kinds must be {n} of {KINDS}, got {self.kinds}")
        text_labels = [lab for lab, k in zip(self.labels, self.kinds) if k == "text"]
        if self.phrases and any(label not in self.phrases for label in text_labels):
            raise ValueError(f"labels {text_labels} must all be among phrases {self.phrases}")

    def subset(self, keep: np.ndarray | list[int]) -> Segmentation:
        """The objects at indices `keep` (in that order), everything else unchanged."""
        idx = [int(i) for i in keep]
        return Segmentation(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            labels=[self.labels[i] for i in idx],
            masks=self.masks[idx],
            mask_scores=self.mask_scores[idx],
            image_size=self.image_size,
            prompt=self.prompt,
            phrases=self.phrases,
            image=self.image,
            source=self.source,
            kinds=[self.kinds[i] for i in idx],
            text_match=[self.text_match[i] for i in idx],
            presence_scores=[self.presence_scores[i] for i in idx],
            phrase_presence=self.phrase_presence,
        )

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
