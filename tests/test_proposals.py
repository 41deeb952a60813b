"""Proposals and ProposalBatch: constructors, conversions, validation."""

import copy
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from pycocotools import mask as mask_utils
from strategies import mask_stacks

from samrefine import ProposalBatch, Proposals, RLEError, rle


@given(mask_stacks())
def test_dense_rle_round_trips(masks):
    n, h, w = masks.shape
    p = Proposals.from_dense(masks)
    assert len(p) == n and p.size == (h, w)
    np.testing.assert_array_equal(p.to_dense(), masks)
    np.testing.assert_array_equal(p.area, masks.sum(axis=(1, 2)))
    for compressed in (True, False):
        rles = p.to_rle(compressed=compressed)
        q = Proposals.from_rle(rles, size=(h, w))
        assert q == p
        if n:
            frs = mask_utils.frPyObjects(rles, h, w) if not compressed else rles
            dec = mask_utils.decode(frs)
            np.testing.assert_array_equal(dec.transpose(2, 0, 1).astype(bool), masks)


def test_from_rle_accepts_str_counts():
    m = np.zeros((1, 5, 4), bool)
    m[0, 1:3, 2] = True
    coco = mask_utils.encode(np.asfortranarray(m[0].astype(np.uint8)))
    coco["counts"] = coco["counts"].decode()
    np.testing.assert_array_equal(Proposals.from_rle([coco]).to_dense(), m)


def test_from_rle_errors_name_the_mask():
    good = {"size": [2, 2], "counts": [4]}
    with pytest.raises(RLEError, match="RLE 1"):
        Proposals.from_rle([good, {"size": [2, 2], "counts": [1, 1]}])
    with pytest.raises(ValueError, match="share a size"):
        Proposals.from_rle([good, {"size": [3, 2], "counts": [6]}])
    with pytest.raises(ValueError, match="needs size"):
        Proposals.from_rle([])
    with pytest.raises(ValueError, match="positive"):
        Proposals.from_rle([{"size": [0, 2], "counts": []}])


def test_from_sam_every_output_mode(rng):
    h, w = 9, 7
    masks = rng.random((4, h, w)) < 0.4
    coco = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    # SAM's uncompressed_rle is plain COCO counts as a list
    unc = [
        {"size": [h, w], "counts": Proposals.from_dense(m[None]).counts(0).tolist()} for m in masks
    ]
    extra = [
        {
            "predicted_iou": 0.9 - k / 10,
            "stability_score": 0.95,
            "point_coords": [[k, 2 * k]],
            "crop_box": [0, 0, w, h],
            "area": 0,
            "bbox": [0] * 4,
        }
        for k in range(4)
    ]
    for segs in (list(masks), coco, unc):
        recs = [dict(e, segmentation=s) for e, s in zip(extra, segs)]
        p = Proposals.from_sam(recs)
        np.testing.assert_array_equal(p.to_dense(), masks)
        np.testing.assert_allclose(p.meta["predicted_iou"], [0.9, 0.8, 0.7, 0.6])
        np.testing.assert_array_equal(p.meta["point_coords"][3], [3, 6])


