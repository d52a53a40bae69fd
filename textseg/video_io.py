"""Video in and out: decode a clip (a video file or a folder of frames), write MP4 and GIF.

Decoding and encoding use PyAV (`av` on PyPI): FFmpeg's libraries bundled in a wheel for
Linux, macOS and Windows, so nothing is compiled and no `ffmpeg` binary is needed; frames
come back in-process one at a time (no pipe to parse), and a broken file raises a typed
FFmpeg error that is turned into a one-line VideoLoadError here. The wheels include the
H.264 encoder (libx264) for the overlay MP4; GIFs are written with Pillow.

A folder of frames is read in natural order (frame2.png before frame10.png); its images go
through `textseg.load_image` (EXIF orientation, transparency, 16-bit...) and must all
have the size of the first one, and so must a video file's frames. A video file's frames
are turned upright by its display rotation (phone clips), as players and FFmpeg show them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from textseg.errors import ImageLoadError, VideoLoadError
from textseg.images import list_images, load_image

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "is_video_file",
    "iter_frames",
    "probe_video",
    "write_gif",
    "write_mp4",
]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv")
DEFAULT_FPS = 25.0  # a folder of frames has no frame rate of its own

_HINT = "use an MP4, MOV, MKV, WebM or AVI file, or a folder of image frames"


def is_video_file(path: str | os.PathLike) -> bool:
    """True for a path whose suffix is one of VIDEO_SUFFIXES (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a clip before decoding it.

    size: (H, W) of its frames in pixels, as stored (before the display rotation that
    iter_frames applies: a phone clip filmed upright reads W x H here). fps: frames per
    second. name: for messages.
    frames: the container's frame count, or None when it does not say (it may be wrong).
    """

    size: tuple[int, int]
    fps: float
    name: str
    frames: int | None = None


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> list[Path]:
    return sorted(list_images(folder), key=_natural_key)


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "strerror", None) or err).strip()  # FFmpeg's reason, no path
    return text.splitlines()[0] if text else type(err).__name__


def _check_frame_pixels(width: int, height: int, name: str) -> None:
    from PIL import Image

    if width < 1 or height < 1:
        raise VideoLoadError(f"{name}: its frames are empty ({width}x{height} pixels)")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise VideoLoadError(
            f"{name}: {width}x{height} frames = {width * height:,} pixels each, over the "
            f"limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); downscale the video first"
        )


def _av():
    """PyAV, or one line saying how to get it (a folder of frames needs none)."""
    try:
        import av
    except ImportError as err:
        raise VideoLoadError(
            "video files are read and written with PyAV, which is not installed: "
            "pip install av (or pass a folder of image frames instead)"
        ) from err
    return av


def _open(path: Path):  # -> (container, stream)
    av = _av()

    name = str(path)
    if path.stat().st_size == 0:
        raise VideoLoadError(f"{name}: the file is empty (0 bytes)")
    try:
        container = av.open(name)
    except av.FFmpegError as err:
        raise VideoLoadError(
            f"{name}: not a video FFmpeg can read ({_first_line(err)}); {_HINT}"
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoLoadError(
            f"{name}: holds no video stream (a zero-frame or audio-only file); {_HINT}"
        )
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _check_source(source: str | os.PathLike) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise VideoLoadError(f"{source}: no such file or folder")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        # Let FFmpeg try any file, but say clearly what an image is.
        from textseg.images import IMAGE_SUFFIXES

        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise VideoLoadError(
                f"{source}: is an image, not a video; segment it with segment(), or pass "
                "the folder holding the frames"
            )
    return path


def probe_video(source: str | os.PathLike, *, fps: float | None = None) -> VideoInfo:
    """Size, frame rate and (if the container says) frame count of a clip, without decoding.

    source: a video file or a folder of frames. fps: the rate of a folder of frames
    (default 25); for a file it overrides the container's rate.
    """
    path = _check_source(source)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoLoadError(f"{source}: the folder holds no image frames (.jpg, .png, ...)")
        try:
            first = load_image(files[0])
        except ImageLoadError as err:
            raise VideoLoadError(f"{source}: first frame unreadable: {err}") from err
        return VideoInfo(
            size=(first.height, first.width),
            fps=float(fps or DEFAULT_FPS),
            name=str(source),
            frames=len(files),
        )
    container, stream = _open(path)
    try:
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        rate = stream.average_rate or stream.guessed_rate
        count = int(stream.frames) if stream.frames else None
    finally:
        container.close()
    if width and height:
        _check_frame_pixels(width, height, str(source))
    return VideoInfo(
        size=(height, width),
        fps=float(fps or (float(rate) if rate else DEFAULT_FPS)),
        name=str(source),
        frames=count,
    )


def _upright(frame) -> Image.Image:
    """A decoded av.VideoFrame as an RGB PIL image the way players show it: turned by the
    stream's display rotation (a phone clip filmed upright is stored landscape, with a
    rotation of 90 or -90 degrees), to the nearest quarter turn, as FFmpeg's autorotate does."""
    from PIL import Image

    image = frame.to_image()  # RGB24
    quarter = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise
    if not quarter:
        return image
    turns = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    return image.transpose(turns[quarter - 1])


