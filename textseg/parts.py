"""The contracts: what the façade, the video tracker and the backends need from each part,
the options they share, their checks, and the one finder step used by images and video.

    Detector      text -> boxes (GroundingDinoDetector)
    TextMasker    text -> masks, boxes, presence (Sam3TextMasker)
    Segmenter     boxes / points -> masks (Sam2Segmenter)
    MaskPropagator  masks through a clip (textseg.sam2_video.Sam2VideoPropagator)
    find_objects(finder, image, prompt, options, size=...)  a Detector or a TextMasker,
        thresholds, duplicate removal and max_objects: the same for an image and a key frame

This module sits on the bottom floor: it imports nothing of textseg but boxes and errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from textseg.boxes import clip_boxes, remove_duplicates

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

    from textseg.prompt import Prompt

__all__ = [
    "Detections",
    "Detector",
    "FoundObjects",
    "MaskPropagator",
    "Parts",
    "SegmentOptions",
    "Segmenter",
    "TextMasker",
    "TextMasks",
    "VideoFrames",
    "check_count",
    "check_unit",
    "find_objects",
]


# --------------------------------------------------------------------------- checks


def check_unit(name: str, value: float) -> float:
    """`value` as a float in [0, 1]; ValueError naming `name` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from err
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return v


def check_count(name: str, value: Any, *, allow_none: bool) -> int | None:
    """`value` as a whole number >= 1 (or None when allowed); ValueError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        what = "None or a whole number >= 1" if allow_none else "a whole number >= 1"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SegmentOptions:
    """The knobs of `TextSegmenter.segment`, checked once (see its docstring)."""

    box_threshold: float = 0.35  # detector score an object needs, in [0, 1]
    text_threshold: float = 0.25  # score the token naming its phrase needs, in [0, 1]
    nms_iou: float = 0.5  # IoU above which two boxes are one object
    max_objects: int | None = None  # keep the best N objects found by text; None keeps all
    multimask: bool = False  # SAM 2 proposes 3 masks per box, keep the best
    detector_size: int | None = None  # GroundingDINO's input, shortest side in pixels; None: 800
    min_text_match: float | None = None  # drop text objects below this text_match; experimental
    # {phrase: threshold}: the box_threshold of those phrases' objects; None: box_threshold
    box_thresholds: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold", "nms_iou"):
            object.__setattr__(self, name, check_unit(name, getattr(self, name)))
        if self.box_thresholds is not None:
            if not isinstance(self.box_thresholds, Mapping):
                raise ValueError(
                    "box_thresholds must be a {phrase: threshold} dict, "
                    f"got {type(self.box_thresholds).__name__}"
                )
            checked = {
                str(k): check_unit(f"box_thresholds[{k!r}]", v)
                for k, v in self.box_thresholds.items()
            }
            object.__setattr__(self, "box_thresholds", checked or None)
        m = self.max_objects
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0):
            raise ValueError(f"max_objects must be None or a whole number >= 0, got {m!r}")
        d = self.detector_size
        if d is not None and (
            isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 32
        ):
            raise ValueError(f"detector_size must be None or a whole number >= 32, got {d!r}")
        if self.min_text_match is not None:
            value = check_unit("min_text_match", self.min_text_match)
            object.__setattr__(self, "min_text_match", value)


# --------------------------------------------------------------------------- what parts return


@dataclass
class Detections:
    """Detector output for one image, before duplicate removal.

    boxes: (N, 4) float32, XYXY pixels of the image passed to `detect`.
    scores: (N,) float32, the best token probability of the detection's phrase.
    phrase_ids: (N,) int64 index into `Prompt.phrases`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    phrase_ids: np.ndarray


@dataclass
class TextMasks:
    """SAM 3's instances for one image and one prompt, before duplicate removal.

    boxes: (N, 4) float32, XYXY pixels of `output_size` (default: the image's size).
    scores: (N,) float32 in [0, 1]: query score × presence score of its phrase.
    phrase_ids: (N,) int64 index into `Prompt.phrases`.
    masks: (N, H, W) bool at `output_size`.
    presence: (P,) float32 in [0, 1], how sure SAM 3 is that each phrase is in the image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    phrase_ids: np.ndarray
    masks: np.ndarray
    presence: np.ndarray


@dataclass
class VideoFrames:
    """A decoded clip, held compactly in CPU memory (textseg.video.read_video makes it).

    model_input: per frame, SAM 2's (S, S, 3) uint8 input (the frame resized to S x S).
    key_images: the key frames (index -> RGB PIL image of at most max_side pixels), what
        the finder sees. size: (H, W) of the original frames. fps, name: of the clip.
    """

    model_input: list[np.ndarray]
    key_images: dict[int, Image.Image]
    size: tuple[int, int]
    fps: float
    name: str

    def __len__(self) -> int:
        return len(self.model_input)


# --------------------------------------------------------------------------- the Protocols


@runtime_checkable
class Detector(Protocol):
    """What TextSegmenter needs from a detector (see GroundingDinoDetector)."""

    def check_prompt(self, prompt: Prompt) -> None: ...

    def detect(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        box_threshold: float,
        text_threshold: float,
        size: int | None = None,
    ) -> Detections: ...


class Segmenter(Protocol):
    """What TextSegmenter needs from a box- and point-prompted segmenter (see Sam2Segmenter):
    boxes (N, 4) XYXY and/or points (N, K, 2) (x, y) with labels (N, K) 1/0, in pixels of
    the image given to set_image; one mask per object."""

    def set_image(self, image: np.ndarray) -> bool: ...

    def predict(
        self,
        boxes: np.ndarray | None = None,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        output_size: tuple[int, int] | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class TextMasker(Protocol):
    """What TextSegmenter needs from a text-prompted instance segmenter (see Sam3TextMasker):
    phrases in; every instance's mask, box, score, and a presence score per phrase out."""

    def check_prompt(self, prompt: Prompt) -> None: ...

    def segment_text(
        self,
        image: Image.Image,
        prompt: Prompt,
        *,
        threshold: float,
        output_size: tuple[int, int] | None = None,
    ) -> TextMasks: ...


