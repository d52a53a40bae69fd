"""Boxes and points the user draws or clicks: checked, named, and kept in pixels.

A user's box becomes one object ("box 1", "box 2", ... or the name given); a group of points
becomes one object ("point" or the name given): positive points (label 1) lie on the
object, negative points (label 0) off it. Both go straight to the painter (SAM 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from textseg.errors import PromptError

__all__ = ["BoxesInput", "PointsInput", "UserPrompts", "parse_user_prompts"]

# (N, 4) XYXY pixels, or {name: (x0, y0, x1, y1)}
BoxesInput = np.ndarray | Sequence[Sequence[float]] | Mapping[str, Sequence[float]]
# (K, 2) (x, y) pixels for one object, or {name: [(x, y), ...]} for several
PointsInput = np.ndarray | Sequence[Sequence[float]] | Mapping[str, Sequence[Sequence[float]]]


@dataclass
class UserPrompts:
    """Checked user prompts in pixels of the image they were given for.

    boxes: (B, 4) float32 XYXY, clipped to the image; box_names: B names.
    point_groups: one (K, 2) float32 array of (x, y) per object; point_labels: one (K,)
        int64 array of 1/0 per object; point_names: one name per object.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_names: list[str] = field(default_factory=list)
    point_groups: list[np.ndarray] = field(default_factory=list)
    point_labels: list[np.ndarray] = field(default_factory=list)
    point_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.box_names) + len(self.point_names)


def _numbers(value: object, what: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{what} must be numbers, got {value!r}") from err
    if array.size == 0 and shape[0] == -1:
        return array.reshape(0, *shape[1:])
    if array.ndim != len(shape) or any(s not in (-1, a) for s, a in zip(shape, array.shape)):
        want = " × ".join("N" if s == -1 else str(s) for s in shape)
        raise PromptError(f"{what} must have shape ({want}), got {array.shape}")
    if not np.isfinite(array).all():
        raise PromptError(f"{what} must be finite numbers, got {value!r}")
    return array


def _name(name: object, what: str) -> str:
    text = " ".join(str(name).split())
    if not text:
        raise PromptError(f"{what} needs a non-empty name")
    return text


def _parse_boxes(boxes: BoxesInput, *, height: int, width: int) -> tuple[np.ndarray, list[str]]:
    if isinstance(boxes, Mapping):
        names = [_name(k, "a box") for k in boxes]
        rows = [_numbers(v, f"box {k!r}", (4,)) for k, v in boxes.items()]
        array = np.stack(rows) if rows else np.zeros((0, 4))
    else:
        array = _numbers(boxes, "boxes", (-1, 4))
        names = [f"box {i + 1}" for i in range(len(array))]
    out = array.astype(np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    for name, raw, box in zip(names, array, out):
        if not (box[2] > box[0] and box[3] > box[1]):
            raise PromptError(
                f"{name} {[round(float(v), 1) for v in raw]} has no area inside the "
                f"{width}x{height} image; give x0 < x1 and y0 < y1 in pixels (XYXY)"
            )
    return out, names


def _parse_points(
    points: np.ndarray, labels: object, name: str, *, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    xy = _numbers(points, f"points of {name!r}", (-1, 2))
    if len(xy) == 0:
        raise PromptError(f"{name!r} has no points; give (x, y) pixels")
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        x, y = xy[np.flatnonzero(outside)[0]]
        raise PromptError(
            f"point ({x:g}, {y:g}) of {name!r} is outside the {width}x{height} image; "
            "points are (x, y) pixels"
        )
    if labels is None:
        lab = np.ones(len(xy), dtype=np.int64)
    else:
        raw = np.asarray(labels).reshape(-1)
        if raw.shape != (len(xy),) or not np.isin(raw, (0, 1)).all():
            raise PromptError(
                f"point_labels of {name!r} must be one 1 (on the object) or 0 (not on it) "
                f"per point ({len(xy)}), got {labels!r}"
            )
        lab = raw.astype(np.int64)
    if not (lab == 1).any():
        raise PromptError(f"{name!r} has only negative points; click at least one on the object")
    return xy.astype(np.float32), lab


def parse_user_prompts(
    boxes: BoxesInput | None,
    points: PointsInput | None,
    point_labels: object | None,
    *,
    height: int,
    width: int,
) -> UserPrompts:
    """Check and name the user's boxes and points for an image of `height` × `width`.

    boxes: (N, 4) XYXY pixels → "box 1" ... "box N"; or {name: (x0, y0, x1, y1)}. A box
        reaching past the image is clipped to it; one without area inside it is an error.
    points: (K, 2) (x, y) pixels → one object "point"; or {name: [(x, y), ...]}, one
        object per name. point_labels: (K,) of 1/0 (default all 1), or {name: labels}.
    """
    out = UserPrompts()
    if boxes is not None:
        out.boxes, out.box_names = _parse_boxes(boxes, height=height, width=width)
    if points is None:
        if point_labels is not None:
            raise PromptError("point_labels were given without points")
        return out
    if isinstance(points, Mapping):
        labels = point_labels if point_labels is not None else {}
        if not isinstance(labels, Mapping):
            raise PromptError("with points given by name, give point_labels by name too")
        unknown = set(labels) - set(points)
        if unknown:
            raise PromptError(f"point_labels name objects without points: {sorted(unknown)}")
        groups = [(_name(k, "a point group"), v, labels.get(k)) for k, v in points.items()]
    else:
        groups = [("point", points, point_labels)]
    for name, xy, lab in groups:
        xy, lab = _parse_points(xy, lab, name, height=height, width=width)
        out.point_groups.append(xy)
        out.point_labels.append(lab)
        out.point_names.append(name)
    return out
