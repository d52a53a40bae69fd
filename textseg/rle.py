"""COCO run-length encoding (uncompressed) of binary masks, with an exact decoder.

COCO RLE reads the mask in column-major (Fortran) order and stores alternating run
lengths, starting with a run of zeros (0 when the first pixel is set):
{"size": [height, width], "counts": [n0, n1, n0, ...]}.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_rle", "encode_rle"]


def encode_rle(mask: np.ndarray) -> dict:
    """Encode a (H, W) mask (bool, or values where non-zero is foreground) as COCO RLE."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"encode_rle needs a (height, width) mask, got shape {m.shape}")
    height, width = m.shape
    flat = m.astype(bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [int(height), int(width)], "counts": [int(c) for c in counts]}


def decode_rle(rle: dict) -> np.ndarray:
    """Decode an uncompressed COCO RLE dict back to a (H, W) bool mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            "not an uncompressed COCO RLE: expected {'size': [h, w], 'counts': [ints]}"
        ) from err
    if (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(
            f"RLE counts sum to {int(counts.sum())} but size {height}x{width} "
            f"needs {height * width}; the mask is corrupt"
        )
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")
