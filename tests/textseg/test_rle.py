"""COCO RLE: the convention (column-major, zeros first) and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest

from textseg.rle import decode_rle, encode_rle


def test_known_mask_follows_the_coco_convention():
    mask = np.array([[0, 1, 1], [0, 0, 1]], bool)
    # column-major: col0 = 0,0  col1 = 1,0  col2 = 1,1  → runs 2 zeros, 1 one, 1 zero, 2 ones
    assert encode_rle(mask) == {"size": [2, 3], "counts": [2, 1, 1, 2]}


def test_first_pixel_set_starts_with_an_empty_zero_run():
    assert encode_rle(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert encode_rle(np.zeros((2, 2), bool))["counts"] == [4]


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (37, 53), (128, 96)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_round_trip_is_exact(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    mask = rng.random(shape) < density
    rle = encode_rle(mask)
    assert sum(rle["counts"]) == mask.size
    back = decode_rle(rle)
    assert back.dtype == bool and back.shape == mask.shape
    np.testing.assert_array_equal(back, mask)


def test_non_bool_masks_count_non_zero_as_foreground():
    np.testing.assert_array_equal(
        decode_rle(encode_rle(np.array([[0, 255], [3, 0]]))), [[0, 1], [1, 0]]
    )


def test_corrupt_rle_is_refused():
    with pytest.raises(ValueError, match="corrupt"):
        decode_rle({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(ValueError, match="COCO RLE"):
        decode_rle({"counts": [4]})
    with pytest.raises(ValueError, match="height, width"):
        encode_rle(np.zeros((2, 2, 2)))