class MaskPropagator(Protocol):
    """What track_objects needs from a video segmenter (see Sam2VideoPropagator)."""

    def seed(
        self, frame: int, *, boxes: dict[int, np.ndarray], masks: dict[int, np.ndarray]
    ) -> None: ...

    def propagate(self, start: int, last: int) -> Iterator[tuple[int, dict[int, np.ndarray]]]: ...


# --------------------------------------------------------------------------- the finder step


@dataclass
class FoundObjects:
    """The objects a finder named on one image, after thresholds, duplicate removal and
    `max_objects`, best first.

    boxes: (K, 4) float32 XYXY pixels of `size` (the original image). scores: (K,) float32.
    phrase_ids: (K,) int64 into the prompt's phrases; labels: those K phrases.
    masks: (K, H, W) bool at `size` when the finder paints (a TextMasker), else None.
    presence: (P,) float32 per phrase (a TextMasker), else None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    phrase_ids: np.ndarray
    labels: list[str]
    masks: np.ndarray | None = None
    presence: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def find_objects(
    finder: Detector | TextMasker,
    image: Image.Image,
    prompt: Prompt,
    options: SegmentOptions,
    *,
    size: tuple[int, int],
) -> FoundObjects:
    """Run a Detector or a TextMasker on `image` (a working copy, possibly downscaled, of
    an original of `size` (H, W)) and keep its objects the way images and key frames both do:
    boxes in original pixels, clipped; duplicates (IoU > nms_iou) removed; the best
    `max_objects` kept. A TextMasker's threshold is `box_threshold`.

    With `box_thresholds` ({phrase: threshold}), the finder runs at the lowest threshold of
    all and each object then needs its own phrase's (box_threshold for phrases not named),
    before duplicates are removed: as if each phrase had been asked with its own."""
    height, width = size
    per_phrase = options.box_thresholds or {}
    unknown = [k for k in per_phrase if k not in prompt.phrases]
    if unknown:
        raise ValueError(
            f"box_thresholds names {', '.join(map(repr, unknown))}, not a phrase of the prompt "
            f"({', '.join(prompt.phrases)})"
        )
    threshold = min([options.box_threshold, *per_phrase.values()])
    if isinstance(finder, TextMasker):
        found = finder.segment_text(image, prompt, threshold=threshold, output_size=size)
        boxes, scores, ids = found.boxes, found.scores, found.phrase_ids
        masks, presence = found.masks, np.asarray(found.presence, np.float32)
    elif isinstance(finder, Detector):
        size_kw = {} if options.detector_size is None else {"size": options.detector_size}
        det = finder.detect(
            image,
            prompt,
            box_threshold=threshold,
            text_threshold=options.text_threshold,
            **size_kw,  # only when set: detectors without a size option keep working
        )
        scale = np.array([width / image.width, height / image.height] * 2, dtype=np.float32)
        boxes, scores, ids = np.asarray(det.boxes) * scale, det.scores, det.phrase_ids
        masks = presence = None
    else:
        raise TypeError(
            f"the finder must be a Detector (detect) or a TextMasker (segment_text), "
            f"got {type(finder).__name__}"
        )
    boxes = clip_boxes(boxes, height=height, width=width)
    scores, ids = np.asarray(scores, np.float32), np.asarray(ids, np.int64)
    if per_phrase:
        needed = np.array(
            [per_phrase.get(p, options.box_threshold) for p in prompt.phrases], np.float32
        )
        passed = np.flatnonzero(scores >= needed[ids])
        boxes, scores, ids = boxes[passed], scores[passed], ids[passed]
        masks = None if masks is None else np.asarray(masks)[passed]
    keep = remove_duplicates(boxes, scores, ids, iou=options.nms_iou)
    if options.max_objects is not None:
        keep = keep[: int(options.max_objects)]
    return FoundObjects(
        boxes=boxes[keep].reshape(-1, 4),
        scores=scores[keep],
        phrase_ids=ids[keep],
        labels=[prompt.phrases[int(i)] for i in ids[keep]],
        masks=None if masks is None else np.asarray(masks)[keep].reshape(len(keep), height, width),
        presence=presence,
    )


# --------------------------------------------------------------------------- what a backend builds


@dataclass
class Parts:
    """What a backend builds (textseg.backends), and what TextSegmenter composes: a finder
    (a Detector, or a TextMasker as `masker`), the Segmenter for boxes and points, and an
    optional TextMasker that checks the detector's objects (`checker`)."""

    detector: Detector | None = None
    segmenter: Segmenter | None = None
    masker: TextMasker | None = None
    checker: TextMasker | None = None
