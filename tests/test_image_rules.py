"""One image rule per package, as each README states it: the same odd images (made here) go
through vitcifar's reader (``vitcifar.images.read_image``, used by training, evaluation and
prediction) and textseg's (``textseg.images.load_image``), and each result is checked against that
package's own rule. The packages differ on purpose where their users differ (textseg shows and
segments what a person sees; vitcifar feeds a classifier the stored colours)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("textseg.images")  # the packages install apart; both are here in CI
from textseg.errors import ImageLoadError  # noqa: E402
from textseg.images import load_image  # noqa: E402
from vitcifar.images import DataError, read_image  # noqa: E402

RED, BLUE = (230, 20, 20), (20, 20, 230)


# ----------------------------------------------------------------------------- the stated rules


def on_white(rgb: tuple[int, ...], alpha: int) -> tuple[float, ...]:
    """textseg: transparency composited on white."""
    a = alpha / 255
    return tuple(c * a + 255 * (1 - a) for c in rgb)


def vitcifar_16bit(value: int) -> float:
    """vitcifar: 16-bit images are scaled from 0..65535, whatever their content."""
    return round(value * 255 / 65535)


def textseg_integer(value: int, top: int) -> float:
    """textseg: integer pixels are scaled by the smallest of 8, 16, 32 bits that holds the
    image's largest value (a 16-bit image whose values are all <= 255 is read as 8-bit)."""
    bits = 8 if top <= 255 else 16 if top <= 65535 else 32
    return round(value * 255 / (2**bits - 1))


def vitcifar_float(value: float) -> float:
    """vitcifar: float pixels are on [0, 1] (anything else is refused)."""
    return round(value * 255)


def textseg_float(value: float, top: float) -> float:
    """textseg: floats <= 1 are on [0, 1]; above 1 they are 0..255, scaled down when above 255."""
    if top <= 1:
        return round(value * 255)
    return round(value * (255 / top if top > 255 else 1))


# ----------------------------------------------------------------------------- the odd images


@dataclass
class Refused:
    """The reader raises its package's error, with ``words`` in the message."""

    words: str


@dataclass
class Upright:
    """The EXIF orientation was applied: the stored left half (red) is on top."""


def _save(tmp_path, im: Image.Image, name: str, **kw) -> Any:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def _palette_with_transparency(tmp_path):
    im = Image.new("P", (40, 30), 0)
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    return _save(tmp_path, im, "palette.png", transparency=0)


def _phone_photo(tmp_path):
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32], a[:, 32:] = RED, BLUE  # as stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left edge goes on top
    return _save(tmp_path, Image.fromarray(a), "phone.jpg", exif=exif, quality=95)


def _grey16(tmp_path, value: int, name: str):
    return _save(tmp_path, Image.fromarray(np.full((20, 30), value, np.uint16)), name)


def _float_tiff(tmp_path, value: float, name: str):
    return _save(tmp_path, Image.fromarray(np.full((20, 30), value, np.float32)), name)


def _png(tmp_path, side: int):
    return _save(tmp_path, Image.new("RGB", (side, side), (90, 120, 150)), f"square{side}.png")


LIMIT = 1000  # PIL.Image.MAX_IMAGE_PIXELS for the pixel-limit rows: 40 x 40 is 1.6x, 50 x 50 2.5x

