"""Bad input never silently becomes wrong data in Proposals / ProposalBatch (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from samrefine import ProposalBatch, Proposals


def test_soft_dense_masks_are_refused_not_emptied():
    soft = np.zeros((2, 4, 5), np.float32)
    soft[0, 1:3, 1:4] = 0.8
    soft[1, 0, 0] = 0.3
    with pytest.raises(ValueError, match="threshold="):
        Proposals.from_dense(soft)
    got = Proposals.from_dense(soft, threshold=0.5)
    assert np.array_equal(got.to_dense(), soft > 0.5)
    assert got.area.tolist() == [6, 0]
    # exact 0/1 floats are still masks
    assert np.array_equal(
        Proposals.from_dense((soft > 0.5).astype(np.float64)).to_dense(), soft > 0.5
    )
    with pytest.raises(ValueError, match="NaN"):
        Proposals.from_dense(np.full((1, 2, 2), np.nan), threshold=0.5)


def test_run_starts_beyond_int32_are_refused_not_wrapped():
    starts = np.array([2**32 + 3], np.int64)  # would wrap to 3
    with pytest.raises(ValueError, match="int32 range"):
        Proposals(starts, np.array([1]), np.array([0, 1]), (4, 4))
    with pytest.raises(ValueError, match="integers"):
        Proposals(np.array([1.5]), np.array([1]), np.array([0, 1]), (4, 4))
    # in-range int64 input still works
    p = Proposals(np.array([3], np.int64), np.array([2], np.int64), np.array([0, 1]), (4, 4))
    assert p.starts.dtype == np.int32 and p.area.tolist() == [2]


def test_float_sizes_and_crop_boxes_must_be_integral():
    with pytest.raises(ValueError, match="size"):
        Proposals.empty((10.5, 8))
    assert Proposals.empty((10.0, 8)).size == (10, 8)
    dense = np.zeros((1, 6, 6), bool)
    dense[0, 2:4, 2:4] = True
    p = Proposals.from_dense(dense)
    with pytest.raises(ValueError, match="box"):
        p.crop((1.5, 0, 4, 4))
    with pytest.raises(ValueError, match="size"):
        p.resize((3.2, 3))
    assert np.array_equal(p.crop((1.0, 1, 4, 4)).to_dense(), dense[:, 1:5, 1:5])


def test_batch_of_a_single_proposals_is_refused():
    dense = np.zeros((3, 4, 4), bool)
    dense[:, 0, 0] = True
    p = Proposals.from_dense(dense)
    with pytest.raises(TypeError, match=r"ProposalBatch\(\[proposals\]\)"):
        ProposalBatch(p)
    assert len(ProposalBatch([p])) == 1
