"""Tests of labels: which pixels form a CR, connectivity, size limits, numbering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hstcosmicrays.labels import cr_mask, label_crs

CR, BAD = 8192, 4


def dq_from_ascii(rows: list[str]) -> np.ndarray:
    """'#' a CR pixel, 'B' a CR pixel also flagged bad, 'o' another flag (16), '.' clean."""
    table = {"#": CR, "B": CR | BAD, "o": 16, ".": 0}
    return np.array([[table[c] for c in r] for r in rows], dtype=np.int16)


def test_sizes_connectivity_and_numbering():
    dq = dq_from_ascii([
        "#.........##",   # 1 pixel (dropped); a 2-pixel pair (dropped)
        "..........o.",
        ".#.....#....",   # diagonal chain of 3 -> kept (8-connectivity)
        "..#.....#...",
        "...#.....#..",   # a second diagonal chain of 3, kept
        "............",
        "####....###.",   # 4 in a row (kept), 3 in a row (kept)
    ])
    labels, n = label_crs(dq=dq, max_pixels=100)
    assert n == 4
    assert labels.dtype == np.int32
    # numbered 1..n in raster order of the first pixel
    assert labels[2, 1] == 1 and labels[2, 7] == 2 and labels[6, 0] == 3 and labels[6, 8] == 4
    assert labels[0, 0] == 0 and labels[0, 10] == 0 and labels[0, 11] == 0
    sizes = np.bincount(labels.ravel())[1:]
    assert list(sizes) == [3, 3, 4, 3]
    assert labels[1, 10] == 0  # another DQ flag is not a CR


def test_max_pixels_is_exclusive():
    dq = np.zeros((5, 30), np.int16)
    dq[0, :10] = CR     # 10 pixels
    dq[2, :9] = CR      # 9 pixels
    dq[4, :3] = CR      # 3 pixels
    labels, n = label_crs(dq=dq, max_pixels=10)
    assert n == 2
    assert set(np.bincount(labels.ravel())[1:]) == {9, 3}
    labels, n = label_crs(dq=dq, max_pixels=11, min_pixels=4)
    assert n == 2 and set(np.bincount(labels.ravel())[1:]) == {10, 9}


def test_bad_pixels_split_and_border():
    dq = dq_from_ascii([
        "......",
        ".###B#",
        "......",
    ])
    # with the bad bit honoured the row splits into 3 pixels (kept) and 1 (dropped);
    # with bad_bit=0 it is one CR of 5 pixels
    labels, n = label_crs(dq=dq, max_pixels=100)
    assert n == 1 and np.count_nonzero(labels) == 3 and labels[1, 4] == 0
    labels, n = label_crs(dq=dq, max_pixels=100, bad_bit=0)
    assert n == 1 and np.count_nonzero(labels) == 5
    # a border of 2 leaves only columns 2..3 of row 1: too few pixels for a CR
    m = cr_mask(dq=dq, border=2)
    assert not m[:, :2].any() and not m[:, -2:].any()
    labels, n = label_crs(dq=dq, max_pixels=100, border=2)
    assert n == 0


def test_matches_ndimage_on_random_field():
    rng = np.random.default_rng(5)
    dq = np.where(rng.random((300, 400)) < 0.12, CR, 0).astype(np.int16)
    dq[rng.random(dq.shape) < 0.01] |= BAD
    labels, n = label_crs(dq=dq, max_pixels=8)
    ref, nref = ndimage.label(((dq & CR) > 0) & ((dq & BAD) == 0), structure=np.ones((3, 3)))
    sizes = np.bincount(ref.ravel())
    keep = np.flatnonzero((sizes >= 3) & (sizes < 8))
    keep = keep[keep > 0]
    assert n == keep.size > 100
    # the same pixel sets, renumbered consecutively
    np.testing.assert_array_equal(labels > 0, np.isin(ref, keep))
    np.testing.assert_array_equal(np.unique(labels), np.arange(n + 1))
    pairs = np.unique(np.stack([ref[labels > 0], labels[labels > 0]]), axis=1)
    assert pairs.shape[1] == n  # one-to-one


def test_input_checks():
    with pytest.raises(ValueError, match="2-D"):
        label_crs(dq=np.zeros(5, np.int16), max_pixels=10)
    with pytest.raises(ValueError, match="integer"):
        label_crs(dq=np.zeros((5, 5)), max_pixels=10)
    with pytest.raises(ValueError, match="min_pixels"):
        label_crs(dq=np.zeros((5, 5), np.int16), max_pixels=3)
    labels, n = label_crs(dq=np.zeros((5, 5), np.int16), max_pixels=10)
    assert n == 0 and not labels.any()