def test_from_dense_rejects_bad_values():
    with pytest.raises(ValueError, match="only 0 and 1"):
        Proposals.from_dense(np.full((1, 2, 2), 2, np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        Proposals.from_dense(np.zeros((2, 2), bool))


def test_constructor_validates_runs():
    with pytest.raises(RLEError, match="outside"):
        Proposals([5], [3], [0, 1], (2, 3))
    with pytest.raises(RLEError, match="canonical"):
        Proposals([0, 2], [2, 1], [0, 2], (2, 3))  # touching runs
    with pytest.raises(RLEError, match="positive"):
        Proposals([0], [0], [0, 1], (2, 3))
    with pytest.raises(ValueError, match="offsets"):
        Proposals([0], [1], [0, 2], (2, 3))


def test_subset_and_torch_input(rng):
    masks = rng.random((5, 6, 8)) < 0.5
    p = Proposals.from_dense(torch.from_numpy(masks))
    np.testing.assert_array_equal(p[[4, 1]].to_dense(), masks[[4, 1]])
    np.testing.assert_array_equal(
        p[np.array([True, False, True, False, False])].to_dense(), masks[[0, 2]]
    )
    assert len(p[:0]) == 0


def test_batch_flat_layout_and_device_move(rng):
    a = Proposals.from_dense(rng.random((3, 4, 5)) < 0.5)
    b = Proposals.empty((4, 5))
    c = Proposals.from_dense(rng.random((2, 4, 5)) < 0.5)
    batch = ProposalBatch([a, b, c])
    assert len(batch) == 3 and batch.num_masks == 5
    assert batch.mask_offsets.tolist() == [0, 3, 3, 5]
    assert batch[2] == c and batch[1] == b
    t = batch.to("cpu")
    assert t.is_torch and t.starts.dtype == torch.int64
    assert t._mask_image.tolist() == [0, 0, 0, 2, 2]
    assert t[0] == a
    with pytest.raises(ValueError, match="one size"):
        ProposalBatch([a, Proposals.empty((5, 4))])
    with pytest.raises(TypeError, match="expected samrefine.Proposals"):
        ProposalBatch([a, "x"])


@given(masks=mask_stacks(max_n=5, min_n=0))
def test_segments_are_the_column_runs_of_each_mask(masks):
    p = Proposals.from_dense(masks)
    x, y0, y1, off = p.segments
    assert p.segments is p.segments  # split once, then kept
    n, h, w = masks.shape
    for k in range(n):
        got = np.zeros((h, w), bool)
        cols = x[off[k] : off[k + 1]]
        assert np.all(np.diff(cols) >= 0)  # sorted by column
        for c, a, b in zip(cols, y0[off[k] : off[k + 1]], y1[off[k] : off[k + 1]]):
            assert 0 <= a < b <= h and not got[a:b, c].any()
            got[a:b, c] = True
        np.testing.assert_array_equal(got, masks[k])


@given(masks=mask_stacks(max_n=4, min_n=0))
def test_batch_of_cached_segments_equals_one_split_of_all_runs(masks):
    # a batch joins the images' own (cached) segments; it must equal splitting all runs at once
    a = Proposals.from_dense(masks)
    b = a[::-1]
    batch = ProposalBatch([a, b, a])
    seg = rle.runs_to_segments(batch.starts, batch.lengths, batch.run_offsets, a.size[0])
    for got, want in zip((batch.seg_x, batch.seg_y0, batch.seg_y1, batch.seg_offsets), seg):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(batch.area, np.concatenate([a.area, b.area, a.area]))
    single = ProposalBatch([a])
    assert single.seg_x is a.segments[0]  # one image: shared, not copied


def test_proposals_geometry_is_immutable(rng):
    p = Proposals.from_dense(rng.random((3, 5, 6)) < 0.5)
    for name in ("starts", "lengths", "offsets", "size", "_segments"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(p, name, getattr(p, name))
    p.meta = {"score": np.arange(3)}  # metadata stays editable
    assert p.resize((7, 9)).meta["score"].tolist() == [0, 1, 2]


def test_proposals_pickle_and_copy(rng):
    # DataLoader workers and DDP pickle proposals; the immutability guard must not block it
    p = Proposals.from_dense(rng.random((3, 5, 6)) < 0.5, meta={"score": np.arange(3.0)})
    _ = p.segments, p.area  # filled caches are not part of the pickled state
    for q in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert q == p and q.meta["score"].tolist() == [0.0, 1.0, 2.0]
        np.testing.assert_array_equal(q.to_dense(), p.to_dense())
    batch = pickle.loads(pickle.dumps(ProposalBatch([p, p])))
    np.testing.assert_array_equal(batch.seg_x, ProposalBatch([p, p]).seg_x)


def test_proposal_batch_old_import_path_still_works():
    # ProposalBatch moved from proposals.py to proposal_batch.py; user code and old pickles
    # name it by the old module path, which must keep resolving to the same class
    import samrefine.proposal_batch
    import samrefine.proposals
    from samrefine.proposals import ProposalBatch as old_path

    assert old_path is samrefine.proposal_batch.ProposalBatch is ProposalBatch
    batch = pickle.loads(
        pickle.dumps(ProposalBatch([Proposals.empty((2, 3))]), protocol=0).replace(
            b"samrefine.proposal_batch", b"samrefine.proposals"
        )
    )
    assert type(batch) is ProposalBatch and batch.size == (2, 3)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = samrefine.proposals.NoSuchName
