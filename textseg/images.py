"""Image loading: any path, bytes, PIL image or numpy array → an RGB PIL image as displayed.

Handles what users upload: EXIF-rotated JPEGs (turned upright, so masks line up with the
picture people see), RGBA/LA/palette transparency (composited on white), grayscale, CMYK,
16-bit and float images (rescaled to 8 bits). Refuses, with a one-line ImageLoadError that
names the image: missing, empty, corrupt or truncated files, non-images, and images over
PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from textseg.errors import ImageLoadError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "URL_MAX_BYTES",
    "URL_TIMEOUT",
    "ImageInput",
    "describe",
    "list_images",
    "load_image",
    "read_source",
    "working_copy",
]

ImageInput = Union[str, os.PathLike, bytes, "Image.Image", np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
URL_MAX_BYTES = 50_000_000  # an image URL larger than this is refused (a 12 MP photo is 3-12 MB)
URL_TIMEOUT = 30.0  # seconds without an answer before a URL download gives up


def describe(source: object) -> str:
    """A short name for an image source, for messages and output folders."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    name = getattr(source, "filename", "")
    return name or f"<{type(source).__name__}>"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder` (by suffix, case-insensitive), sorted by name."""
    root = Path(folder)
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_pixels(width: int, height: int, name: str) -> None:
    from PIL import Image

    if width < 1 or height < 1:
        raise ImageLoadError(f"{name}: the image is empty ({width}x{height} pixels)")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageLoadError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the "
            f"decompression-bomb limit of {limit:,}; downscale the image first (or, if you "
            "trust it, raise PIL.Image.MAX_IMAGE_PIXELS)"
        )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Rescale 16-bit / 32-bit integer, float or bool pixel values to uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        a = np.nan_to_num(array.astype(np.float64))
        if a.size and a.max() > 1.0:  # already 0-255 (or more)
            scale = 255.0 / a.max() if a.max() > 255.0 else 1.0
        else:
            scale = 255.0
        return np.clip(a * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = int(array.max()) if array.size else 0
        bits = 8 if top <= 255 else 16 if top <= 65535 else 32
        return (array.astype(np.float64) * (255.0 / (2**bits - 1))).round().astype(np.uint8)
    raise ImageLoadError(f"pixel type {array.dtype} is not supported; use uint8, uint16 or float")


def _to_rgb(img: Image.Image, name: str) -> Image.Image:
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    # 16/32-bit integer or float single-channel images (I;16, I;16B, I, F, ...).
    try:
        array = np.asarray(img)
    except Exception as err:  # PIL raises various types for exotic modes
        raise ImageLoadError(f"{name}: image mode {mode!r} cannot be converted to RGB") from err
    return _array_to_image(array, name)


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(
            f"{name}: an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}"
        )
    _check_pixels(a.shape[1], a.shape[0], name)
    a = np.ascontiguousarray(_to_uint8(a))
    if a.ndim == 2:
        return Image.fromarray(a, mode="L").convert("RGB")
    if a.shape[2] == 4:
        return _to_rgb(Image.fromarray(a, mode="RGBA"), name)
    return Image.fromarray(a, mode="RGB")


def _open_bytes(data: bytes, name: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_pixels(img.width, img.height, name)
            img.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(
            f"{name}: over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} "
            "pixels; downscale the image first"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(
            f"{name}: not an image PIL can read; upload a JPEG, PNG or WebP file"
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{name}: corrupt or truncated image ({err})") from err
    return _to_rgb(_upright(img), name)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as image viewers and browsers do."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        return img


def load_image(source: ImageInput, *, name: str | None = None) -> Image.Image:
    """Load `source` as an RGB PIL image, upright as displayed.

    source: a path, the file's bytes, a PIL image or a numpy array ((H, W), (H, W, 1),
        (H, W, 3) RGB or (H, W, 4) RGBA; uint8, uint16, float in [0, 1] or bool).
    name: how to call the image in error messages (default: the path or a description).
    Raises ImageLoadError with a one-line message that names the image.
    """
    from PIL import Image

    label = name or describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"{label}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{label}: is a folder, not an image")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageLoadError(f"{label}: cannot be read ({err.strerror or err})") from err
        return _open_bytes(data, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(source), label)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, label)
        try:
            source.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageLoadError(f"{label}: corrupt or truncated image ({err})") from err
        return _to_rgb(_upright(source), label)
    if isinstance(source, np.ndarray):
        return _array_to_image(source, label)
    raise ImageLoadError(
        f"{label}: expected a path, bytes, a PIL image or a numpy array, "
        f"got {type(source).__name__}"
    )


def read_source(
    source: str | os.PathLike,
    *,
    max_bytes: int = URL_MAX_BYTES,
    timeout: float = URL_TIMEOUT,
) -> tuple[str, bytes]:
    """(file name, bytes) of an image given as a path or an http(s) URL, as typed in a box.

    A path may be relative to the working folder (on Colab /content, where the file browser
    uploads to), start with ~, or lie on a mounted Google Drive (/content/drive/MyDrive/...).
    A URL is downloaded with a `timeout` (seconds) and refused over `max_bytes`. Raises
    ImageLoadError with one line that names the path or URL and says what to do.
    """
    text = os.fspath(source).strip().strip("\"'").strip()
    if not text:
        raise ImageLoadError("type a file path or an http(s) URL first")
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return _download(text, max_bytes=max_bytes, timeout=timeout)
    if scheme:
        raise ImageLoadError(f"{text}: only http(s) URLs and file paths are read, not {scheme}:")
    path = Path(text).expanduser()
    if not path.exists():
        hint = "check the path (the file browser's 'Copy path' gives it)"
        if text.startswith("/content/drive") and not Path("/content/drive/MyDrive").is_dir():
            hint = "Google Drive is not mounted: run drive.mount('/content/drive') first"
        raise ImageLoadError(f"{text}: no such file; {hint}")
    if path.is_dir():
        raise ImageLoadError(f"{text}: is a folder, not an image")
    try:
        return path.name, path.read_bytes()
    except OSError as err:
        raise ImageLoadError(f"{text}: cannot be read ({err.strerror or err})") from err


def _download(url: str, *, max_bytes: int, timeout: float) -> tuple[str, bytes]:
    import urllib.error
    import urllib.parse
    import urllib.request

    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    limit = f"{max_bytes / 1e6:.0f} MB"
    request = urllib.request.Request(url, headers={"User-Agent": "textseg"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            length = answer.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ImageLoadError(
                    f"{url}: {int(length) / 1e6:.1f} MB, over the {limit} limit for URLs; "
                    "download it yourself and give its path"
                )
            data = answer.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise ImageLoadError(f"{url}: the server answered {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError):
            raise ImageLoadError(f"{url}: no answer within {timeout:g} s; try again") from err
        raise ImageLoadError(f"{url}: cannot be downloaded ({reason})") from err
    except TimeoutError as err:
        raise ImageLoadError(f"{url}: no answer within {timeout:g} s; try again") from err
    except (OSError, ValueError) as err:  # a reset connection, a malformed URL
        raise ImageLoadError(f"{url}: cannot be downloaded ({err})") from err
    if len(data) > max_bytes:
        raise ImageLoadError(
            f"{url}: over the {limit} limit for URLs; download it yourself and give its path"
        )
    return name, data


def working_copy(image: Image.Image, *, max_side: int) -> Image.Image:
    """`image` downscaled so that its longer side is at most `max_side` pixels.

    Both models resize their input to about 1000 pixels anyway; working on a smaller copy
    of a very large photo saves memory and time without changing what they see. Returns
    `image` itself when it is small enough.
    """
    from PIL import Image

    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = longest / max_side
    size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
