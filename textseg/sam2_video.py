"""SAM 2's video adapter: sam2's SAM2VideoPredictor over the image model's own weights,
fed the frames decoded by textseg.video and prompted with boxes or masks per object id.

Two of sam2's module names are replaced while it runs, and only then (`_swapped`): its frame
loader (`load_video_frames`, which would read the whole clip as float32 on the device) by
one that hands over the frames already decoded, and its per-call `tqdm` bar by nothing
(textseg keeps one bar of its own). Both come back when the last block that set them ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from textseg.parts import VideoFrames

__all__ = ["Sam2VideoPropagator", "video_predictor_from"]


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
