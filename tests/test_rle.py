"""RLE codec and run geometry against pycocotools and torch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import torch_nearest
from pycocotools import mask as mask_utils
from strategies import mask_stacks

from samrefine import Proposals, RLEError, rle


def _coco(masks):
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


@given(mask_stacks(min_n=1))
def test_encode_matches_pycocotools(masks):
    n, h, w = masks.shape
    coco = _coco(masks)
    s, ln, off = rle.encode_dense(masks)
    for k in range(n):
        counts = rle.string_to_counts(coco[k]["counts"])
        ss, ll = rle.counts_to_runs(counts, h, w)
        np.testing.assert_array_equal(ss, s[off[k] : off[k + 1]])
        np.testing.assert_array_equal(ll, ln[off[k] : off[k + 1]])
        # back to COCO counts and the compressed string, byte for byte
        back = rle.runs_to_counts(ss, ll, h * w)
        assert rle.counts_to_string(back) == coco[k]["counts"]
    np.testing.assert_array_equal(rle.decode_dense(s, ln, off, h, w), masks)
    np.testing.assert_array_equal(rle.runs_bbox(s, ln, off, h), mask_utils.toBbox(coco))


@given(st.lists(st.integers(-(2**40), 2**40), max_size=30))
def test_string_codec_round_trip_any_ints(values):
    counts = np.array(values, np.int64)
    assert np.array_equal(rle.string_to_counts(rle.counts_to_string(counts)), counts)


def test_uncompressed_counts_with_zero_runs_are_canonicalised():
    # 2 background, 0 fg, 0 bg, 3 fg, 1 bg in a 3x2 mask: fg is pixels 2..4
    s, ln = rle.counts_to_runs([2, 0, 0, 3, 1], 3, 2)
    assert s.tolist() == [2] and ln.tolist() == [3]
    s, ln = rle.counts_to_runs([1, 2, 0, 3], 3, 2)  # touching fg runs merge
    assert s.tolist() == [1] and ln.tolist() == [5]


@pytest.mark.parametrize(
    "counts, msg", [([3, -1, 4], "negative"), ([2, 2], "sum to 4"), ([10], "sum to 10")]
)
def test_bad_counts_raise(counts, msg):
    with pytest.raises(RLEError, match=msg):
        rle.counts_to_runs(counts, 2, 3)


@pytest.mark.parametrize("s", [b"\x01\x02", b"0P", "xyz~"])
def test_corrupt_strings_raise(s):
    with pytest.raises(RLEError):
        rle.counts_to_runs(rle.string_to_counts(s), 1, 1)


@given(mask_stacks(min_n=1, max_side=13), st.integers(1, 30), st.integers(1, 30))
def test_resize_equals_torch_nearest(masks, h2, w2):
    p = Proposals.from_dense(masks)
    np.testing.assert_array_equal(p.resize((h2, w2)).to_dense(), torch_nearest(masks, (h2, w2)))


@pytest.mark.parametrize(
    "src, dst",
    [
        ((427, 640), (480, 480)),
        ((480, 640), (480, 480)),
        ((333, 500), (480, 480)),
        ((240, 240), (480, 480)),
        ((612, 612), (480, 480)),
        ((480, 480), (97, 1031)),
    ],
)
def test_resize_equals_torch_nearest_coco_sizes(src, dst, rng):
    h, w = src
    yy, xx = np.mgrid[:h, :w]
    masks = np.stack(
        [
            ((yy - rng.integers(h)) ** 2 + (xx - rng.integers(w)) ** 2) < rng.integers(5, 200) ** 2
            for _ in range(6)
        ]
        + [rng.random((h, w)) < 0.5]
    )
    got = Proposals.from_dense(masks).resize(dst).to_dense()
    np.testing.assert_array_equal(got, torch_nearest(masks, dst))


@given(mask_stacks(min_n=1))
def test_hflip(masks):
    p = Proposals.from_dense(masks)
    np.testing.assert_array_equal(p.hflip().to_dense(), masks[:, :, ::-1])
    assert p.hflip().hflip() == p


@given(
    mask_stacks(min_n=1, max_side=12),
    st.integers(-5, 15),
    st.integers(-5, 15),
    st.integers(1, 20),
    st.integers(1, 20),
)
def test_crop_equals_pad_then_slice(masks, x, y, w, h):
    n, H, W = masks.shape
    pad = np.zeros((n, H + 80, W + 80), bool)
    pad[:, 30 : 30 + H, 30 : 30 + W] = masks
    expect = pad[:, 30 + y : 30 + y + h, 30 + x : 30 + x + w]
    np.testing.assert_array_equal(Proposals.from_dense(masks).crop((x, y, w, h)).to_dense(), expect)


def test_encode_labels_one_mask_per_label(rng):
    labels = rng.integers(-1, 6, (23, 17))
    s, ln, off = rle.encode_labels(labels, 7)
    dense = rle.decode_dense(s, ln, off, 23, 17)
    for k in range(7):
        np.testing.assert_array_equal(dense[k], labels == k)
