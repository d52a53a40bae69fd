"""Text-prompted video segmentation: the finder names objects on key frames, SAM 2's video
predictor tracks them through the clip, each object keeping one id.

    ts = TextSegmenter.from_pretrained()
    vseg = ts.segment_video("clip.mp4", "skateboard, cap", every=10)
    vseg.mask(frame=12, object_id=0)        # (H, W) bool, or None where the object is absent
    save_video(vseg, "out/clip")            # overlay.mp4, preview.gif, segmentation.json

How a clip is processed
1. Decode (PyAV, see textseg.video_io). Each frame is kept once, in CPU memory, as SAM 2's
   square uint8 input (1024 x 1024 x 3 = 3 MB for SAM 2.1, a quarter of SAM 2's own
   float32 loader); the key frames also as a copy of at most `max_side` pixels for the
   finder. Huge frames are therefore never held at full size.
2. Key frames are 0, every, 2*every, ... On each, the finder runs (same thresholds and
   duplicate removal as images). A detection whose box overlaps a tracked object's box
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
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from textseg.errors import VideoLoadError
from textseg.result import Segmentation
from textseg.rle import decode_rle, encode_rle

if TYPE_CHECKING:
    from PIL import Image

    from textseg.pipeline import Detector

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

JSON_NAME = "segmentation.json"  # the same name as for images, so textseg.load(folder) reads it
OVERLAY_VIDEO_NAME = "overlay.mp4"
PREVIEW_NAME = "preview.gif"


# --------------------------------------------------------------------------- the result


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


def video_to_json(vseg: VideoSegmentation) -> dict:
    """The JSON-ready dict of a VideoSegmentation ("kind": "video"; masks as COCO RLE)."""
    h, w = vseg.image_size
    return {
        "version": 1,
        "kind": "video",
        "prompt": vseg.prompt,
        "phrases": list(vseg.phrases),
        "source": vseg.source,
        "image": {"height": int(h), "width": int(w)},
        "fps": float(vseg.fps),
        "num_frames": vseg.num_frames,
        "every": int(vseg.every),
        "detection_frames": list(vseg.detection_frames),
        "objects": [
            {
                "id": o.id,
                "label": o.label,
                "score": round(float(o.score), 6),
                "first_frame": o.first_frame,
                "last_frame": o.last_frame,
            }
            for o in vseg.objects
        ],
        "frames": [
            {
                "index": f,
                "objects": [
                    {
                        "id": i,
                        "score": round(float(masks[i].score), 6),
                        "box_xyxy": [round(float(v), 3) for v in masks[i].box],
                        "mask_rle": masks[i].rle,
                    }
                    for i in sorted(masks)
                ],
            }
            for f, masks in enumerate(vseg.frames)
        ],
    }


def video_from_json(data: dict) -> VideoSegmentation:
    """Rebuild a VideoSegmentation from `video_to_json`'s dict (what textseg.load does)."""
    try:
        h, w = int(data["image"]["height"]), int(data["image"]["width"])
        objects = [
            VideoObject(
                id=int(o["id"]),
                label=str(o["label"]),
                score=float(o["score"]),
                first_frame=int(o["first_frame"]),
                last_frame=int(o["last_frame"]),
            )
            for o in data["objects"]
        ]
        frames: list[dict[int, FrameMask]] = [{} for _ in range(int(data["num_frames"]))]
        for entry in data["frames"]:
            for o in entry["objects"]:
                rle = {
                    "size": [int(v) for v in o["mask_rle"]["size"]],
                    "counts": o["mask_rle"]["counts"],
                }
                if rle["size"] != [h, w]:
                    raise ValueError(f"a mask of size {rle['size']} in a {h}x{w} video")
                frames[int(entry["index"])][int(o["id"])] = FrameMask(
                    rle=rle, score=float(o["score"]), box=np.asarray(o["box_xyxy"], np.float32)
                )
        return VideoSegmentation(
            objects=objects,
            frames=frames,
            image_size=(h, w),
            fps=float(data["fps"]),
            prompt=str(data.get("prompt", "")),
            phrases=tuple(data.get("phrases", ())),
            every=int(data.get("every", 1)),
            detection_frames=tuple(data.get("detection_frames", ())),
            source=data.get("source"),
        )
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"not a textseg video segmentation ({type(err).__name__}: {err})") from err