# id, make(tmp_path) -> source, pixel limit, vitcifar's result, textseg's result. A result is a
# mean RGB colour (within 1), Refused(words) or Upright().
CASES: list[tuple[str, Callable, int | None, Any, Any]] = [
    (
        "RGBA half transparent",
        lambda p: _save(p, Image.new("RGBA", (40, 30), (200, 40, 40, 60)), "rgba.png"),
        None,
        (200, 40, 40),  # vitcifar: alpha dropped
        on_white((200, 40, 40), 60),
    ),
    (
        "LA",
        lambda p: _save(p, Image.new("LA", (40, 30), (90, 10)), "la.png"),
        None,
        (90, 90, 90),
        on_white((90, 90, 90), 10),
    ),
    (
        "palette with a transparent colour",
        _palette_with_transparency,
        None,
        (10, 20, 30),
        (255,) * 3,
    ),
    (
        "CMYK",
        lambda p: _save(p, Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "cmyk.jpg", quality=100),
        None,
        (0, 255, 255),
        (0, 255, 255),
    ),
    (
        "16-bit grey",
        lambda p: _grey16(p, 128 * 257, "g16.png"),
        None,
        (vitcifar_16bit(128 * 257),) * 3,
        (textseg_integer(128 * 257, 128 * 257),) * 3,
    ),
    (
        "16-bit grey, all values <= 255",
        lambda p: _grey16(p, 200, "dark16.png"),
        None,
        (vitcifar_16bit(200),) * 3,
        (textseg_integer(200, 200),) * 3,
    ),
    (
        "float grey on [0, 1]",
        lambda p: _float_tiff(p, 0.5, "f05.tif"),
        None,
        (vitcifar_float(0.5),) * 3,
        (textseg_float(0.5, 0.5),) * 3,
    ),
    (
        "float grey above 1",
        lambda p: _float_tiff(p, 200.0, "f200.tif"),
        None,
        Refused("float pixel values must be on the [0, 1] scale"),
        (textseg_float(200.0, 200.0),) * 3,
    ),
    (
        "float RGB array on [0, 1]",
        lambda p: np.full((8, 8, 3), 0.25, np.float32),
        None,
        (vitcifar_float(0.25),) * 3,
        (textseg_float(0.25, 0.25),) * 3,
    ),
    (
        "float RGB array above 255",
        lambda p: np.full((8, 8, 3), 300.0, np.float32),
        None,
        Refused("float pixel values must be on the [0, 1] scale"),
        (textseg_float(300.0, 300.0),) * 3,
    ),
    ("EXIF orientation", _phone_photo, None, Upright(), Upright()),
    ("under the pixel limit", lambda p: _png(p, 30), LIMIT, (90, 120, 150), (90, 120, 150)),
    (
        "1x-2x the pixel limit (PIL only warns)",
        lambda p: _png(p, 40),
        LIMIT,
        Refused("too large to decode safely"),
        Refused("decompression-bomb limit"),
    ),
    (
        "over 2x the pixel limit (PIL refuses)",
        lambda p: _png(p, 50),
        LIMIT,
        Refused("too large to decode safely"),
        Refused("decompression-bomb limit"),
    ),
    (
        "a PIL image 1x-2x the pixel limit",
        lambda p: Image.new("RGB", (40, 40), (90, 120, 150)),
        LIMIT,
        Refused("too large to decode safely"),
        Refused("decompression-bomb limit"),
    ),
]

READERS = {
    "vitcifar": (read_image, DataError),
    "textseg": (load_image, ImageLoadError),
}


@pytest.mark.parametrize("package", list(READERS))
@pytest.mark.parametrize(
    ("make", "limit", "vitcifar_rule", "textseg_rule"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_reader_follows_its_packages_rule(
    package, make, limit, vitcifar_rule, textseg_rule, tmp_path, monkeypatch
):
    read, error = READERS[package]
    rule = vitcifar_rule if package == "vitcifar" else textseg_rule
    source = make(tmp_path)
    if limit is not None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    if isinstance(rule, Refused):
        with pytest.raises(error) as err:
            read(source)
        assert rule.words in str(err.value) and "\n" not in str(err.value)
        return
    image = read(source)
    assert image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.float64)
    if isinstance(rule, Upright):
        assert image.size == (32, 64)  # width 32, height 64: turned
        top, bottom = pixels[:24].mean((0, 1)), pixels[-24:].mean((0, 1))
        np.testing.assert_allclose(top, RED, atol=12)
        np.testing.assert_allclose(bottom, BLUE, atol=12)
        return
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(0), rule, atol=1)


@pytest.mark.parametrize("package", list(READERS))
def test_no_pixel_limit_when_pil_s_check_is_off(package, tmp_path, monkeypatch):
    read, _ = READERS[package]
    source = _png(tmp_path, 50)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert read(source).size == (50, 50)


def test_training_evaluation_and_prediction_share_vitcifar_s_rule(tmp_path):
    """The ImageFolder decoder of training and predict's preparation are read_image + resize."""
    import torch

    from vitcifar.data import decode_training_image
    from vitcifar.images import decode_image
    from vitcifar.predict import prepare_image

    for _, make, limit, rule, _ in CASES:
        if limit is not None or isinstance(rule, Refused):
            continue
        source = make(tmp_path)
        expected = np.array(read_image(source).resize((16, 16), Image.BICUBIC))
        assert np.array_equal(decode_image(source, 16), expected)
        assert torch.equal(
            prepare_image(source, image_size=16), torch.from_numpy(expected).permute(2, 0, 1)
        )
        if not isinstance(source, np.ndarray):
            assert np.array_equal(decode_training_image(source, 16), expected)
