"""Draw a Segmentation over its image: translucent masks, boxes and "label 0.87" tags."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from textseg.images import ImageInput, load_image

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import Image, ImageFont

    from textseg.result import Segmentation

__all__ = ["PALETTE", "color_for", "overlay"]

# Distinct, saturated colours (Tableau 10 + extras), as RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 215, 0),
    (0, 128, 128), (128, 0, 255),
)  # fmt: skip


def color_for(index: int) -> tuple[int, int, int]:
    """The colour of object `index` (cycles through PALETTE)."""
    return PALETTE[index % len(PALETTE)]


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tag colours, white on dark ones (relative luminance)."""
    r, g, b = rgb
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def _font(size: int) -> ImageFont.ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable font
    except TypeError:
        return ImageFont.load_default()


def overlay(
    image: ImageInput,
    segmentation: Segmentation,
    *,
    alpha: float = 0.45,
    ids: Sequence[int] | None = None,
) -> Image.Image:
    """The image with each object's mask tinted in its own colour, its box outlined and a
    "label 0.87" tag (the detector's score) on a solid background, so that it reads on dark
    and light images alike. Returns an RGB image of the original size.

    ids: one id per object (e.g. a video's object ids): object i is coloured by ids[i] and
    tagged "#id label 0.87", so an object keeps its colour from frame to frame."""
    from PIL import Image, ImageDraw

    rgb = load_image(image)
    h, w = segmentation.image_size
    if (rgb.height, rgb.width) != (h, w):
        raise ValueError(
            f"the image is {rgb.height}x{rgb.width} (H x W) but the segmentation was made for "
            f"{h}x{w}; pass the image that was segmented"
        )
    if ids is not None and len(ids) != len(segmentation):
        raise ValueError(f"ids has {len(ids)} entries for {len(segmentation)} objects")
    colors = [color_for(i if ids is None else int(ids[i])) for i in range(len(segmentation))]
    pixels = np.asarray(rgb, dtype=np.float32).copy()
    for i, mask in enumerate(segmentation.masks):
        color = np.asarray(colors[i], dtype=np.float32)
        pixels[mask] = pixels[mask] * (1.0 - alpha) + color * alpha
    out = Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8), mode="RGB")

    draw = ImageDraw.Draw(out)
    line = max(1, round(min(h, w) / 250))
    font = _font(max(10, round(min(h, w) / 40)))
    for i, (box, label, score) in enumerate(
        zip(segmentation.boxes, segmentation.labels, segmentation.scores)
    ):
        color = colors[i]
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=color, width=line)
        tag = f"{label} {score:.2f}" if ids is None else f"#{int(ids[i])} {label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
        tw, th = right - left, bottom - top
        pad = max(1, line)
        # Above the box when there is room, else inside its top edge.
        ty = y0 - th - 2 * pad if y0 - th - 2 * pad >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, w - tw - 2 * pad))
        draw.rectangle([tx, ty, tx + tw + 2 * pad, ty + th + 2 * pad], fill=color)
        draw.text((tx + pad - left, ty + pad - top), tag, fill=_text_color(color), font=font)
    return out
