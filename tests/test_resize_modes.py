"""Proposals.resize(mode=...) against torch interpolate and PIL Image.NEAREST, decoded."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from strategies import mask_stacks

from samrefine import Proposals


def torch_resize(dense: np.ndarray, size, mode: str) -> np.ndarray:
    t = torch.from_numpy(dense.astype(np.float32))[None]
    return F.interpolate(t, size=tuple(size), mode=mode)[0].numpy() > 0.5


def pil_resize(dense: np.ndarray, size) -> np.ndarray:
    h2, w2 = size
    return np.stack(
        [
            np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w2, h2), Image.NEAREST))
            > 0
            for m in dense
        ]
    ).reshape(len(dense), h2, w2)


sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@given(stack=mask_stacks(max_n=4, max_side=23, min_n=1), size=sizes)
def test_nearest_modes_equal_torch(stack, size):
    props = Proposals.from_dense(stack)
    for mode in ("nearest", "nearest-exact"):
        got = props.resize(size, mode=mode).to_dense()
        np.testing.assert_array_equal(got, torch_resize(stack, size, mode), err_msg=mode)


@given(stack=mask_stacks(max_n=4, max_side=23, min_n=1), size=sizes)
def test_pil_mode_equals_pillow(stack, size):
    props = Proposals.from_dense(stack)
    np.testing.assert_array_equal(
        props.resize(size, mode="pil").to_dense(), pil_resize(stack, size)
    )


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((333, 500), (512, 512)),
        ((480, 640), (321, 321)),
        ((1000, 7), (97, 1023)),
        ((17, 513), (2047, 3)),
    ],
)
def test_modes_at_training_sizes(in_hw, out_hw):
    rng = np.random.default_rng(0)
    dense = np.zeros((3, *in_hw), bool)
    for k in range(3):
        y0, x0 = rng.integers(0, in_hw[0]), rng.integers(0, in_hw[1])
        dense[k, y0 : y0 + in_hw[0] // 3 + 1, x0 : x0 + in_hw[1] // 4 + 1] = True
    dense[2] ^= rng.random(in_hw) < 0.1
    props = Proposals.from_dense(dense)
    for mode in ("nearest", "nearest-exact"):
        np.testing.assert_array_equal(
            props.resize(out_hw, mode=mode).to_dense(), torch_resize(dense, out_hw, mode)
        )
    np.testing.assert_array_equal(
        props.resize(out_hw, mode="pil").to_dense(), pil_resize(dense, out_hw)
    )


def test_modes_differ_and_unknown_mode_is_refused():
    m = np.zeros((1, 3, 3), bool)
    m[0, 0, 0] = True
    props = Proposals.from_dense(m)
    # 3 -> 4: "nearest" takes src = floor(dst * 3/4) = 0, 0, 1, 2 (two copies of row/col 0);
    # "nearest-exact" floor((dst + 0.5) * 3/4) = 0, 1, 1, 2 (one copy)
    want_nearest = np.zeros((4, 4), bool)
    want_nearest[:2, :2] = True
    want_exact = np.zeros((4, 4), bool)
    want_exact[0, 0] = True
    np.testing.assert_array_equal(props.resize((4, 4)).to_dense()[0], want_nearest)
    np.testing.assert_array_equal(
        props.resize((4, 4), mode="nearest-exact").to_dense()[0], want_exact
    )
    with pytest.raises(ValueError, match="mode must be one of"):
        props.resize((2, 2), mode="bilinear")


def test_collate_resizes_with_the_chosen_rule():
    from samrefine import ProposalCollate

    m = np.zeros((1, 3, 3), bool)
    m[0, 0, 0] = True
    p = Proposals.from_dense(m)
    batch = ProposalCollate(size=(4, 4), resize_mode="nearest-exact")([{"x": 0, "proposals": p}])
    assert batch["proposals"][0] == p.resize((4, 4), mode="nearest-exact")
    with pytest.raises(ValueError, match="resize_mode"):
        ProposalCollate(size=(4, 4), resize_mode="area")
