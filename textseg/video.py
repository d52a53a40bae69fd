"""Text-prompted video segmentation: the finder names objects on key frames, SAM 2's video
predictor tracks them through the clip, each object keeping one id.

    ts = TextSegmenter.from_pretrained()
    vseg = ts.segment_video("clip.mp4", "skateboard, cap", every=10)
    vseg.mask(frame=12, object_id=0)        # (H, W) bool, or None where the object is absent
    save_video(vseg, "out/clip")            # overlay.mp4, preview.gif, segmentation.json

How a clip is processed
Here: decoding (`read_video`) and tracking (`track_objects`, `segment_video`). The result
types are in textseg.result, their files (JSON, overlay.mp4, preview.gif) in textseg.export,
SAM 2's video predictor in textseg.sam2_video, the finder step in textseg.parts.

1. Decode (PyAV, see textseg.video_io). Each frame is kept once, in CPU memory, as SAM 2's
   square uint8 input (1024 x 1024 x 3 = 3 MB for SAM 2.1, a quarter of SAM 2's own
   float32 loader); the key frames also as a copy of at most `max_side` pixels for the
   finder. Huge frames are therefore never held at full size.
2. Key frames are 0, every, 2*every, ... On each, the finder (GroundingDINO, SAM 3, or any
   Detector or TextMasker) runs through `textseg.parts.find_objects`, the same step as for
   images (same thresholds and duplicate removal). A detection whose box overlaps a tracked object's box
   (the box around its mask on that frame) with IoU >= match_iou continues that object:
   SAM 2 is re-prompted with the fresh box, which corrects drift. A detection that
   overlaps no tracked object is a new object with the next id. A tracked object that the
   finder misses is carried on with its own mask. One whose mask is empty on a key frame is
   lost: its track ends and its id is never reused.
3. From each key frame to the next, SAM 2's video predictor (sam2's SAM2VideoPredictor,
   sharing the image model's weights) propagates the masks. Its state is reset at every
   key frame and kept on the CPU (offload_state_to_cpu), and the frames are fed to it from
   CPU memory (offload_video_to_cpu), so GPU memory does not grow with the clip's length.

All coordinates are pixels of the original frames; masks come back at the original size.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from textseg.boxes import mask_box, match_boxes
from textseg.errors import VideoLoadError
from textseg.export import (  # noqa: F401 - the names are re-exported
    JSON_NAME,
    OVERLAY_VIDEO_NAME,
    PREVIEW_NAME,
    SavedVideo,
    save_video,
    video_from_json,
    video_to_json,
)
from textseg.parts import (
    MaskPropagator,
    SegmentOptions,
    VideoFrames,
    check_count,
    check_unit,
    find_objects,
)
from textseg.prompt import parse_prompt
from textseg.result import FrameMask, VideoObject, VideoSegmentation
from textseg.rle import encode_rle
from textseg.sam2_video import Sam2VideoPropagator, video_predictor_from

if TYPE_CHECKING:
    from PIL import Image

    from textseg.parts import Detector, TextMasker

# Kept importable from here for one release (their homes since 0.2: result types in
# textseg.result, files in textseg.export, SAM 2 in textseg.sam2_video, contracts in
# textseg.parts, box matching in textseg.boxes).
__all__ = [
    "FrameMask",
    "KeyFrameObjects",
    "MaskPropagator",
    "Sam2VideoPropagator",
    "SavedVideo",
    "VideoFrames",
    "VideoObject",
    "VideoSegmentation",
    "mask_box",
    "match_boxes",
    "read_video",
    "save_video",
    "segment_video",
    "track_objects",
    "video_from_json",
    "video_predictor_from",
    "video_to_json",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- decoding


def read_video(
    source: str | os.PathLike,
    *,
    image_size: int,
    every: int,
    max_frames: int | None = None,
    max_side: int = 2048,
    fps: float | None = None,
    progress: bool = False,
) -> VideoFrames:
    """Decode a clip into VideoFrames (see there): SAM 2's input for every frame at
    `image_size`, and a working copy of at most `max_side` pixels of every `every`-th frame.

    source: a video file or a folder of frames (textseg.video_io). fps: the rate of a
    folder of frames (default 25), or an override for a file.
    """
    from tqdm.auto import tqdm

    from textseg.images import working_copy
    from textseg.video_io import iter_frames, probe_video

    info = probe_video(source, fps=fps)
    inputs: list[np.ndarray] = []
    keys: dict[int, Image.Image] = {}
    size: tuple[int, int] | None = None
    total = info.frames if max_frames is None else min(info.frames or max_frames, max_frames)
    frames = iter_frames(source, max_frames=max_frames)
    for index, image in enumerate(tqdm(frames, desc="decode", total=total, disable=not progress)):
        size = size or (image.height, image.width)
        # The same square resize as sam2's own frame loader (PIL's default filter).
        inputs.append(np.array(image.resize((image_size, image_size))))  # writable, for torch
        if index % every == 0:
            keys[index] = working_copy(image, max_side=max_side)
    assert size is not None  # iter_frames raises on a clip without frames
    logger.info("decoded %d frames of %dx%d from %s", len(inputs), size[1], size[0], info.name)
    return VideoFrames(model_input=inputs, key_images=keys, size=size, fps=info.fps, name=info.name)


# --------------------------------------------------------------------------- tracking


@dataclass
class KeyFrameObjects:
    """The finder's objects on one key frame, after duplicate removal.

    boxes: (K, 4) float32 XYXY pixels of the original frame. scores: (K,) float32.
    labels: K prompt phrases.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str] = field(default_factory=list)


