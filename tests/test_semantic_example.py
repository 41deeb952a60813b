"""Smoke test of examples/semantic_fixmatch/train.py: every arm trains and is reproducible."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")

PATH = Path(__file__).resolve().parents[1] / "examples" / "semantic_fixmatch" / "train.py"


def _module():
    spec = importlib.util.spec_from_file_location("semantic_fixmatch_train", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arms_train_and_repeat_exactly():
    m = _module()
    rng = np.random.default_rng(0)
    data = (m.make_split(4, rng), m.make_split(6, rng), m.make_split(4, rng))
    args = Namespace(iters=4, warmup=1, batch=2, lr=0.02, conf=0.0, lambda_u=1.0, strategy="iom")
    for arm in ("supervised", "fixmatch", "samrefine"):
        a = m.train(arm, 0, data, args)
        assert 0.0 <= a <= 1.0
        assert m.train(arm, 0, data, args) == a  # same seed, same batches, same result


def test_synthetic_proposals_contain_the_objects():
    m = _module()
    rng = np.random.default_rng(1)
    img, lab, objects = m.make_image(rng)
    props = m.make_proposals(objects, rng)
    dense = props.to_dense()
    assert img.shape == (3, m.SIZE, m.SIZE) and lab.max() < m.N_CLASSES
    for o in objects:  # some proposal covers most of every object
        best = max((d & o).sum() / (d | o).sum() for d in dense)
        assert best > 0.5