def iter_frames(
    source: str | os.PathLike, *, max_frames: int | None = None
) -> Iterator[Image.Image]:
    """Yield the clip's frames in order as RGB PIL images at their full size, upright (a
    video file's display rotation applied, as players show it).

    Raises VideoLoadError (one line, naming the file and the frame) for a missing, empty,
    corrupt or unsupported file, a folder without frames, frames of different sizes or
    frames over PIL's pixel limit. A clip that yields no frame at all is an error too.
    A folder of frames needs no PyAV; a video file does.
    """
    path = _check_source(source)
    count = 0
    size: tuple[int, int] | None = None
    if path.is_dir():
        files = _frame_files(path)
        for file in files[:max_frames]:
            try:
                image = load_image(file)
            except ImageLoadError as err:
                raise VideoLoadError(f"{source}: frame {count} unreadable: {err}") from err
            if size is None:
                size = (image.height, image.width)
            elif (image.height, image.width) != size:
                raise VideoLoadError(
                    f"{file}: frame {count} is {image.height}x{image.width} (H x W) but the "
                    f"first frame is {size[0]}x{size[1]}; all frames must have one size"
                )
            count += 1
            yield image
    else:
        av = _av()
        container, stream = _open(path)
        try:
            decoded = container.decode(stream)
            while max_frames is None or count < max_frames:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.FFmpegError as err:
                    raise VideoLoadError(
                        f"{source}: corrupt video, decoding failed at frame {count} "
                        f"({_first_line(err)}); {_HINT}"
                    ) from err
                if size is None:  # checked as stored, before any pixel is converted
                    _check_frame_pixels(frame.width, frame.height, str(source))
                    size = (frame.height, frame.width)
                elif (frame.height, frame.width) != size:
                    raise VideoLoadError(
                        f"{source}: frame {count} is {frame.height}x{frame.width} (H x W) but "
                        f"the first frame is {size[0]}x{size[1]}; all frames must have one size "
                        "(re-encode the clip at one size, e.g. ffmpeg -vf scale=W:H)"
                    )
                count += 1
                yield _upright(frame)
        finally:
            container.close()
    if count == 0:
        where = "the folder holds no image frames" if path.is_dir() else "it holds no frames"
        raise VideoLoadError(f"{source}: {where} (zero-frame clip); {_HINT}")


def _even(pixels: np.ndarray) -> np.ndarray:
    """Pad an (H, W, 3) frame by one edge pixel where H or W is odd (H.264 needs even)."""
    h, w = pixels.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return pixels
    return np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(
    frames: Iterable[Image.Image | np.ndarray], path: str | os.PathLike, *, fps: float
) -> int:
    """Encode RGB frames (PIL images or (H, W, 3) uint8 arrays, one size) as H.264 MP4
    (yuv420p, plays in browsers and on phones; mpeg4 where libx264 is missing).
    Returns the number of frames written."""
    av = _av()

    if not fps or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            pixels = _even(np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)))
            if stream is None:
                try:
                    stream = container.add_stream("libx264", rate=rate)
                except (av.FFmpegError, ValueError):  # an FFmpeg build without x264
                    stream = container.add_stream("mpeg4", rate=rate)
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt = "yuv420p"
            video_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))  # flush the encoder
    return count


def write_gif(
    frames: list[Image.Image], path: str | os.PathLike, *, fps: float, width: int = 320
) -> None:
    """Write RGB frames as a looping GIF, scaled to at most `width` pixels wide."""
    from PIL import Image

    if not frames:
        raise ValueError("write_gif needs at least one frame")
    w, h = frames[0].size
    scale = min(1.0, width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = [f.resize(size, Image.Resampling.BILINEAR) if f.size != size else f for f in frames]
    small[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=small[1:],
        duration=max(20, round(1000 / fps)),
        loop=0,
        optimize=False,
    )
