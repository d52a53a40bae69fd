"""TextSegmenter: the façade that wires the finder (GroundingDINO) to the painter (SAM 2),
or runs a text masker (SAM 3) instead; user boxes and points go straight to the painter."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from textseg.boxes import clip_boxes, mask_boxes, remove_duplicates
from textseg.errors import PromptError, TextsegError
from textseg.images import ImageInput, describe, list_images, load_image, working_copy
from textseg.prompt import Prompt, parse_prompt
from textseg.result import Segmentation
from textseg.textmatch import text_match
from textseg.user_prompts import BoxesInput, PointsInput, UserPrompts, parse_user_prompts

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import torch
    from PIL import Image

    from textseg.detector import Detections
    from textseg.device import Precision
    from textseg.sam3 import TextMasks
    from textseg.video import VideoSegmentation

__all__ = [
    "BACKENDS",
    "BatchItem",
    "Detector",
    "SegmentOptions",
    "Segmenter",
    "TextMasker",
    "TextSegmenter",
]

Backend = Literal["groundingdino+sam2", "sam3"]
BACKENDS: tuple[str, ...] = ("groundingdino+sam2", "sam3")

# SAM 3 masks above this score count for the semantic check: low, so that the check asks
# "does SAM 3 see this phrase here at all" rather than "is it SAM 3's best guess".
CHECK_THRESHOLD = 0.3

logger = logging.getLogger(__name__)


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


@dataclass
class BatchItem:
    """One image of a `segment_many` run: a result, or the reason it was skipped.

    source: the image's path or description. segmentation: None when it could not be
    segmented. error: one-line reason when skipped (not segmented, or its files could not be
    written), else None. out_dir: where its files went, if saved. note: one line when the
    files went to another folder than `out_dir/<image name>` (see textseg.export.output_dir).
    """

    source: str
    segmentation: Segmentation | None = None
    error: str | None = None
    out_dir: Path | None = None
    note: str | None = None


def _check_unit(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from err
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return v


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

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold", "nms_iou"):
            object.__setattr__(self, name, _check_unit(name, getattr(self, name)))
        m = self.max_objects
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0):
            raise ValueError(f"max_objects must be None or a whole number >= 0, got {m!r}")
        d = self.detector_size
        if d is not None and (
            isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 32
        ):
            raise ValueError(f"detector_size must be None or a whole number >= 32, got {d!r}")
        if self.min_text_match is not None:
            value = _check_unit("min_text_match", self.min_text_match)
            object.__setattr__(self, "min_text_match", value)


class TextSegmenter:
    """Segment what a prompt describes, and what the user boxes or clicks.

    Backend "groundingdino+sam2" (the default): detector boxes → segmenter masks.
    Backend "sam3": a text masker (SAM 3) finds and masks every instance of each phrase.
    In both, user boxes and points go straight to the segmenter (SAM 2).

    detector, segmenter: adapters (GroundingDinoDetector, Sam2Segmenter, or anything with
        the same methods). Build them with `TextSegmenter.from_pretrained`.
    masker: a TextMasker (Sam3TextMasker) in place of the detector.
    checker: a TextMasker used by the default backend for the semantic check: each object
        found by text gets `text_match` (experimental).
    max_side: images with a longer side are worked on as a downscaled copy of that size
        (the models see ~1000 pixels anyway); boxes and masks come back at full size.
    """

    def __init__(
        self,
        detector: Detector | None = None,
        segmenter: Segmenter | None = None,
        *,
        masker: TextMasker | None = None,
        checker: TextMasker | None = None,
        max_side: int = 2048,
    ) -> None:
        if max_side < 64:
            raise ValueError(f"max_side must be at least 64 pixels, got {max_side}")
        if detector is not None and masker is not None:
            raise ValueError("pass a detector (GroundingDINO) or a masker (SAM 3), not both")
        if detector is not None and segmenter is None:
            raise ValueError("a detector needs a segmenter (SAM 2) to paint its boxes")
        if detector is None and masker is None and segmenter is None:
            raise ValueError("pass a detector and a segmenter, a masker, or a segmenter")
        if checker is not None and detector is None:
            raise ValueError("the checker checks the detector's objects; pass a detector too")
        self.detector = detector
        self.segmenter = segmenter
        self.masker = masker
        self.checker = checker
        self.max_side = max_side

    @property
    def backend(self) -> str:
        """ "sam3" when a text masker finds the objects, else "groundingdino+sam2"."""
        return "sam3" if self.masker is not None else "groundingdino+sam2"

    def check_prompt(self, prompt: Prompt) -> None:
        """Raise PromptError if a model that reads the text cannot read this prompt."""
        if self.detector is None and self.masker is None:
            raise PromptError(
                "this TextSegmenter has no detector or text masker: it segments boxes and "
                "points only; pass prompt=None"
            )
        for model in (self.detector, self.masker, self.checker):
            if model is not None:
                model.check_prompt(prompt)

    @classmethod
    def from_pretrained(
        cls,
        *,
        backend: Backend = "groundingdino+sam2",
        detector: str | os.PathLike | None = None,
        segmenter: str | os.PathLike | None = None,
        segmenter_config: str | os.PathLike | None = None,
        sam3: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> TextSegmenter:
        """Build the models of a backend on one device.

        backend: "groundingdino+sam2" (default: GroundingDINO finds, SAM 2 paints) or
            "sam3" (SAM 3 finds and paints; SAM 2 is loaded too, for boxes and points).
        detector: GroundingDINO-family hub id or local folder (default
            "IDEA-Research/grounding-dino-tiny"; also grounding-dino-base, MM-GroundingDINO).
        segmenter: SAM 2 hub id, size name, checkpoint .pt or local folder (default SAM 2.1
            large on a GPU, tiny on the CPU); segmenter_config: config for an unnamed .pt.
        sam3: SAM 3 hub id or local folder. With backend "sam3" it is the model (default
            "facebook/sam3", gated: ask for access on its hub page). With the default
            backend, giving it loads SAM 3 as the semantic checker (experimental): each
            object found by text gets `text_match`.
        device: None/"auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
        precision: SAM 2's and SAM 3's autocast dtype ("auto": bf16 where the GPU has it,
            else fp32).
        """
        from textseg.detector import DEFAULT_DETECTOR, GroundingDinoDetector
        from textseg.device import resolve_runtime
        from textseg.sam3 import DEFAULT_SAM3, Sam3TextMasker
        from textseg.segmenter import Sam2Segmenter

        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "sam3" and detector is not None:
            raise ValueError("detector= is GroundingDINO's; backend 'sam3' does not use it")
        runtime = resolve_runtime(device, precision=precision)
        if backend == "sam3":
            masker = Sam3TextMasker.from_pretrained(sam3 or DEFAULT_SAM3, runtime=runtime)
            seg = Sam2Segmenter.from_pretrained(segmenter, runtime=runtime, config=segmenter_config)
            return cls(segmenter=seg, masker=masker)
        det = GroundingDinoDetector.from_pretrained(detector or DEFAULT_DETECTOR, runtime=runtime)
        seg = Sam2Segmenter.from_pretrained(segmenter, runtime=runtime, config=segmenter_config)
        checker = Sam3TextMasker.from_pretrained(sam3, runtime=runtime) if sam3 else None
        return cls(det, seg, checker=checker)

    def segment(
        self,
        image: ImageInput,
        prompt: str | None = None,
        *,
        boxes: BoxesInput | None = None,
        points: PointsInput | None = None,
        point_labels: object | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.5,
        max_objects: int | None = None,
        multimask: bool = False,
        detector_size: int | None = None,
        min_text_match: float | None = None,
    ) -> Segmentation:
        """Find and mask every object the prompt names, plus what the user boxed or clicked.

        image: a path, the file's bytes, a PIL image or an (H, W[, C]) numpy array.
        prompt: phrases separated by commas or periods, e.g. "skateboard, cap"; None (or
            "" when boxes or points are given) for no text.
        boxes: (N, 4) XYXY pixels of the image, each one object "box 1", "box 2", ...; or
            {name: (x0, y0, x1, y1)}. They go to SAM 2 as they are (no detector).
        points: (K, 2) (x, y) pixels, together one object "point"; or {name: [(x, y), ...]}.
        point_labels: per point 1 (on the object) or 0 (not on it); default all 1; a dict
            by name when points are. A single point lets SAM 2 pick the best of 3 masks.
        box_threshold: minimum score of an object found by text, in [0, 1] (GroundingDINO's
            score, or SAM 3's: query score × presence score).
        text_threshold: minimum score of the token that names its phrase (GroundingDINO).
        nms_iou: boxes overlapping more than this (IoU) are duplicates; the higher score stays.
        max_objects: keep at most this many objects found by text (highest scores), None
            for all; the user's boxes and points are always kept.
        multimask: let SAM 2 propose three masks per box and keep its best-scored one.
        detector_size: GroundingDINO's input size, the shortest image side in pixels (None:
            the processor's, 800; e.g. 512 is about twice as fast on a CPU).
        min_text_match: experimental, off by default; with a SAM 3 checker loaded, drop
            objects found by text whose `text_match` is below it.
        Returns a Segmentation (possibly with no objects): the user's objects first (score
        1.0), then the objects found by text, best first.
        """
        options = SegmentOptions(
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_iou=nms_iou,
            max_objects=max_objects,
            multimask=multimask,
            detector_size=detector_size,
            min_text_match=min_text_match,
        )
        self._check_options(options)
        has_user = boxes is not None or points is not None
        if prompt is None or (has_user and isinstance(prompt, str) and not prompt.strip()):
            parsed = None
            if not has_user:
                raise PromptError(
                    "nothing to segment: give a text prompt (e.g. 'skateboard, cap'), "
                    "boxes=[(x0, y0, x1, y1)] or points=[(x, y)]"
                )
        else:
            parsed = parse_prompt(prompt)
            self.check_prompt(parsed)
        if has_user and self.segmenter is None:
            raise ValueError("boxes and points need a SAM 2 segmenter; this one has none")
        rgb = load_image(image)
        user = parse_user_prompts(boxes, points, point_labels, height=rgb.height, width=rgb.width)
        source = describe(image) if isinstance(image, (str, os.PathLike)) else None
        return self._segment_rgb(rgb, parsed, options, source=source, user=user)

    def _check_options(self, options: SegmentOptions) -> None:
        if options.detector_size is not None and self.detector is None:
            raise ValueError(
                "detector_size sets GroundingDINO's input size; this backend "
                f"({self.backend}) has no GroundingDINO"
            )
        if options.min_text_match is not None and self.checker is None:
            raise ValueError(
                "min_text_match needs the SAM 3 checker: build with "
                "TextSegmenter.from_pretrained(sam3='facebook/sam3') (or a local SAM 3 folder)"
            )

    def segment_video(
        self,
        video: str | os.PathLike,
        prompt: str,
        *,
        every: int = 10,
        max_frames: int | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.5,
        max_objects: int | None = None,
        match_iou: float = 0.5,
        fps: float | None = None,
        progress: bool = True,
    ) -> VideoSegmentation:
        """Find the prompt's objects in a clip and track each through it with one id.

        video: a video file (MP4, MOV, MKV, WebM, AVI...) or a folder of frames.
        every: the finder runs on frames 0, every, 2*every, ...; a detection overlapping no
            tracked object (IoU < match_iou) there becomes a new object with a new id.
        max_frames: segment only the first M frames. fps: frame rate of a folder of frames.
        box_threshold, text_threshold, nms_iou, max_objects: as in `segment`, per key frame.
        progress: tqdm bars for decoding and tracking.
        SAM 2's video predictor (sharing this segmenter's weights) tracks between key
        frames, with frames and state on the CPU. Returns a textseg.video.VideoSegmentation;
        save it with textseg.save_video. See textseg/video.py for the rules.
        """
        from textseg.video import segment_video

        return segment_video(
            self.detector,
            self.segmenter,
            video,
            prompt,
            every=every,
            max_frames=max_frames,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_iou=nms_iou,
            max_objects=max_objects,
            match_iou=match_iou,
            max_side=self.max_side,
            fps=fps,
            progress=progress,
        )

    def _segment_rgb(
        self,
        rgb: Image.Image,
        prompt: Prompt | None,
        options: SegmentOptions,
        *,
        source: str | None,
        user: UserPrompts | None = None,
    ) -> Segmentation:
        height, width = rgb.height, rgb.width
        work = working_copy(rgb, max_side=self.max_side)
        scale = np.array(
            [width / work.width, height / work.height] * 2, dtype=np.float32
        )  # working → original pixels, (sx, sy, sx, sy)
        common = dict(
            prompt=prompt.text if prompt else "",
            phrases=prompt.phrases if prompt else (),
            image=rgb,
            source=source,
        )
        parts = []
        if user is not None and len(user):
            parts.append(self._segment_user(work, user, options, scale, (height, width), common))
        if prompt is not None and self.masker is not None:
            parts.append(self._segment_masker(work, prompt, options, (height, width), common))
        elif prompt is not None:
            parts.append(
                self._segment_finder(work, prompt, options, scale, (height, width), common)
            )
        if not parts:
            return Segmentation.empty(image_size=(height, width), **common)
        if len(parts) == 1:
            return parts[0]
        return _concat(parts)

    def _segment_finder(
        self,
        work: Image.Image,
        prompt: Prompt,
        options: SegmentOptions,
        scale: np.ndarray,
        size: tuple[int, int],
        common: dict,
    ) -> Segmentation:
        """GroundingDINO's boxes → SAM 2's masks (+ the semantic check when loaded)."""
        height, width = size
        size_kw = {} if options.detector_size is None else {"size": options.detector_size}
        det = self.detector.detect(
            work,
            prompt,
            box_threshold=options.box_threshold,
            text_threshold=options.text_threshold,
            **size_kw,  # only when set: detectors without a size option keep working
        )
        boxes = clip_boxes(det.boxes * scale, height=height, width=width)
        keep = remove_duplicates(boxes, det.scores, det.phrase_ids, iou=options.nms_iou)
        if options.max_objects is not None:
            keep = keep[: int(options.max_objects)]
        if len(keep) == 0:
            return Segmentation.empty(image_size=size, **common)
        self.segmenter.set_image(np.asarray(work))
        work_boxes = clip_boxes(boxes[keep] / scale, height=work.height, width=work.width)
        masks, mask_scores = self.segmenter.predict(
            work_boxes, output_size=size, multimask=options.multimask
        )
        matches = None
        if self.checker is not None:
            ref = self.checker.segment_text(
                work, prompt, threshold=CHECK_THRESHOLD, output_size=size
            )
            matches = text_match(masks, det.phrase_ids[keep], ref.masks, ref.phrase_ids)
        seg = Segmentation(
            boxes=boxes[keep],
            scores=det.scores[keep],
            labels=[prompt.phrases[int(i)] for i in det.phrase_ids[keep]],
            masks=masks,
            mask_scores=mask_scores,
            image_size=size,
            text_match=matches,
            **common,
        )
        if matches is not None and options.min_text_match is not None:
            seg = seg.subset(np.flatnonzero(matches >= options.min_text_match))
        return seg

    def _segment_masker(
        self,
        work: Image.Image,
        prompt: Prompt,
        options: SegmentOptions,
        size: tuple[int, int],
        common: dict,
    ) -> Segmentation:
        """SAM 3: every instance of each phrase, with its presence score."""
        height, width = size
        found = self.masker.segment_text(
            work, prompt, threshold=options.box_threshold, output_size=size
        )
        boxes = clip_boxes(found.boxes, height=height, width=width)
        keep = remove_duplicates(boxes, found.scores, found.phrase_ids, iou=options.nms_iou)
        if options.max_objects is not None:
            keep = keep[: int(options.max_objects)]
        presence = {p: float(v) for p, v in zip(prompt.phrases, found.presence)}
        ids = found.phrase_ids[keep]
        return Segmentation(
            boxes=boxes[keep],
            scores=found.scores[keep],
            labels=[prompt.phrases[int(i)] for i in ids],
            masks=found.masks[keep].reshape(len(keep), height, width),
            mask_scores=found.scores[keep],
            image_size=size,
            presence_scores=[float(found.presence[int(i)]) for i in ids],
            phrase_presence=presence,
            **common,
        )

    def _segment_user(
        self,
        work: Image.Image,
        user: UserPrompts,
        options: SegmentOptions,
        scale: np.ndarray,
        size: tuple[int, int],
        common: dict,
    ) -> Segmentation:
        """The user's boxes (one object each) and point groups (one object each) → SAM 2."""
        self.segmenter.set_image(np.asarray(work))
        masks, scores, boxes, names, kinds = [], [], [], [], []
        if len(user.boxes):
            work_boxes = clip_boxes(user.boxes / scale, height=work.height, width=work.width)
            m, sc = self.segmenter.predict(
                work_boxes, output_size=size, multimask=options.multimask
            )
            masks.append(m)
            scores.append(sc)
            boxes.append(user.boxes)
            names += user.box_names
            kinds += ["box"] * len(user.boxes)
        for xy, labels, name in zip(user.point_groups, user.point_labels, user.point_names):
            m, sc = self.segmenter.predict(
                points=(xy / scale[:2])[None],
                point_labels=labels[None],
                output_size=size,
                multimask=options.multimask or len(xy) == 1,
            )
            box = mask_boxes(m)
            if not m.any():  # nothing painted: the box of the positive points
                on = xy[labels == 1]
                box = np.concatenate([on.min(axis=0), on.max(axis=0)])[None]
            masks.append(m)
            scores.append(sc)
            boxes.append(box)
            names.append(name)
            kinds.append("points")
        n = len(names)
        return Segmentation(
            boxes=np.concatenate(boxes).reshape(n, 4),
            scores=np.ones(n, dtype=np.float32),
            labels=names,
            masks=np.concatenate(masks),
            mask_scores=np.concatenate(scores),
            image_size=size,
            kinds=kinds,
            **common,
        )

    def iter_many(
        self,
        images: str | os.PathLike | Iterable[ImageInput],
        prompt: str | None,
        *,
        out_dir: str | os.PathLike | None = None,
        progress: bool = False,
        **options,
    ) -> Iterator[BatchItem]:
        """Like `segment_many`, but yields each image's BatchItem as soon as it is done
        (and its files are written). Bad options or a bad prompt raise before the first."""
        from tqdm.auto import tqdm

        from textseg.export import output_dir, save

        prompts = {k: options.pop(k) for k in ("boxes", "points", "point_labels") if k in options}
        self._check_options(SegmentOptions(**options))  # bad options and a bad prompt fail
        if prompt is not None and (prompt.strip() or not prompts):  # once, up front
            self.check_prompt(parse_prompt(prompt))
        elif prompt is None and not any(v is not None for v in prompts.values()):
            raise PromptError("nothing to segment: give a text prompt, boxes or points")
        options = {**prompts, **options}
        if isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            if not folder.is_dir():
                raise ValueError(f"{folder}: not a folder; pass a folder or a list of images")
            sources: list[ImageInput] = list(list_images(folder))
            if not sources:
                logger.warning("%s holds no image files", folder)
        else:
            sources = list(images)
        root = Path(out_dir) if out_dir is not None else None
        used: set[str] = set()
        for index, source in enumerate(tqdm(sources, desc="textseg", disable=not progress)):
            name = describe(source)
            item = BatchItem(source=name)
            try:
                item.segmentation = self.segment(source, prompt, **options)
            except TextsegError as err:  # a bad image: report it, skip it, go on
                item.error = str(err)
            except Exception as err:  # noqa: BLE001 - one failure must not lose the batch
                logger.debug("segmenting %s failed", name, exc_info=True)
                item.error = f"{name}: {type(err).__name__}: {err}"
            if item.segmentation is not None and root is not None:
                path_like = isinstance(source, (str, os.PathLike))
                try:  # a save error skips this image's files, never the rest of the batch
                    folder, item.note = output_dir(
                        root, name if path_like else None, used=used, fallback=f"image_{index:04d}"
                    )
                    save(item.segmentation, folder)
                    item.out_dir = folder
                except OSError as err:  # OutputError included
                    item.error = f"{name}: not saved: {' '.join(str(err).split())}"
            yield item

    def segment_many(
        self,
        images: str | os.PathLike | Iterable[ImageInput],
        prompt: str | None,
        *,
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        **options,
    ) -> list[BatchItem]:
        """Segment a folder of images (its image files, sorted) or a list of images, with a
        tqdm progress bar.

        A bad image is logged and skipped (its BatchItem carries the error); the rest go on.
        out_dir: if given, each image's files are written to out_dir/<image stem>/ as soon
            as it is done (see textseg.export.save); a folder holding another image's
            results is never written over: the next free <stem>_2, ... is used (item.note).
        options: keyword arguments of `segment` (box_threshold, nms_iou, boxes, ...).
        """
        items = []
        for item in self.iter_many(images, prompt, out_dir=out_dir, progress=progress, **options):
            if item.error is not None:
                logger.warning("skipped %s", item.error)
            items.append(item)
        return items


def _concat(parts: list[Segmentation]) -> Segmentation:
    """One Segmentation holding the objects of `parts` in order (same image and prompt)."""
    first = parts[0]
    presence = next((p.phrase_presence for p in parts if p.phrase_presence is not None), None)
    return Segmentation(
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
