"""The semantic check: does a mask agree with what a text-aware segmenter paints for its
phrase? Pure functions over masks (experimental; not yet measured with real weights).

SAM 2 has no link to the text: when GroundingDINO boxes a car for "dog", SAM 2 paints the
car. SAM 3 segments every instance of a phrase itself, so an object whose mask overlaps
none of SAM 3's masks for its phrase is suspect. `text_match` is that overlap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_iou", "text_match"]


def mask_iou(mask: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one (H, W) bool mask with each of (M, H, W) bool masks → (M,) float32.
    Two empty masks have IoU 0."""
    mask = np.asarray(mask, dtype=bool)
    others = np.asarray(others, dtype=bool).reshape(-1, *mask.shape)
    if len(others) == 0:
        return np.zeros(0, dtype=np.float32)
    flat = others.reshape(len(others), -1)
    m = mask.reshape(-1)
    inter = np.count_nonzero(flat & m, axis=1)
    union = np.count_nonzero(flat | m, axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def text_match(
    masks: np.ndarray,
    phrase_ids: np.ndarray,
    reference_masks: np.ndarray,
    reference_phrase_ids: np.ndarray,
) -> np.ndarray:
    """For each object, the best IoU of its mask with the reference masks of its phrase.

    masks: (N, H, W) bool, the objects to check; phrase_ids: (N,) int.
    reference_masks: (M, H, W) bool, e.g. SAM 3's masks; reference_phrase_ids: (M,) int.
    Returns (N,) float32 in [0, 1]; 0 where the reference has no mask for the phrase.
    """
    masks = np.asarray(masks, dtype=bool)
    ids = np.asarray(phrase_ids, dtype=np.int64).reshape(-1)
    refs = np.asarray(reference_masks, dtype=bool)
    ref_ids = np.asarray(reference_phrase_ids, dtype=np.int64).reshape(-1)
    if len(masks) != len(ids) or len(refs) != len(ref_ids):
        raise ValueError("each mask needs one phrase id (masks and ids differ in length)")
    if len(refs) and refs.shape[1:] != masks.shape[1:]:
        raise ValueError(f"masks are {masks.shape[1:]} but the reference is {refs.shape[1:]}")
    out = np.zeros(len(masks), dtype=np.float32)
    for i, (mask, phrase) in enumerate(zip(masks, ids)):
        same = refs[ref_ids == phrase]
        if len(same):
            out[i] = mask_iou(mask, same).max()
    return out
