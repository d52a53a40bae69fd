"""Write a Segmentation to disk (overlay PNG, one PNG mask per object, JSON) and read it back.

Layout of `save(segmentation, out_dir)`:
    out_dir/overlay.png              the image with masks, boxes and tags drawn
    out_dir/mask_00_<label>.png      one 8-bit PNG per object: 255 inside, 0 outside
    out_dir/segmentation.json        prompt, image size and per object: label, score,
                                     mask_score, box_xyxy and the mask as COCO RLE
JSON schema (version 1):
    {"version": 1, "prompt": "cat. remote.", "phrases": ["cat", "remote"],
     "source": "photo.jpg", "image": {"height": H, "width": W},
     "objects": [{"label": "cat", "score": 0.87, "mask_score": 0.93,
                  "box_xyxy": [x0, y0, x1, y1], "mask_file": "mask_00_cat.png",
                  "mask_rle": {"size": [H, W], "counts": [...]},
                  "kind": "text", "text_match": null, "presence_score": null}],
     "phrase_presence": null}
kind: "text" (found by a phrase), "box" or "points" (the user's); text_match: the semantic
check's score (experimental; null unless a SAM 3 checker ran); presence_score and
phrase_presence ({phrase: p}): SAM 3's presence scores (backend "sam3"; null otherwise).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from textseg.draw import overlay
from textseg.result import Segmentation
from textseg.rle import decode_rle, encode_rle

if TYPE_CHECKING:
    from textseg.images import ImageInput

__all__ = ["SavedFiles", "load", "save", "to_json"]

JSON_NAME = "segmentation.json"
OVERLAY_NAME = "overlay.png"


@dataclass
class SavedFiles:
    """Paths written by `save`."""

    overlay: Path
    json: Path
    masks: list[Path] = field(default_factory=list)


def _slug(label: str) -> str:
    slug = re.sub(r"[^\w-]+", "_", label, flags=re.UNICODE).strip("_")
    return slug[:40] or "object"


def mask_name(index: int, label: str) -> str:
    return f"mask_{index:02d}_{_slug(label)}.png"


def to_json(segmentation: Segmentation) -> dict:
    """The JSON-ready dict described in the module docstring."""
    h, w = segmentation.image_size
    objects = []
    for i, label in enumerate(segmentation.labels):
        objects.append(
            {
                "label": label,
                "score": round(float(segmentation.scores[i]), 6),
                "mask_score": round(float(segmentation.mask_scores[i]), 6),
                "box_xyxy": [round(float(v), 3) for v in segmentation.boxes[i]],
                "mask_file": mask_name(i, label),
                "mask_rle": encode_rle(segmentation.masks[i]),
                "kind": segmentation.kinds[i],
                "text_match": _rounded(segmentation.text_match[i]),
                "presence_score": _rounded(segmentation.presence_scores[i]),
            }
        )
    return {
        "version": 1,
        "prompt": segmentation.prompt,
        "phrases": list(segmentation.phrases),
        "source": segmentation.source,
        "image": {"height": int(h), "width": int(w)},
        "objects": objects,
        "phrase_presence": (
            {k: _rounded(v) for k, v in segmentation.phrase_presence.items()}
            if segmentation.phrase_presence is not None
            else None
        ),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def save(
    segmentation: Segmentation, out_dir: str | os.PathLike, *, image: ImageInput | None = None
) -> SavedFiles:
    """Write overlay.png, one mask PNG per object and segmentation.json into `out_dir`
    (created if needed). `image` defaults to the image kept in the segmentation."""
    from PIL import Image

    source = image if image is not None else segmentation.image
    if source is None:
        raise ValueError("this Segmentation holds no image; pass image= to draw the overlay")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = SavedFiles(overlay=out / OVERLAY_NAME, json=out / JSON_NAME)
    overlay(source, segmentation).save(files.overlay)
    for i, label in enumerate(segmentation.labels):
        path = out / mask_name(i, label)
        Image.fromarray(segmentation.masks[i].astype(np.uint8) * 255, mode="L").save(path)
        files.masks.append(path)
    files.json.write_text(json.dumps(to_json(segmentation), indent=1, ensure_ascii=False))
    return files


def load(path: str | os.PathLike) -> Segmentation:
    """Read a segmentation.json (or the folder holding one) back into a Segmentation,
    masks decoded from their RLE. The image itself is not stored, so `.image` is None."""
    p = Path(path)
    if p.is_dir():
        p = p / JSON_NAME
    try:
        data = json.loads(p.read_text())
        h, w = int(data["image"]["height"]), int(data["image"]["width"])
        objects = data["objects"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{p}: not a textseg segmentation.json ({err})") from err
    masks = np.zeros((len(objects), h, w), dtype=bool)
    for i, obj in enumerate(objects):
        masks[i] = decode_rle(obj["mask_rle"])
    return Segmentation(
        boxes=np.array([o["box_xyxy"] for o in objects], dtype=np.float32).reshape(-1, 4),
        scores=[o["score"] for o in objects],
        labels=[o["label"] for o in objects],
        masks=masks,
        mask_scores=[o["mask_score"] for o in objects],
        image_size=(h, w),
        prompt=data.get("prompt", ""),
        phrases=tuple(data.get("phrases", ())),
        source=data.get("source"),
        kinds=[o.get("kind", "text") for o in objects],
        text_match=[o.get("text_match") for o in objects],
        presence_scores=[o.get("presence_score") for o in objects],
        phrase_presence=data.get("phrase_presence"),
    )
