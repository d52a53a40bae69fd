"""TextSegmenter: the façade that wires the finder (GroundingDINO) to the painter (SAM 2),
or runs a text masker (SAM 3) instead; user boxes and points go straight to the painter."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.backends import BACKENDS, DEFAULT_BACKEND, get_backend
from textseg.boxes import clip_boxes, mask_boxes
from textseg.errors import OutputError, PromptError, TextsegError
from textseg.export import is_done, load, output_dir, save
from textseg.hub import looks_like_path
from textseg.images import ImageInput, describe, list_images, load_image, working_copy
from textseg.lock import folder_lock
from textseg.parts import (
    Detector,
    Segmenter,
    SegmentOptions,
    TextMasker,
    find_objects,
)
from textseg.prompt import Prompt, parse_prompt
from textseg.result import BatchItem, Segmentation, VideoSegmentation
from textseg.textmatch import text_match
from textseg.user_prompts import BoxesInput, PointsInput, UserPrompts, parse_user_prompts
from textseg.video import segment_video

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    import torch
    from PIL import Image

    from textseg.device import Precision

# BACKENDS, Detector, Segmenter, TextMasker, SegmentOptions and BatchItem are re-exported
# from their homes (textseg.backends, textseg.parts, textseg.result) for one release.
__all__ = [
    "BACKENDS",
    "BatchItem",
    "Detector",
    "SegmentOptions",
    "Segmenter",
    "TextMasker",
    "TextSegmenter",
]

Backend = str  # was Literal["groundingdino+sam2", "sam3"]; the names are BACKENDS' keys now

# SAM 3 masks above this score count for the semantic check: low, so that the check asks
# "does SAM 3 see this phrase here at all" rather than "is it SAM 3's best guess".
CHECK_THRESHOLD = 0.3

logger = logging.getLogger(__name__)


def _jsonable(value: object) -> object:
    """Options (numpy arrays, tuples, dicts of them) as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _model_id(spec: object) -> str | None:
    """A model's hub id, or its local path made absolute (what the settings record)."""
    if spec is None:
        return None
    text = str(spec)
    path = Path(text).expanduser()
    if looks_like_path(text) or path.exists():
        return str(path.resolve())
    return text


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        self.backend_name: str | None = None  # the BACKENDS row from_pretrained built
        # which models these are (ids, absolute paths, device), set by from_pretrained; a
        # batch re-run skips finished images only when it is known (see settings_for)
        self.models: dict | None = None
        # one image at a time through the segmenter's set_image -> predict (threads)
        self._paint_lock = getattr(segmenter, "lock", None) or threading.RLock()

    @property
    def backend(self) -> str:
        """The BACKENDS name this was built from; else "sam3" when a text masker finds the
        objects, else "groundingdino+sam2"."""
        if self.backend_name is not None:
            return self.backend_name
        return "sam3" if self.masker is not None else DEFAULT_BACKEND

    @property
    def finder(self) -> Detector | TextMasker | None:
        """What finds objects by text: the text masker (SAM 3) or the detector."""
        return self.masker if self.masker is not None else self.detector

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
        backend: str = DEFAULT_BACKEND,
        detector: str | os.PathLike | None = None,
        segmenter: str | os.PathLike | None = None,
        segmenter_config: str | os.PathLike | None = None,
        sam3: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> TextSegmenter:
        """Build the models of a backend on one device.

        backend: a name of textseg.backends.BACKENDS: "groundingdino+sam2" (default:
            GroundingDINO finds, SAM 2 paints) or "sam3" (SAM 3 finds and paints; SAM 2 is
            loaded too, for boxes, points and video).
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
        from textseg.device import resolve_runtime

        row = get_backend(backend)
        models = dict(
            detector=detector, segmenter=segmenter, segmenter_config=segmenter_config, sam3=sam3
        )
        row.check({k: v for k, v in models.items() if v is not None}, lambda name: f"{name}=")
        runtime = resolve_runtime(device, precision=precision)
        parts = row.build(runtime=runtime, **models)
        made = cls(parts.detector, parts.segmenter, masker=parts.masker, checker=parts.checker)
        made.backend_name = backend
        made.models = {
            "backend": backend,
            **{name: _model_id(spec) for name, spec in models.items()},
            "device": str(runtime.device),
            "dtype": str(runtime.dtype),
        }
        return made

    def settings_for(
        self, source: str | os.PathLike, prompt: str | None, options: dict
    ) -> dict | None:
        """What a saved result of `source` was made with: the models, max_side, the prompt,
        `options` (every option, defaults included) and the SHA-256 of the source file, as
        a JSON-ready dict (stored as segmentation.json's "settings"). None when it cannot
        be told (models not built by from_pretrained, or the source is not a file): such
        results are always redone."""
        path = Path(source)
        if self.models is None or not path.is_file():
            return None
        return {
            "models": self.models,
            "max_side": self.max_side,
            "prompt": prompt,
            "options": _jsonable(dict(sorted(options.items()))),
            "source_sha256": _file_digest(path),
        }

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
        box_thresholds: Mapping[str, float] | None = None,
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
        box_thresholds: {phrase: threshold}, a box_threshold of its own for some phrases
            (e.g. {"car": 0.4}); the others keep `box_threshold`.
        Returns a Segmentation (possibly with no objects): the user's objects first (score
        1.0), then the objects found by text, best first.
        """
        options = self.check_options(
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_iou=nms_iou,
            max_objects=max_objects,
            multimask=multimask,
            detector_size=detector_size,
            min_text_match=min_text_match,
            box_thresholds=box_thresholds,
        )
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

    def check_options(self, **options: Any) -> SegmentOptions:
        """`segment`'s finder and mask options (box_threshold, ..., box_thresholds) as one
        SegmentOptions, checked against this segmenter's models; raises ValueError (one line)
        for a bad value or one this backend cannot use."""
        checked = SegmentOptions(**options)
        self._check_options(checked)
        return checked

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
        frames, with frames and state on the CPU. The finder is this segmenter's own
        (GroundingDINO or SAM 3), run on each key frame by the same step as on an image
        (textseg.parts.find_objects). Returns a textseg.VideoSegmentation; save it with
        textseg.save_video. See textseg/video.py for the rules.
        """
        if self.finder is None:
            raise PromptError(
                "this TextSegmenter has no detector or text masker: it cannot find the "
                "prompt's objects on a video's key frames"
            )
        return segment_video(
            self.finder,
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
        if prompt is not None:
            parts.append(self._segment_text(work, prompt, options, scale, (height, width), common))
        if not parts:
            return Segmentation.empty(image_size=(height, width), **common)
        return parts[0] if len(parts) == 1 else Segmentation.concat(parts)

    def _segment_text(
        self,
        work: Image.Image,
        prompt: Prompt,
        options: SegmentOptions,
        scale: np.ndarray,
        size: tuple[int, int],
        common: dict,
    ) -> Segmentation:
        """The finder's objects (find_objects, as for a video's key frames); the detector's
        boxes painted by SAM 2 (+ the semantic check when loaded), SAM 3's masks as they are."""
        found = find_objects(self.finder, work, prompt, options, size=size)
        if len(found) == 0 and found.presence is None:
            return Segmentation.empty(image_size=size, **common)
        extra: dict = {}
        if found.masks is not None:  # a text masker (SAM 3) painted them itself
            masks, mask_scores = found.masks, found.scores
            extra["presence_scores"] = [float(found.presence[int(i)]) for i in found.phrase_ids]
            extra["phrase_presence"] = {p: float(v) for p, v in zip(prompt.phrases, found.presence)}
        else:
            work_boxes = clip_boxes(found.boxes / scale, height=work.height, width=work.width)
            with self._paint_lock:  # the embedding set here is the one predict reads
                self.segmenter.set_image(np.asarray(work))
                masks, mask_scores = self.segmenter.predict(
                    work_boxes, output_size=size, multimask=options.multimask
                )
            if self.checker is not None:
                ref = self.checker.segment_text(
                    work, prompt, threshold=CHECK_THRESHOLD, output_size=size
                )
                matches = text_match(masks, found.phrase_ids, ref.masks, ref.phrase_ids)
                extra["text_match"] = matches
        seg = Segmentation(
            boxes=found.boxes,
            scores=found.scores,
            labels=found.labels,
            masks=masks,
            mask_scores=mask_scores,
            image_size=size,
            **extra,
            **common,
        )
        if "text_match" in extra and options.min_text_match is not None:
            seg = seg.subset(np.flatnonzero(extra["text_match"] >= options.min_text_match))
        return seg

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
        with self._paint_lock:  # the embedding set here is the one every predict reads
            return self._paint_user(work, user, options, scale, size, common)

    def _paint_user(
        self,
        work: Image.Image,
        user: UserPrompts,
        options: SegmentOptions,
        scale: np.ndarray,
        size: tuple[int, int],
        common: dict,
    ) -> Segmentation:
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
        skip_done: bool = True,
        on_plan: Callable[[int, int], None] | None = None,
        **options,
    ) -> Iterator[BatchItem]:
        """Like `segment_many`, but yields each image's BatchItem as soon as it is done
        (and its files are written). Bad options, a bad prompt and boxes or points that fit
        no image (inverted, no area, not finite, only negative points) raise before the
        first image is read.

        out_dir: held with a lock (textseg.lock) while the batch runs: a second run on it
            is refused (OutputError naming its PID).
        skip_done: an image whose folder already holds its complete result made with the
            same settings (textseg.export.is_done) is not segmented again: its item has
            skipped=True and the saved result.
        on_plan(done, todo): called once, before the first image, with how many images
            are skipped as done and how many are left (with out_dir only).
        """
        prompts = {k: options.pop(k) for k in ("boxes", "points", "point_labels") if k in options}
        checked = self.check_options(**options)  # bad options and a bad prompt fail once, up front
        if prompt is not None and (prompt.strip() or not prompts):
            self.check_prompt(parse_prompt(prompt))
        elif prompt is None and not any(v is not None for v in prompts.values()):
            raise PromptError("nothing to segment: give a text prompt, boxes or points")
        if any(v is not None for v in prompts.values()):  # mistakes that fit no image at all
            parse_user_prompts(
                prompts.get("boxes"),
                prompts.get("points"),
                prompts.get("point_labels"),
                height=math.inf,
                width=math.inf,
            )
        every = {**asdict(checked), **prompts}
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
        if root is None:
            yield from self._run_many(sources, prompt, options, every, None, progress, {}, None)
            return
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{root}: cannot create the folder ({err.strerror or err})") from err
        with folder_lock(root):
            used: set[str] = set()
            done: dict[int, tuple[Path, str | None]] = {}
            for index, source in enumerate(sources):
                if skip_done and isinstance(source, (str, os.PathLike)):
                    settings = self.settings_for(source, prompt, every)
                    trial = set(used)
                    folder, note = output_dir(
                        root, describe(source), used=trial, fallback=f"image_{index:04d}"
                    )
                    if settings is not None and is_done(
                        folder, source=str(source), settings=settings
                    ):
                        used = trial
                        done[index] = (folder, note)
            logger.info("%s: skipped %d done, %d to do", root, len(done), len(sources) - len(done))
            if on_plan is not None:
                on_plan(len(done), len(sources) - len(done))
            yield from self._run_many(sources, prompt, options, every, root, progress, done, used)

    def _run_many(
        self,
        sources: list[ImageInput],
        prompt: str | None,
        options: dict,
        every: dict,
        root: Path | None,
        progress: bool,
        done: dict[int, tuple[Path, str | None]],
        used: set[str] | None,
    ) -> Iterator[BatchItem]:
        from tqdm.auto import tqdm  # not at import: tqdm.auto looks for notebook widgets

        used = used if used is not None else set()
        for index, source in enumerate(tqdm(sources, desc="textseg", disable=not progress)):
            name = describe(source)
            item = BatchItem(source=name)
            if index in done:
                item.out_dir, item.note = done[index]
                try:
                    item.segmentation = load(item.out_dir)
                    item.skipped = True
                    yield item
                    continue
                except ValueError:  # changed since the plan: segment it again
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
                    settings = self.settings_for(source, prompt, every) if path_like else None
                    save(item.segmentation, folder, settings=settings)
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
            Run again, it skips the images already done with the same settings
            (skip_done=False redoes them) and finishes any a kill interrupted.
        options: keyword arguments of `segment` (box_threshold, nms_iou, boxes, ...), and
            `iter_many`'s skip_done and on_plan.
        """
        items = []
        for item in self.iter_many(images, prompt, out_dir=out_dir, progress=progress, **options):
            if item.error is not None:
                logger.warning("skipped %s", item.error)
            items.append(item)
        return items
