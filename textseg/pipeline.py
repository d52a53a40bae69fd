"""TextSegmenter: the façade that wires the finder (GroundingDINO) to the painter (SAM 2)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from textseg.boxes import clip_boxes, remove_duplicates
from textseg.errors import TextsegError
from textseg.images import ImageInput, describe, list_images, load_image, working_copy
from textseg.prompt import Prompt, parse_prompt
from textseg.result import Segmentation

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import torch
    from PIL import Image

    from textseg.detector import Detections
    from textseg.device import Precision
    from textseg.video import VideoSegmentation

__all__ = ["BatchItem", "Detector", "SegmentOptions", "Segmenter", "TextSegmenter"]

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """What TextSegmenter needs from a detector (see GroundingDinoDetector)."""

    def check_prompt(self, prompt: Prompt) -> None: ...

    def detect(
        self, image: Image.Image, prompt: Prompt, *, box_threshold: float, text_threshold: float
    ) -> Detections: ...


class Segmenter(Protocol):
    """What TextSegmenter needs from a box-prompted segmenter (see Sam2Segmenter)."""

    def set_image(self, image: np.ndarray) -> bool: ...

    def predict(
        self, boxes: np.ndarray, *, output_size: tuple[int, int] | None, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray]: ...


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
    max_objects: int | None = None  # keep the best N objects; None keeps all
    multimask: bool = False  # SAM 2 proposes 3 masks per box, keep the best

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold", "nms_iou"):
            object.__setattr__(self, name, _check_unit(name, getattr(self, name)))
        m = self.max_objects
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0):
            raise ValueError(f"max_objects must be None or a whole number >= 0, got {m!r}")


class TextSegmenter:
    """Segment what a prompt describes: detector boxes → segmenter masks.

    detector, segmenter: adapters (GroundingDinoDetector, Sam2Segmenter, or anything with
        the same methods). Build both with `TextSegmenter.from_pretrained`.
    max_side: images with a longer side are worked on as a downscaled copy of that size
        (the models see ~1000 pixels anyway); boxes and masks come back at full size.
    """

    def __init__(self, detector: Detector, segmenter: Segmenter, *, max_side: int = 2048) -> None:
        if max_side < 64:
            raise ValueError(f"max_side must be at least 64 pixels, got {max_side}")
        self.detector = detector
        self.segmenter = segmenter
        self.max_side = max_side

    @classmethod
    def from_pretrained(
        cls,
        *,
        detector: str | os.PathLike | None = None,
        segmenter: str | os.PathLike | None = None,
        segmenter_config: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> TextSegmenter:
        """Build GroundingDINO and SAM 2 on one device.

        detector: hub id or local folder (default "IDEA-Research/grounding-dino-tiny").
        segmenter: hub id, size name, checkpoint .pt or local folder (default SAM 2.1 large
            on a GPU, tiny on the CPU); segmenter_config: config for an unnamed checkpoint.
        device: None/"auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
        precision: SAM 2's autocast dtype ("auto": bf16 where the GPU has it, else fp32).
        """
        from textseg.detector import DEFAULT_DETECTOR, GroundingDinoDetector
        from textseg.device import resolve_runtime
        from textseg.segmenter import Sam2Segmenter

        runtime = resolve_runtime(device, precision=precision)
        det = GroundingDinoDetector.from_pretrained(detector or DEFAULT_DETECTOR, runtime=runtime)
        seg = Sam2Segmenter.from_pretrained(segmenter, runtime=runtime, config=segmenter_config)
        return cls(det, seg)

    def segment(
        self,
        image: ImageInput,
        prompt: str,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.5,
        max_objects: int | None = None,
        multimask: bool = False,
    ) -> Segmentation:
        """Find and mask every object the prompt names.

        image: a path, the file's bytes, a PIL image or an (H, W[, C]) numpy array.
        prompt: phrases separated by commas or periods, e.g. "skateboard, cap".
        box_threshold: minimum detector score of an object, in [0, 1].
        text_threshold: minimum score of the token that names its phrase, in [0, 1].
        nms_iou: boxes overlapping more than this (IoU) are duplicates; the higher score stays.
        max_objects: keep at most this many objects (highest scores), None for all.
        multimask: let SAM 2 propose three masks per box and keep its best-scored one.
        Returns a Segmentation (possibly with no objects).
        """
        options = SegmentOptions(
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_iou=nms_iou,
            max_objects=max_objects,
            multimask=multimask,
        )
        parsed = parse_prompt(prompt)
        self.detector.check_prompt(parsed)
        rgb = load_image(image)
        source = describe(image) if isinstance(image, (str, os.PathLike)) else None
        return self._segment_rgb(rgb, parsed, options, source=source)

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
        prompt: Prompt,
        options: SegmentOptions,
        *,
        source: str | None,
    ) -> Segmentation:
        height, width = rgb.height, rgb.width
        work = working_copy(rgb, max_side=self.max_side)
        scale = np.array(
            [width / work.width, height / work.height] * 2, dtype=np.float32
        )  # working → original pixels, (sx, sy, sx, sy)
        det = self.detector.detect(
            work,
            prompt,
            box_threshold=options.box_threshold,
            text_threshold=options.text_threshold,
        )
        boxes = clip_boxes(det.boxes * scale, height=height, width=width)
        keep = remove_duplicates(boxes, det.scores, det.phrase_ids, iou=options.nms_iou)
        if options.max_objects is not None:
            keep = keep[: int(options.max_objects)]
        common = dict(prompt=prompt.text, phrases=prompt.phrases, image=rgb, source=source)
        if len(keep) == 0:
            return Segmentation.empty(image_size=(height, width), **common)
        self.segmenter.set_image(np.asarray(work))
        work_boxes = clip_boxes(boxes[keep] / scale, height=work.height, width=work.width)
        masks, mask_scores = self.segmenter.predict(
            work_boxes, output_size=(height, width), multimask=options.multimask
        )
        return Segmentation(
            boxes=boxes[keep],
            scores=det.scores[keep],
            labels=[prompt.phrases[int(i)] for i in det.phrase_ids[keep]],
            masks=masks,
            mask_scores=mask_scores,
            image_size=(height, width),
            **common,
        )

    def iter_many(
        self,
        images: str | os.PathLike | Iterable[ImageInput],
        prompt: str,
        *,
        out_dir: str | os.PathLike | None = None,
        progress: bool = False,
        **options,
    ) -> Iterator[BatchItem]:
        """Like `segment_many`, but yields each image's BatchItem as soon as it is done
        (and its files are written). Bad options or a bad prompt raise before the first."""
        from tqdm.auto import tqdm

        from textseg.export import output_dir, save

        SegmentOptions(**options)  # bad options and a bad prompt fail once, up front
        self.detector.check_prompt(parse_prompt(prompt))
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
        prompt: str,
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
        options: keyword arguments of `segment` (box_threshold, nms_iou, ...).
        """
        items = []
        for item in self.iter_many(images, prompt, out_dir=out_dir, progress=progress, **options):
            if item.error is not None:
                logger.warning("skipped %s", item.error)
            items.append(item)
        return items
