"""The version-1 record codec: round trips, the documented byte layout, corrupt records."""

import struct
import zlib

import numpy as np
import pycocotools.mask as pm
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import mask_stacks

from samrefine import Proposals
from samrefine.library.format import (
    HEADER_SIZE,
    LibraryCorruptError,
    LibraryError,
    decode_record,
    encode_record,
)


def _coco(dense):
    return pm.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))


@given(mask_stacks(max_n=6, max_side=23), st.sampled_from(["none", "zlib"]))
def test_record_round_trip_matches_pycocotools(dense, compression):
    props = Proposals.from_dense(dense)
    back = decode_record(encode_record(props, compression=compression))
    assert back == props
    # every stored mask decodes with pycocotools to exactly the input
    if len(dense):
        got = pm.decode([{"size": r["size"], "counts": r["counts"]} for r in back.to_rle()])
        assert np.array_equal(got.transpose(2, 0, 1).astype(bool), dense)
        assert np.array_equal(back.meta["area"], pm.area(_coco(dense)))
        assert np.array_equal(back.meta["bbox"], pm.toBbox(_coco(dense)))


def test_documented_example_bytes():
    # module docstring: H=3, W=2, column-major 0 0 1 1 1 0 -> one run (start 2, length 3)
    mask = np.array([[0, 1], [0, 1], [1, 0]], bool)
    props = Proposals.from_dense(mask[None])
    rec = encode_record(props, with_geometry=False)
    magic, h, w, n, r, b, f, flags = struct.unpack_from("<4sIIIIIHH", rec, 0)
    assert (magic, h, w, n, r, b, f, flags) == (b"SRP1", 3, 2, 1, 1, 3, 0, 0)
    assert rec[HEADER_SIZE:] == bytes([0x01, 0x04, 0x06])


def test_delta_coding_hand_example():
    # two runs in a 4x3 mask: [1, 3) and [5, 8): c = [g0=1, l0=2, g1=2, l1=3]
    # deltas: 1, 2, 2-1=1, 3-2=1 -> zigzag 2, 4, 2, 2
    props = Proposals(np.array([1, 5]), np.array([2, 3]), np.array([0, 2]), (4, 3))
    rec = encode_record(props, with_geometry=False)
    assert rec[HEADER_SIZE:] == bytes([2, 2, 4, 2, 2])


def test_metadata_round_trip_with_dtypes():
    rng = np.random.default_rng(1)
    dense = rng.random((4, 9, 7)) > 0.5
    meta = {
        "predicted_iou": rng.random(4),
        "stability_score": rng.random(4),
        "point_coords": rng.random((4, 2)) * 7,
        "crop_box": np.tile([0, 0, 7, 9], (4, 1)),
        "custom_flag": np.array([True, False, True, True]),
        "level": np.arange(4) - 2,
    }
    props = Proposals.from_dense(dense, meta=meta)
    back = decode_record(encode_record(props))
    assert back.meta["predicted_iou"].dtype == np.float32
    np.testing.assert_array_equal(
        back.meta["predicted_iou"], meta["predicted_iou"].astype(np.float32)
    )
    np.testing.assert_array_equal(
        back.meta["point_coords"], meta["point_coords"].astype(np.float32)
    )
    np.testing.assert_array_equal(back.meta["crop_box"], meta["crop_box"])
    np.testing.assert_array_equal(back.meta["custom_flag"], [1, 0, 1, 1])
    np.testing.assert_array_equal(back.meta["level"], [-2, -1, 0, 1])


def test_rejects_non_numeric_metadata():
    props = Proposals.from_dense(np.ones((2, 3, 3), bool), meta={"name": np.array(["a", "b"])})
    with pytest.raises(LibraryError, match="numeric"):
        encode_record(props)


def test_empty_image_round_trip():
    props = Proposals.empty((5, 8))
    back = decode_record(encode_record(props))
    assert len(back) == 0 and back.size == (5, 8)


def _record():
    rng = np.random.default_rng(2)
    return encode_record(Proposals.from_dense(rng.random((5, 20, 30)) > 0.5))


@pytest.mark.parametrize("cut", [1, 10, HEADER_SIZE + 3])
def test_truncated_record_is_an_error(cut):
    rec = _record()
    with pytest.raises(LibraryCorruptError, match="image 7"):
        decode_record(rec[:-cut] if cut > 1 else rec[:cut], where="image 7")


def test_trailing_bytes_and_bad_magic_are_errors():
    rec = _record()
    with pytest.raises(LibraryCorruptError, match="unexpected bytes"):
        decode_record(rec + b"\x00")
    with pytest.raises(LibraryCorruptError, match="SRP1"):
        decode_record(b"XXXX" + rec[4:])


def test_every_single_byte_flip_in_runs_is_caught_or_harmless():
    # the CRC in the index catches flips; the decoder alone must never produce a non-canonical
    # or out-of-image mask (it may produce a different valid one, which the CRC catches)
    props = Proposals.from_dense(np.random.default_rng(3).random((3, 6, 5)) > 0.4)
    rec = bytearray(encode_record(props, with_geometry=False))
    for pos in range(HEADER_SIZE, len(rec)):
        bad = bytearray(rec)
        bad[pos] ^= 0x41
        assert zlib.crc32(bad) != zlib.crc32(rec)
        try:
            got = decode_record(bytes(bad))
        except LibraryCorruptError:
            continue
        got._validate()  # canonical and inside the image
