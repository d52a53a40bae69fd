"""vitcifar's one image rule: every image that training (ImageFolder trees), evaluation and
prediction read goes through ``read_image`` (any source -> upright 8-bit RGB) and
``decode_image`` (then the model's size), so a picture gives the same pixels in all three.

The rule (README, "Images: the reading rule"):

- **Sources:** a path or the file's bytes (decoded fully with PIL), a PIL image of any mode, a
  numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), or a torch tensor (C, H, W) with C in
  1, 3, 4 (or (H, W)).
- **Pixel limit:** a file or PIL image with more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is
  refused, also between 1x and 2x the limit, where PIL itself only warns. ``None`` turns the check
  off, as in PIL. Arrays and tensors are already decoded: no limit.
- **EXIF orientation:** files and PIL images are turned upright (a broken EXIF block is ignored).
- **Alpha:** dropped; the colour channels are kept as stored (not composited). "LA" -> "L",
  premultiplied "La" through "LA". Palette images take their palette's colours; their
  transparency is dropped too.
- **16-bit:** PIL "I;16*" and "I" images, and uint16 arrays, are scaled from 0..65535 to 0..255
  (PIL's own ``convert`` would clip them to 255). Other integer arrays must lie in 0..255; bool
  is 0 / 255.
- **Float:** PIL "F" images and float arrays must be on the [0, 1] scale (x 255, rounded);
  values outside it, NaN or infinity are refused with the range found.
- **Resize:** bicubic (PIL) to size x size, only when the size differs.

Every refusal is a ``DataError`` with one line that names the image.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageInput",
    "ImageTooLarge",
    "decode_image",
    "describe",
    "read_image",
    "to_rgb8",
]

log = logging.getLogger(__name__)

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class DataError(ValueError):
    """A data set or image that cannot be used as given; the message names the path and the fix."""


class ImageTooLarge(DataError):
    """An image over ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb)."""


def describe(source: object, index: int = 0) -> str:
    """A short name for an image in tables and messages: its path, or ``<kind index>``."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "filename", "")  # a PIL image opened from a file
    return name or f"<{type(source).__name__} {index}>"


def _check_pixels(width: int, height: int, name: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS  # None: the user turned PIL's check off
    if limit is not None and width * height > limit:
        raise ImageTooLarge(
            f"{name} is too large to decode safely: {width}x{height} = {width * height:,} pixels "
            f"is over the decompression bomb limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); "
            "downscale it, or raise the limit if you trust the file"
        )


def _open(source: str | os.PathLike | bytes, name: str) -> Image.Image:
    """Open and fully decode an image file (or its bytes); errors name the image."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{name}: no such file")
        if path.is_dir():
            raise DataError(f"{name}: is a folder; pass the folder to find_images() or predict()")
        try:
            source = path.read_bytes()  # no open file handle is left behind (GIF, TIFF)
        except OSError as err:
            raise DataError(f"{name}: cannot be read ({err.strerror or err})") from err
    if not source:
        raise DataError(f"{name}: the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # 1x-2x the limit: PIL warns, the check below refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(source))
            _check_pixels(im.width, im.height, name)  # before decoding a single pixel
            im.load()
        return im
    except UnidentifiedImageError as err:
        raise DataError(f"{name}: not an image that PIL can read (use JPEG, PNG, ...)") from err
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(
            f"{name} is too large to decode safely (a decompression bomb: {err})"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{name}: corrupt or truncated image ({err})") from err


def _scale_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """Pixel values -> uint8 by the rule: uint16 scaled 65535 -> 255; floats on [0, 1]; other
    integers in [0, 255]; bool 0 / 255."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.round(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise DataError(f"{name}: the image holds NaN or infinite values")
        if a.size and (a.min() < 0.0 or a.max() > 1.0):
            raise DataError(
                f"{name}: float pixel values must be on the [0, 1] scale, got "
                f"[{a.min():g}, {a.max():g}]; divide by 255, or pass uint8 for 0-255 images"
            )
        return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0 and hi <= 255:
            return a.astype(np.uint8)
        raise DataError(
            f"{name}: {a.dtype} pixel values must lie in [0, 255], got [{lo}, {hi}]; "
            "pass uint8, or uint16 for 16-bit images"
        )
    raise DataError(f"{name}: pixel type {a.dtype} is not supported; use uint8, uint16 or float")


def _array_to_pil(a: np.ndarray, name: str) -> Image.Image:
    """(H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA pixels -> a PIL image."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise DataError(
            f"{name}: an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) as a numpy array, "
            f"or (C, H, W) with C in 1, 3, 4 as a torch tensor; got shape {tuple(a.shape)}"
        )
    a = np.ascontiguousarray(_scale_to_uint8(a, name))
    return Image.fromarray(a, mode={2: "L", 3: "RGB", 4: "RGBA"}[a.shape[2] if a.ndim == 3 else 2])


def to_rgb8(im: Image.Image, name: str | None = None) -> Image.Image:
    """Any PIL image -> upright 8-bit RGB by the rule (module docstring); errors name the image."""
    name = name or describe(im)
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        log.debug("EXIF orientation unreadable; image used as stored")
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im, dtype=np.float64) * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        im = Image.fromarray(_scale_to_uint8(np.asarray(im, dtype=np.float64), name), "L")
    if im.mode == "La":  # premultiplied alpha, which PIL cannot convert to RGB directly
        im = im.convert("LA")
    try:
        return im.convert("RGB")
    except ValueError as err:
        raise DataError(f"{name}: image mode {im.mode!r} cannot be converted to RGB") from err


def read_image(image: ImageInput, *, name: str | None = None) -> Image.Image:
    """Any image source (module docstring) -> an upright 8-bit RGB PIL image.

    Raises ``DataError`` with a one-line message naming the image (``name``, else its path or a
    description).
    """
    name = name or describe(image)
    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        im = _open(bytes(image) if isinstance(image, bytearray) else image, name)
    elif isinstance(image, Image.Image):
        im = image
        _check_pixels(im.width, im.height, name)
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        elif t.ndim != 2:
            raise DataError(
                f"{name}: a torch image must be (C, H, W) with C in 1, 3, 4, or (H, W); "
                f"got shape {tuple(t.shape)}"
            )
        return _array_to_pil(t.numpy(), name).convert("RGB")
    elif isinstance(image, np.ndarray):
        return _array_to_pil(image, name).convert("RGB")
    else:
        raise DataError(
            f"{name}: expected a path, bytes, a PIL image, a numpy array or a torch tensor, "
            f"got {type(image).__name__}"
        )
    try:
        return to_rgb8(im, name)
    except (OSError, SyntaxError) as err:  # a PIL image opened lazily from a damaged file
        raise DataError(f"{name}: corrupt or truncated image ({err})") from err


def decode_image(image: ImageInput, size: int, *, name: str | None = None) -> np.ndarray:
    """The decode rule of training, evaluation and prediction: ``read_image``, then a bicubic
    resize to (size, size) when the size differs. Returns (size, size, 3) uint8."""
    im = read_image(image, name=name)
    name = name or describe(image)
    try:
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
    except (OSError, SyntaxError) as err:
        raise DataError(f"{name}: corrupt or truncated image ({err})") from err
    return np.asarray(im, dtype=np.uint8)
