"""Box helpers: duplicate removal, coordinate clean-up, boxes around masks, and the one-to-one
matching the video tracker uses (XYXY, pixels)."""

from __future__ import annotations

import numpy as np

__all__ = ["clip_boxes", "mask_box", "mask_boxes", "match_boxes", "remove_duplicates"]


def clip_boxes(boxes: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """Clip (N, 4) XYXY boxes to the image [0, width] × [0, height]; returns float32."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def remove_duplicates(
    boxes: np.ndarray, scores: np.ndarray, phrase_ids: np.ndarray, *, iou: float
) -> np.ndarray:
    """Indices of the detections to keep, highest score first.

    Two passes of non-maximum suppression at the same IoU: first within each phrase
    (the same object found by several queries), then across phrases (one object found
    as "cap" and as "hat": the higher-scoring label wins).

    boxes: (N, 4) XYXY pixels. scores: (N,). phrase_ids: (N,) int.
    Returns (K,) int64 indices into the inputs, sorted by descending score.
    """
    import torch
    from torchvision.ops import batched_nms, nms

    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"nms_iou must be in [0, 1], got {iou}")
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    ids = torch.as_tensor(np.asarray(phrase_ids, dtype=np.int64))
    within = batched_nms(b, s, ids, iou)  # sorted by score
    across = nms(b[within], s[within], iou)
    return within[across].numpy().astype(np.int64)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks → (N, 4) float32 XYXY pixel boxes that enclose them (the
    pixel edges: a one-pixel mask at (x, y) gives (x, y, x + 1, y + 1)); zeros when empty."""
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        if len(cols):
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 XYXY pixel box around one (H, W) mask (see `mask_boxes`)."""
    return mask_boxes(np.asarray(mask, dtype=bool)[None])[0]


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
