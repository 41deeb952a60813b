"""The shared private helpers (samrefine._common) and the lightness of ``import samrefine``."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from strategies import mask_stacks

import samrefine
from samrefine._common import binary_labels, iou_from_counts, mask_iou


@given(masks=mask_stacks(max_n=2, min_n=2))
def test_mask_iou_is_intersection_over_union_and_1_for_two_empty_masks(masks):
    a, b = masks
    inter = sum(bool(x and y) for x, y in zip(a.ravel(), b.ravel()))
    union = sum(bool(x or y) for x, y in zip(a.ravel(), b.ravel()))
    want = inter / union if union else 1.0
    assert mask_iou(a, b) == want
    assert iou_from_counts([inter], [union])[0] == want


def test_every_evaluation_iou_uses_the_empty_masks_convention(monkeypatch):
    empty = np.zeros((4, 5), bool)
    assert mask_iou(empty, empty) == 1.0
    assert iou_from_counts(np.array([0, 2]), np.array([0, 4])).tolist() == [1.0, 0.5]
    # the audit counts an empty pseudo-label against an empty ground truth as perfect
    report = samrefine.audit(
        empty[None], [samrefine.Proposals.empty((4, 5))], empty[None], strategies=("cpi-u",)
    )
    assert report.iou_before.tolist() == [1.0]
    assert report.strategies["cpi-u"].miou_before == 1.0


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_binary_labels_accepts_hard_labels_and_thresholded_probabilities(kind):
    wrap = (lambda a: a) if kind == "numpy" else torch.from_numpy
    host = (lambda a: a) if kind == "numpy" else (lambda t: t.numpy())
    hard = np.array([[0, 1], [1, 0]])
    for dtype in (np.bool_, np.uint8, np.int64, np.float32):
        got = host(binary_labels(wrap(hard.astype(dtype))))
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, hard.astype(bool))
    prob = np.array([[0.2, 0.5], [0.51, 1.0]], np.float32)
    np.testing.assert_array_equal(host(binary_labels(wrap(prob), prob_thresh=0.5)), prob > 0.5)
    with pytest.raises(ValueError, match=r"gt \(sample 2\) must hold only 0 and 1 \(or be bool\)$"):
        binary_labels(wrap(prob), "gt", where=" (sample 2)", probabilities=False)
    with pytest.raises(ValueError, match="pass prob_thresh=0.5"):
        binary_labels(wrap(prob))
    with pytest.raises(ValueError, match="NaN"):
        binary_labels(wrap(np.array([np.nan, 0.5])), prob_thresh=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_labels(wrap(prob * 2), prob_thresh=0.5)
    with pytest.raises(TypeError, match="prob_thresh is for float"):
        binary_labels(wrap(hard), prob_thresh=0.5)
    with pytest.raises(TypeError, match="dtype"):
        binary_labels(wrap(hard.astype(np.complex64)))


def test_import_samrefine_and_numpy_matching_do_not_import_torch():
    code = (
        "import sys, numpy as np, samrefine as sr; "
        "p = sr.Proposals.from_dense(np.ones((2, 8, 8), bool)); "
        "sr.refine(np.ones((8, 8), bool), p, 'cpi-u'); sr.audit; "
        "print('torch' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.check_output([sys.executable, "-c", code], env=env, text=True)
    assert out.strip() == "False"
    # and the torch-side names still load on first access
    assert samrefine.PWABCELoss.__module__ == "samrefine.loss"