def _frame_mask(mask: np.ndarray, logits: np.ndarray) -> FrameMask:
    prob = 1.0 / (1.0 + np.exp(-np.clip(logits[mask], -50, 50)))
    return FrameMask(rle=encode_rle(mask), score=float(prob.mean()), box=mask_box(mask))


def track_objects(
    *,
    num_frames: int,
    find: Callable[[int], KeyFrameObjects],
    propagator: MaskPropagator,
    every: int,
    match_iou: float,
    progress: bool = False,
) -> tuple[list[VideoObject], list[dict[int, FrameMask]], tuple[int, ...]]:
    """Detect on key frames, track in between, keep ids (the rules in the module docstring).

    find(frame) -> KeyFrameObjects: the finder's objects on a key frame.
    propagator: seeded on each key frame, it yields mask logits per object id up to and
    including the next key frame.
    Returns (objects by id, per-frame {id: FrameMask}, the key frames).
    """
    from tqdm.auto import tqdm

    objects: list[VideoObject] = []
    frames: list[dict[int, FrameMask]] = [{} for _ in range(num_frames)]
    keys = tuple(range(0, num_frames, every))
    live: dict[int, np.ndarray] = {}  # id -> its mask on the current key frame
    done = 0  # frames whose results are final
    with tqdm(total=num_frames, desc="track", unit="frame", disable=not progress) as bar:
        for key in keys:
            last = min(key + every, num_frames - 1)
            for obj_id in [i for i, m in live.items() if not m.any()]:
                logger.info("object %d (%s) lost at frame %d", obj_id, objects[obj_id].label, key)
                del live[obj_id]
            found = find(key)
            ids = list(live)
            pairs = match_boxes(
                found.boxes,
                np.array([mask_box(live[i]) for i in ids]).reshape(-1, 4),
                iou=match_iou,
            )
            boxes: dict[int, np.ndarray] = {}
            for d, t in enumerate(pairs):
                if t is None:  # nothing tracked here: a new object
                    new = VideoObject(
                        id=len(objects),
                        label=found.labels[d],
                        score=float(found.scores[d]),
                        first_frame=key,
                        last_frame=key,
                    )
                    objects.append(new)
                    boxes[new.id] = found.boxes[d]
                else:  # found again: re-prompt with the fresh box
                    boxes[ids[t]] = found.boxes[d]
            masks = {i: m for i, m in live.items() if i not in boxes}  # missed: carry the mask
            live = {}
            if boxes or masks:
                propagator.seed(key, boxes=boxes, masks=masks)
                for f, logits in propagator.propagate(key, last):
                    for obj_id, lg in logits.items():
                        mask = lg > 0
                        if f == last:
                            live[obj_id] = mask
                        if f == key and obj_id in masks:
                            continue  # carried over: the frame keeps the mask it was tracked with
                        if mask.any():
                            frames[f][obj_id] = _frame_mask(mask, lg)
                        else:
                            frames[f].pop(obj_id, None)
            end = last + 1 if last == num_frames - 1 else last
            bar.update(max(0, end - done))
            done = max(done, end)
    for obj in objects:
        seen = [f for f in range(num_frames) if obj.id in frames[f]]
        obj.last_frame = seen[-1] if seen else obj.first_frame
    return objects, frames, keys


def segment_video(
    finder: Detector | TextMasker,
    segmenter: Any,
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
    max_side: int = 2048,
    fps: float | None = None,
    progress: bool = True,
) -> VideoSegmentation:
    """Find the prompt's objects on every `every`-th frame and track them in between.

    The body of TextSegmenter.segment_video (see there for the arguments). finder: a
    Detector (GroundingDINO) or a TextMasker (SAM 3), run on each key frame by
    `find_objects`, the same step as for images; segmenter: the Sam2Segmenter whose model
    tracks in between.
    """
    every = check_count("every", every, allow_none=False)
    max_frames = check_count("max_frames", max_frames, allow_none=True)
    match_iou = check_unit("match_iou", match_iou)
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    options = SegmentOptions(
        box_threshold=box_threshold,
        text_threshold=text_threshold,
        nms_iou=nms_iou,
        max_objects=max_objects,
    )
    parsed = parse_prompt(prompt)
    finder.check_prompt(parsed)
    if not isinstance(video, (str, os.PathLike)):
        raise VideoLoadError(
            "video must be a path to a video file or a folder of frames, "
            f"got {type(video).__name__}"
        )
    propagator = Sam2VideoPropagator(segmenter)
    frames = read_video(
        video,
        image_size=propagator.image_size,
        every=every,
        max_frames=max_frames,
        max_side=max_side,
        fps=fps,
        progress=progress,
    )

    def find(index: int) -> KeyFrameObjects:
        found = find_objects(finder, frames.key_images[index], parsed, options, size=frames.size)
        return KeyFrameObjects(boxes=found.boxes, scores=found.scores, labels=found.labels)

    try:
        propagator.start(frames)
        objects, masks, keys = track_objects(
            num_frames=len(frames),
            find=find,
            propagator=propagator,
            every=every,
            match_iou=match_iou,
            progress=progress,
        )
    finally:
        propagator.close()
    return VideoSegmentation(
        objects=objects,
        frames=masks,
        image_size=frames.size,
        fps=frames.fps,
        prompt=parsed.text,
        phrases=parsed.phrases,
        every=every,
        detection_frames=keys,
        source=frames.name,
    )
