"""Hypothesis strategies shared by the tests (a plain module: ``conftest`` names collide)."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


@st.composite
def mask_stacks(draw, max_n=6, max_side=17, min_n=0):
    """(N, H, W) bool stacks mixing empty, full, single-pixel and random masks."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    n = draw(st.integers(min_n, max_n))
    kinds = draw(
        st.lists(
            st.sampled_from(["random", "empty", "full", "pixel", "blob"]), min_size=n, max_size=n
        )
    )
    out = np.zeros((n, h, w), bool)
    for k, kind in enumerate(kinds):
        if kind == "random":
            out[k] = draw(hnp.arrays(np.bool_, (h, w)))
        elif kind == "full":
            out[k] = True
        elif kind == "pixel":
            out[k, draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = True
        elif kind == "blob":
            y0, y1 = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
            x0, x1 = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
            out[k, y0:y1, x0:x1] = True
    return out