# --------------------------------------------------------------------------- frames


@dataclass
class VideoFrames:
    """A decoded clip, held compactly in CPU memory.

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


class _Sam2Frames:
    """The frames as sam2's inference state reads them: frames[i] is a normalised
    (3, S, S) float32 CPU tensor, made on demand from the uint8 copy (sam2's own loader
    would hold them all as float32, 4x the memory)."""

    # sam2's load_video_frames defaults (ImageNet mean and std)
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, frames: VideoFrames) -> None:
        import torch

        self.frames = frames.model_input
        self.mean = torch.tensor(self.MEAN, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        import torch

        pixels = torch.from_numpy(self.frames[index]).permute(2, 0, 1).float() / 255.0
        return (pixels - self.mean) / self.std


# --------------------------------------------------------------------------- SAM 2


class MaskPropagator(Protocol):
    """What track_objects needs from a video segmenter (see Sam2VideoPropagator)."""

    def seed(
        self, frame: int, *, boxes: dict[int, np.ndarray], masks: dict[int, np.ndarray]
    ) -> None: ...

    def propagate(self, start: int, last: int) -> Iterator[tuple[int, dict[int, np.ndarray]]]: ...


_SWAP_LOCK = threading.Lock()
_SWAPS: dict[tuple[int, str], list] = {}  # (id(module), name) -> [original, blocks open]
_START_LOCK = threading.Lock()  # sam2's frame loader is swapped per clip: one start at a time


@contextmanager
def _swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    """Set module.name = value for the block; the original comes back when the last block
    that set it ends. Blocks may overlap (threads, or several propagate generators alive at
    once, ending in any order) when they set the same value."""
    key = (id(module), name)
    with _SWAP_LOCK:
        held = _SWAPS.get(key)
        if held is None:
            _SWAPS[key] = [getattr(module, name), 1]
            setattr(module, name, value)
        elif getattr(module, name) is value:
            held[1] += 1
        else:
            raise RuntimeError(
                f"{getattr(module, '__name__', module)}.{name} is already replaced by another "
                "block with a different value; run these one at a time"
            )
    try:
        yield
    finally:
        with _SWAP_LOCK:
            held = _SWAPS[key]
            held[1] -= 1
            if held[1] == 0:
                setattr(module, name, held[0])
                del _SWAPS[key]


def _silent(iterable, *args, **kwargs):  # sam2 opens one tqdm bar per call; we keep our own
    return iterable


def video_predictor_from(model: Any) -> Any:
    """sam2's SAM2VideoPredictor over the *same* modules and weights as `model` (a SAM2Base
    built for images): no second copy of the weights in memory, nothing loaded again.

    SAM2VideoPredictor's constructor is SAM2Base's plus four settings, so this is what
    build_sam2_video_predictor builds, with its post-processing settings, except
    fill_hole_area=0: hole filling needs sam2's optional CUDA op (not built by
    SAM2_BUILD_CUDA=0) and without it warns on every frame.
    """
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    if isinstance(model, SAM2VideoPredictor):
        return model
    video = SAM2VideoPredictor.__new__(SAM2VideoPredictor)
    # nn.Module keeps its sub-modules, parameters and buffers in dicts: copy the dicts
    # (so registering something on one never changes the other), share what they hold.
    video.__dict__.update(
        {k: (v.copy() if isinstance(v, dict) else v) for k, v in vars(model).items()}
    )
    video.fill_hole_area = 0
    video.non_overlap_masks = False
    video.clear_non_cond_mem_around_input = False
    video.add_all_frames_to_correct_as_cond = False
    video.binarize_mask_from_pts_for_mem_enc = True  # as build_sam2_video_predictor sets it
    return video


class Sam2VideoPropagator:
    """SAM 2's video predictor on a decoded clip, prompted with boxes or masks per object id.

    segmenter: a Sam2Segmenter; its model (and so its weights, device and precision) is
    shared. Frames and the tracking state live on the CPU (offload_video_to_cpu,
    offload_state_to_cpu); each `seed` resets the state, so its size is bounded by one
    stretch between key frames.
    """

    def __init__(self, segmenter: Any) -> None:
        model = getattr(getattr(segmenter, "predictor", None), "model", None)
        runtime = getattr(segmenter, "runtime", None)
        if model is None or runtime is None:
            raise TypeError(
                f"segment_video needs a Sam2Segmenter (SAM 2), got {type(segmenter).__name__}; "
                "build the TextSegmenter with TextSegmenter.from_pretrained()"
            )
        self.predictor = video_predictor_from(model)
        self.runtime = runtime
        self.image_size = int(model.image_size)
        self.state: dict | None = None

    def _context(self):
        import torch

        autocast = (
            torch.autocast(device_type=self.runtime.device.type, dtype=self.runtime.dtype)
            if self.runtime.autocast_enabled
            else nullcontext()
        )
        return autocast

    def start(self, frames: VideoFrames) -> None:
        """Open the predictor's state on `frames` (runs SAM 2's image encoder on frame 0)."""
        import sam2.sam2_video_predictor as svp

        h, w = frames.size
        lazy = _Sam2Frames(frames)

        def load(video_path: Any, image_size: int, offload_video_to_cpu: bool, **_: Any):
            return lazy, h, w

        # sam2's init_state reads a JPEG folder or an MP4 through its own loader (all frames
        # as float32 on the device by default); hand it the frames decoded here instead.
        with _START_LOCK, _swapped(svp, "load_video_frames", load), self._context():
            self.state = self.predictor.init_state(
                video_path=frames.name, offload_video_to_cpu=True, offload_state_to_cpu=True
            )

    def seed(
        self, frame: int, *, boxes: dict[int, np.ndarray], masks: dict[int, np.ndarray]
    ) -> None:
        """Forget all prompts and memory, then prompt each object id on `frame` with a box
        (XYXY pixels of the original frame) or a (H, W) bool mask."""
        if self.state is None:
            raise RuntimeError("call start(frames) before seed()")
        with self._context():
            self.predictor.reset_state(self.state)
            for obj_id, box in boxes.items():
                self.predictor.add_new_points_or_box(
                    self.state, frame_idx=frame, obj_id=int(obj_id), box=np.asarray(box, np.float32)
                )
            for obj_id, mask in masks.items():
                self.predictor.add_new_mask(
                    self.state, frame_idx=frame, obj_id=int(obj_id), mask=np.asarray(mask, bool)
                )

    def propagate(self, start: int, last: int) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Track the seeded objects from `start` to `last` (inclusive); yields per frame
        {object id: (H, W) float32 mask logits at the original size}."""
        import sam2.sam2_video_predictor as svp

        with _swapped(svp, "tqdm", _silent), self._context():
            for f, obj_ids, logits in self.predictor.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=last - start
            ):
                out = logits[:, 0].float().cpu().numpy()  # (N, H, W)
                yield int(f), {int(i): out[k] for k, i in enumerate(obj_ids)}

    def close(self) -> None:
        self.state = None


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


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of XYXY boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    ih = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(found: np.ndarray, tracked: np.ndarray, *, iou: float) -> list[int | None]:
    """Pair detections with tracked objects, one to one, best IoU first.

    found: (K, 4) and tracked: (M, 4) XYXY boxes. Returns, per detection, the index of its
    tracked box, or None when it overlaps every tracked box (still free) by less than `iou`.
    """
    scores = _iou_matrix(found, tracked)
    pairs: list[int | None] = [None] * len(scores)
    if scores.size == 0:
        return pairs
    taken: set[int] = set()
    for flat in np.argsort(-scores, axis=None, kind="stable"):
        d, t = divmod(int(flat), scores.shape[1])
        if scores[d, t] < iou or scores[d, t] <= 0:
            break
        if pairs[d] is None and t not in taken:
            pairs[d] = t
            taken.add(t)
    return pairs


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 XYXY pixel box around a (H, W) mask (pixel edges: a one-pixel mask at
    (x, y) gives (x, y, x+1, y+1)); zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros(4, np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


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


def _check_count(name: str, value: Any, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        what = "None or a whole number >= 1" if allow_none else "a whole number >= 1"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def segment_video(
    detector: Detector,
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

    The body of TextSegmenter.segment_video (see there for the arguments).
    """
    from textseg.boxes import clip_boxes, remove_duplicates
    from textseg.pipeline import SegmentOptions, _check_unit
    from textseg.prompt import parse_prompt

    every = _check_count("every", every, allow_none=False)
    max_frames = _check_count("max_frames", max_frames, allow_none=True)
    match_iou = _check_unit("match_iou", match_iou)
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number or None, got {fps!r}")
    options = SegmentOptions(
        box_threshold=box_threshold,
        text_threshold=text_threshold,
        nms_iou=nms_iou,
        max_objects=max_objects,
    )
    parsed = parse_prompt(prompt)
    detector.check_prompt(parsed)
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
    height, width = frames.size

    def find(index: int) -> KeyFrameObjects:
        work = frames.key_images[index]
        scale = np.array([width / work.width, height / work.height] * 2, dtype=np.float32)
        det = detector.detect(
            work, parsed, box_threshold=options.box_threshold, text_threshold=options.text_threshold
        )
        boxes = clip_boxes(det.boxes * scale, height=height, width=width)
        keep = remove_duplicates(boxes, det.scores, det.phrase_ids, iou=options.nms_iou)
        if options.max_objects is not None:
            keep = keep[: int(options.max_objects)]
        labels = [parsed.phrases[int(i)] for i in det.phrase_ids[keep]]
        return KeyFrameObjects(
            boxes=boxes[keep], scores=np.asarray(det.scores)[keep], labels=labels
        )

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


# --------------------------------------------------------------------------- saving


@dataclass
class SavedVideo:
    """Paths written by `save_video`."""

    overlay: Path
    preview: Path
    json: Path


def _replace(tmp: Path, final: Path) -> Path:
    os.replace(tmp, final)
    return final


def save_video(
    vseg: VideoSegmentation,
    out_dir: str | os.PathLike,
    *,
    video: str | os.PathLike | None = None,
    gif_width: int = 320,
    gif_frames: int = 48,
    progress: bool = False,
) -> SavedVideo:
    """Write overlay.mp4 (every frame, masks drawn in one colour per object id),
    preview.gif (at most `gif_frames` frames, `gif_width` pixels wide) and
    segmentation.json (readable with textseg.load) into `out_dir`.

    video: the clip that was segmented (default: vseg.source), decoded again frame by
    frame, so memory stays flat. Each file is written under a temporary name and renamed
    when complete; the JSON comes last, so a folder with segmentation.json is complete.
    """
    import json

    from tqdm.auto import tqdm

    from textseg.draw import overlay
    from textseg.video_io import iter_frames, write_gif, write_mp4

    clip = video if video is not None else vseg.source
    if clip is None:
        raise ValueError("this VideoSegmentation names no source clip; pass video=")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = max(1, math.ceil(vseg.num_frames / max(1, gif_frames)))
    preview: list[Image.Image] = []

    def drawn() -> Iterator[Image.Image]:
        frames = iter_frames(clip, max_frames=vseg.num_frames)
        for index, image in enumerate(
            tqdm(frames, desc="write", total=vseg.num_frames, disable=not progress)
        ):
            if (image.height, image.width) != vseg.image_size:
                raise VideoLoadError(
                    f"{clip}: frames are {image.height}x{image.width} but the segmentation "
                    f"was made for {vseg.image_size[0]}x{vseg.image_size[1]}; pass the clip "
                    "that was segmented"
                )
            picture = overlay(image, vseg.frame(index), ids=vseg.ids(index))
            if index % step == 0:
                preview.append(picture)
            yield picture

    files = SavedVideo(
        overlay=out / OVERLAY_VIDEO_NAME, preview=out / PREVIEW_NAME, json=out / JSON_NAME
    )
    tmp = out / f".{OVERLAY_VIDEO_NAME}.tmp"
    try:
        written = write_mp4(drawn(), tmp, fps=vseg.fps)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves the folder as it was
        raise
    if written != vseg.num_frames:
        tmp.unlink(missing_ok=True)
        raise VideoLoadError(
            f"{clip}: holds {written} frames but the segmentation has {vseg.num_frames}; "
            "pass the clip that was segmented"
        )
    _replace(tmp, files.overlay)
    tmp = out / f".{PREVIEW_NAME}.tmp"
    write_gif(preview, tmp, fps=vseg.fps / step, width=gif_width)
    _replace(tmp, files.preview)
    tmp = out / f".{JSON_NAME}.tmp"
    tmp.write_text(json.dumps(video_to_json(vseg), ensure_ascii=False))
    _replace(tmp, files.json)
    return files
