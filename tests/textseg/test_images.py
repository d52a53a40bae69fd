"""Image loading: every bad input gets a one-line error naming it; odd formats convert."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from textseg.errors import ImageLoadError
from textseg.images import list_images, load_image, working_copy


def _rgb(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _one_line_error(source, match, **kwargs):
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(source, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_empty_folder_and_non_image(tmp_path):
    assert "nope.jpg" in _one_line_error(tmp_path / "nope.jpg", "no such file")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty.png" in _one_line_error(empty, r"empty \(0 bytes\)")
    assert str(tmp_path) in _one_line_error(tmp_path, "folder")
    text = tmp_path / "notes.png"
    text.write_text("these are not pixels")
    assert "notes.png" in _one_line_error(text, "not an image")
    assert "upload.bin" in _one_line_error(b"\x00\x01garbage", "not an image", name="upload.bin")
    _one_line_error(12345, "expected a path")


def test_corrupt_and_truncated_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG")
    data = buf.getvalue()
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    assert "cut.jpg" in _one_line_error(truncated, "corrupt or truncated")
    png = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(png, format="PNG")
    broken = bytearray(png.getvalue())
    broken[60:200] = bytes(140)  # zero the compressed pixel data
    bad = tmp_path / "broken.png"
    bad.write_bytes(bytes(broken))
    assert "broken.png" in _one_line_error(bad, "corrupt or truncated")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "YCbCr"])
def test_modes_convert_to_rgb(tmp_path, mode):
    path = tmp_path / ("img.jpg" if mode in ("CMYK", "YCbCr") else "img.png")
    Image.fromarray(_rgb()).convert(mode).save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (32, 24)


@pytest.mark.parametrize(
    ("dtype", "suffix"), [(np.uint16, ".png"), (np.int32, ".tif"), (np.float32, ".tif")]
)
def test_high_bit_depth_is_rescaled_not_clipped(tmp_path, dtype, suffix):
    gray = np.random.default_rng(1).integers(0, 65536, (24, 32)).astype(dtype)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode in ("I;16", "I", "F")
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (32, 24)
    arr = np.asarray(out)[..., 0].astype(float)
    assert arr.max() > 200 and arr.min() < 50 and len(np.unique(arr)) > 100
    np.testing.assert_allclose(arr, gray / 257.0, atol=1.0)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    out = np.asarray(load_image(rgba))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 3].tolist() == [255, 255, 255]
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 0
    out = np.asarray(load_image(pal))
    assert out[0, 0].tolist() == [10, 200, 10] and out[2, 2].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((5, 6), np.uint8),
        np.zeros((5, 6, 1), np.uint8),
        np.full((5, 6, 3), 40000, np.uint16),
        np.full((5, 6, 3), 0.5, np.float32),
        np.ones((5, 6), bool),
    ],
    ids=["gray", "gray1", "uint16", "float01", "bool"],
)
def test_arrays(array):
    out = load_image(array)
    assert out.mode == "RGB" and out.size == (6, 5)
    value = np.asarray(out)[0, 0, 0]
    expected = {np.uint8: 0, np.uint16: round(40000 / 257), np.float32: 128}.get(
        array.dtype.type, 255
    )
    assert abs(int(value) - expected) <= 1


def test_bad_array_shape():
    _one_line_error(np.zeros((5, 6, 2), np.uint8), r"\(H, W, 3\)")


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # displayed upright: 20 wide, 40 tall
    arr = np.asarray(out).astype(int)
    assert arr[2, 10, 0] > 200 and arr[2, 10, 2] < 60  # the left (red) half is now on top
    assert arr[37, 10, 2] > 200 and arr[37, 10, 0] < 60
    # a PIL image opened by the caller is turned upright the same way
    assert load_image(Image.open(path)).size == (20, 40)


def test_one_pixel_image():
    assert load_image(np.zeros((1, 1, 3), np.uint8)).size == (1, 1)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_rgb(40, 50)).save(path)  # 2000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # over the limit: PIL warns
    assert "big.png" in _one_line_error(path, "decompression-bomb")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: PIL raises
    _one_line_error(path, "decompression-bomb")
    _one_line_error(_rgb(40, 50), "decompression-bomb")


def test_working_copy_and_list_images(tmp_path):
    big = Image.new("RGB", (3000, 1000))
    small = working_copy(big, max_side=600)
    assert small.size == (600, 200)
    assert working_copy(small, max_side=600) is small
    for name in ["b.PNG", "a.jpg", "c.txt", "d.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "d.webp"]
