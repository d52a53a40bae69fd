"""The results: one image with one prompt (Segmentation), one image of a batch (BatchItem),
and a clip tracked through (VideoSegmentation, its VideoObject and FrameMask)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from textseg.rle import decode_rle

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "KINDS",
    "BatchItem",
    "FrameMask",
    "LabelledImage",
    "LabelledObject",
    "LabelledSet",
    "Segmentation",
    "VideoObject",
    "VideoSegmentation",
]

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

    @classmethod
    def concat(cls, parts: list[Segmentation]) -> Segmentation:
        """One Segmentation holding the objects of `parts` in order (same image and prompt)."""
        first = parts[0]
        presence = next((p.phrase_presence for p in parts if p.phrase_presence is not None), None)
        return cls(
            boxes=np.concatenate([p.boxes for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            labels=[label for p in parts for label in p.labels],
            masks=np.concatenate([p.masks for p in parts]),
            mask_scores=np.concatenate([p.mask_scores for p in parts]),
            image_size=first.image_size,
            prompt=first.prompt,
            phrases=first.phrases,
            image=first.image,
            source=first.source,
            kinds=[k for p in parts for k in p.kinds],
            text_match=[v for p in parts for v in p.text_match],
            presence_scores=[v for p in parts for v in p.presence_scores],
            phrase_presence=presence,
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


@dataclass
class BatchItem:
    """One image of a `segment_many` run: a result, or the reason it was skipped.

    source: the image's path or description. segmentation: None when it could not be
    segmented. error: one-line reason when skipped (not segmented, or its files could not be
    written), else None. out_dir: where its files went, if saved. note: one line when the
    files went to another folder than `out_dir/<image name>` (see textseg.export.output_dir).
    skipped: True when out_dir already held this image's complete result, made with the same
    settings (a re-run); segmentation is then read back from it (no image kept).
    """

    source: str
    segmentation: Segmentation | None = None
    error: str | None = None
    out_dir: Path | None = None
    note: str | None = None
    skipped: bool = False


# --------------------------------------------------------------------------- video


@dataclass
class VideoObject:
    """One tracked object.

    id: stable over the whole clip, 0, 1, 2, ... in order of first appearance; never reused.
    label: the prompt phrase the finder gave it when it was first found.
    score: the finder's score for it on that frame, in [0, 1].
    first_frame: the key frame where it was found. last_frame: the last frame with a mask.
    """

    id: int
    label: str
    score: float
    first_frame: int
    last_frame: int


@dataclass
class FrameMask:
    """One object on one frame.

    rle: its mask as uncompressed COCO RLE at the frame's size (textseg.decode_rle).
    score: mean SAM 2 mask probability (sigmoid of the logits) over the mask's pixels.
    box: (4,) float32 XYXY pixels, the box around the mask.
    """

    rle: dict
    score: float
    box: np.ndarray


@dataclass
class VideoSegmentation:
    """Objects found and tracked through a clip for one prompt.

    objects: every object, by id (objects[i].id == i).
    frames: per frame, {object id: FrameMask} for the objects visible on it (absent ids:
        no mask on that frame). Masks are stored as RLE, so a long clip stays small.
    image_size: (H, W) of the frames in pixels. fps: the clip's frame rate.
    prompt / phrases: as in Segmentation. every: the detection stride.
    detection_frames: the key frames where the finder ran.
    source: where the clip came from.
    """

    objects: list[VideoObject]
    frames: list[dict[int, FrameMask]]
    image_size: tuple[int, int]
    fps: float
    prompt: str
    phrases: tuple[str, ...] = ()
    every: int = 1
    detection_frames: tuple[int, ...] = ()
    source: str | None = None

    def __post_init__(self) -> None:
        self.phrases = tuple(self.phrases)
        self.detection_frames = tuple(int(f) for f in self.detection_frames)
        for i, obj in enumerate(self.objects):
            if obj.id != i:
                raise ValueError(f"objects must be listed by id: position {i} holds id {obj.id}")
        known = len(self.objects)
        for f, masks in enumerate(self.frames):
            bad = [i for i in masks if not 0 <= i < known]
            if bad:
                raise ValueError(f"frame {f} names unknown object ids {bad}")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def ids(self, frame: int) -> list[int]:
        """Ids of the objects with a mask on `frame`, ascending."""
        return sorted(self.frames[frame])

    def mask(self, frame: int, object_id: int) -> np.ndarray | None:
        """(H, W) bool mask of one object on one frame, or None where it has none."""
        found = self.frames[frame].get(object_id)
        return None if found is None else decode_rle(found.rle)

    def masks(self, object_id: int) -> np.ndarray:
        """(T, H, W) bool: one object's mask on every frame (all False where absent)."""
        h, w = self.image_size
        out = np.zeros((self.num_frames, h, w), dtype=bool)
        for f, masks in enumerate(self.frames):
            if object_id in masks:
                out[f] = decode_rle(masks[object_id].rle)
        return out

    def frame(self, index: int) -> Segmentation:
        """Frame `index` as an image Segmentation, objects in id order (see `ids`).

        scores: each object's finder score; mask_scores: this frame's mask score."""
        ids = self.ids(index)
        h, w = self.image_size
        found = [self.frames[index][i] for i in ids]
        return Segmentation(
            boxes=np.array([m.box for m in found], dtype=np.float32).reshape(-1, 4),
            scores=[self.objects[i].score for i in ids],
            labels=[self.objects[i].label for i in ids],
            masks=np.array([decode_rle(m.rle) for m in found], dtype=bool).reshape(-1, h, w),
            mask_scores=[m.score for m in found],
            image_size=(h, w),
            prompt=self.prompt,
            phrases=self.phrases,
            source=self.source,
        )

    def summary(self) -> str:
        """One line, e.g. "2 objects (1 ball, 1 box) over 8 frames"."""
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.label] = counts.get(obj.label, 0) + 1
        frames = f"{self.num_frames} frame{'s' * (self.num_frames != 1)}"
        if not self.objects:
            return f"no objects over {frames}"
        parts = ", ".join(f"{n} {label}" for label, n in counts.items())
        noun = "object" if len(self.objects) == 1 else "objects"
        return f"{len(self.objects)} {noun} ({parts}) over {frames}"


# --------------------------------------------------------------------------- data sets


@dataclass
class LabelledObject:
    """One object of a labelled data set (textseg.label_dataset).

    category_id: 1, 2, ... into the data set's categories. label: the prompt phrase that
    found it. score: the finder's score in [0, 1]. box_xyxy: [x0, y0, x1, y1] pixels, the
    finder's box (as in segmentation.json). area: the mask's pixel count (> 0: empty masks
    are left out of data sets). rle: the mask as compressed COCO RLE, {"size": [H, W],
    "counts": "..."} (textseg.export.rle_to_mask reads it back).
    """

    category_id: int
    label: str
    score: float
    box_xyxy: list[float]
    area: int
    rle: dict


@dataclass
class LabelledImage:
    """One image of a labelled data set: id 1, 2, ... in the data set's file order;
    file: its path relative to the image folder ("/"-separated); path: where it is;
    height, width: pixels as displayed (EXIF orientation applied); objects, best first."""

    id: int
    file: str
    path: Path
    height: int
    width: int
    objects: list[LabelledObject]


@dataclass
class LabelledSet:
    """What a data-set format writes (textseg.export.DATASET_FORMATS): the category names
    (category_id k is categories[k - 1]) and the images, read again on each call of
    `images()` so that a large data set is never held in memory whole."""

    categories: list[str]
    images: Callable[[], Iterator[LabelledImage]]
    info: dict = field(default_factory=dict)
