"""refine_semantic on both backends against the per-region numpy reference (naive_semantic.py)."""

import naive_semantic
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import mask_stacks

import samrefine as sr
from samrefine import Proposals

CUDA = torch.cuda.is_available()
IGNORE = 255


@st.composite
def label_maps(draw, h, w):
    """(H, W) uint8 class maps: blocky or speckled, with ignore pixels, absent classes and
    one-pixel regions."""
    n_cls = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["blocks", "speckle", "uniform"]))
    if kind == "speckle":
        lab = draw(hnp.arrays(np.uint8, (h, w), elements=st.integers(0, n_cls - 1)))
    else:
        lab = np.full((h, w), draw(st.integers(0, n_cls - 1)), np.uint8)
        if kind == "blocks":
            for _ in range(draw(st.integers(0, 4))):
                y0, y1 = sorted(draw(st.lists(st.integers(0, h), min_size=2, max_size=2)))
                x0, x1 = sorted(draw(st.lists(st.integers(0, w), min_size=2, max_size=2)))
                lab[y0:y1, x0:x1] = draw(st.integers(0, n_cls - 1))
    # one-pixel regions of a fresh class, and ignore pixels
    for _ in range(draw(st.integers(0, 2))):
        lab[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = n_cls + 1
    if draw(st.booleans()):
        ign = draw(hnp.arrays(np.bool_, (h, w)))
        lab[ign & (np.arange(h * w).reshape(h, w) % 3 == 0)] = IGNORE
    return lab


@st.composite
def cases(draw, max_b=2):
    stack = draw(mask_stacks(max_n=6, min_n=0, max_side=13))
    n, h, w = stack.shape
    b = draw(st.integers(1, max_b))
    labels, props = [], []
    for _ in range(b):
        lab = draw(label_maps(h, w))
        # proposals: the drawn stack plus noisy copies of class masks (forces matches)
        extra = []
        for c in draw(st.lists(st.integers(0, 7), max_size=3)):
            m = lab == c
            flip = draw(hnp.arrays(np.bool_, (h, w))) & (np.arange(h * w).reshape(h, w) % 4 == 0)
            extra.append(m ^ flip)
        idx = draw(st.lists(st.integers(0, n - 1), max_size=n)) if n else []
        p = np.concatenate([stack[idx], np.asarray(extra, bool).reshape(-1, h, w)])
        labels.append(lab)
        props.append(p)
    return np.stack(labels), props


SETTINGS = st.fixed_dictionaries(
    {
        "strategy": st.sampled_from(["iom", "cpi", "cpi-u", "cpi-o", "none"]),
        "per": st.sampled_from(["class", "component"]),
        "give_up": st.sampled_from(["ignore", "keep"]),
        "skip": st.sampled_from([(), (0,), (1, 3)]),
        "t": st.sampled_from([0.0, 0.3, 0.5, 0.7]),
    }
)


def _kw(s):
    kw = dict(
        strategy=s["strategy"],
        per=s["per"],
        give_up=s["give_up"],
        skip_classes=s["skip"],
        ignore_index=IGNORE,
    )
    if s["strategy"] == "iom":
        kw["iom_thresh"] = s["t"]
    elif s["strategy"] == "cpi":
        kw["under"] = kw["over"] = s["t"]
    elif s["strategy"] == "cpi-u":
        kw["under"] = s["t"]
    elif s["strategy"] == "cpi-o":
        kw["over"] = s["t"]
    return kw


def _ref_kw(s):
    t = s["t"]
    d = {"cpi": (t, t), "cpi-u": (t, None), "cpi-o": (None, t)}.get(s["strategy"], (0.7, None))
    return dict(
        strategy=s["strategy"],
        per=s["per"],
        ignore_index=IGNORE,
        skip=s["skip"],
        give_up=s["give_up"],
        iom_thresh=t,
        under=d[0],
        over=d[1],
    )


def _host(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _check_against_reference(out, labels, props, s):
    got_lab, got_m = _host(out.labels), _host(out.matched)
    reg, pairs = out.regions, out.pairs
    for b in range(len(labels)):
        want_lab, want_m, rows, want_pairs = naive_semantic.refine_semantic(
            labels[b], props[b], **_ref_kw(s)
        )
        np.testing.assert_array_equal(got_lab[b], want_lab)
        np.testing.assert_array_equal(got_m[b], want_m)
        r0, r1 = out.region_offsets[b], out.region_offsets[b + 1]
        assert r1 - r0 == len(rows)
        for i, row in enumerate(rows):
            r = r0 + i
            assert int(_host(reg.image)[r]) == b
            assert int(_host(reg.cls)[r]) == row["cls"]
            assert int(_host(reg.component)[r]) == row["component"]
            assert int(_host(reg.area)[r]) == row["area"]
            assert bool(_host(reg.matched)[r]) == row["matched"]
            assert float(_host(reg.score)[r]) == row["score"]
            assert int(_host(reg.chosen)[r]) == row["chosen"]
            assert out.selected(r).tolist() == row["selected"]
        if s["strategy"] == "none":
            assert len(pairs) == 0
            continue
        pr = _host(pairs.region)
        keep = (pr >= r0) & (pr < r1)
        got_pairs = list(
            zip(
                (pr[keep] - r0).tolist(),
                _host(pairs.proposal)[keep].tolist(),
                _host(pairs.intersection)[keep].tolist(),
                _host(pairs.iou)[keep].tolist(),
                _host(pairs.s1)[keep].tolist(),
                _host(pairs.s2)[keep].tolist(),
                _host(pairs.selected)[keep].tolist(),
                strict=True,
            )
        )
        assert got_pairs == want_pairs


@given(case=cases(), s=SETTINGS)
def test_numba_matches_reference(case, s):
    labels, props = case
    plist = [Proposals.from_dense(p) for p in props]
    out = sr.refine_semantic(labels, plist, backend="numba", **_kw(s))
    assert out.labels.dtype == labels.dtype and isinstance(out.labels, np.ndarray)
    _check_against_reference(out, labels, props, s)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if CUDA else []))
@given(case=cases(), s=SETTINGS, dtype=st.sampled_from([torch.uint8, torch.int64]))
def test_torch_matches_reference_and_numba(device, case, s, dtype):
    labels, props = case
    plist = [Proposals.from_dense(p) for p in props]
    lt = torch.from_numpy(labels).to(device=device, dtype=dtype)
    out = sr.refine_semantic(lt, sr.ProposalBatch(plist).to(device), backend="torch", **_kw(s))
    assert out.labels.dtype == dtype and out.labels.device.type == device
    assert out.matched.dtype == torch.bool
    _check_against_reference(out, labels.astype(np.int64), props, s)
    # bit-identical with the numba backend, field by field
    nb_out = sr.refine_semantic(labels, plist, backend="numba", **_kw(s))
    for table in ("regions", "pairs"):
        a, b = getattr(out, table), getattr(nb_out, table)
        for f in a.__dataclass_fields__:
            np.testing.assert_array_equal(_host(getattr(a, f)), _host(getattr(b, f)), err_msg=f)
    np.testing.assert_array_equal(out.region_offsets, nb_out.region_offsets)


@pytest.mark.parametrize("strategy", ["iom", "cpi-u"])
def test_many_regions_match_reference(strategy):
    """Over 64 regions in an image (speckle, per component): the scorer's sparse bookkeeping
    path, which the small hypothesis maps never reach."""
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (1, 24, 20)).astype(np.uint8)
    masks = rng.random((12, 24, 20)) < 0.4
    masks[0] = True
    s = {"strategy": strategy, "per": "component", "give_up": "ignore", "skip": (), "t": 0.3}
    out = sr.refine_semantic(lab, Proposals.from_dense(masks), **_kw(s))
    assert len(out.regions) > 64
    _check_against_reference(out, lab, [masks], s)


def _naive_column_runs(keys):
    """Per-column runs in plain numpy: (first row, value) of each run, column by column."""
    n, h, w = keys.shape
    out = []
    for b in range(n):
        for x in range(w):
            col = keys[b, :, x]
            starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
            out.append((starts, col[starts]))
    return out


@pytest.mark.parametrize(
    ("h", "w", "period"),
    [(256, 9, 1), (257, 9, 1), (600, 17, 1), (600, 17, 2), (1, 5, 1), (40, 1, 3)],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int64])
def test_column_runs_narrow_and_wide_index(h, w, period, dtype):
    """The per-pixel run index is uint8 while no column has more than 256 runs and int32
    beyond (256 runs fit, 257 do not); counts fold every 255 rows (h = 600). Checked against
    numpy, for several key dtypes and widths that are not a multiple of 8."""
    from samrefine.kernels.semantic_numba import column_runs

    rng = np.random.default_rng(h + w + period)
    keys = np.empty((2, h, w), dtype)
    keys[0] = (np.arange(h)[:, None] // period + np.arange(w)) % 3  # runs of `period` rows
    keys[1] = rng.integers(0, 2, (h, w))
    colptr, run_y0, run_key, loc = column_runs(keys)
    most = int(np.diff(colptr.reshape(-1)).max()) if w else 0
    assert loc.dtype == (np.uint8 if most <= 256 else np.int32)
    want = _naive_column_runs(keys)
    for b in range(2):
        for x in range(w):
            a, z = colptr[b, x], colptr[b, x + 1]
            starts, vals = want[b * w + x]
            np.testing.assert_array_equal(run_y0[a:z], starts)
            np.testing.assert_array_equal(run_key[a:z], vals.astype(np.int64))
            # every pixel's run index points at the run that holds it
            j = a + loc[b, :, x].astype(np.int64)
            assert (run_y0[j] <= np.arange(h)).all()
            assert (run_key[j] == keys[b, :, x]).all()


@pytest.mark.parametrize("strategy", ["iom", "cpi-u"])
def test_tall_map_with_many_runs_per_column_matches_reference(strategy):
    """More than 256 runs in a column (the wide run index) through refine_semantic."""
    rng = np.random.default_rng(1)
    lab = ((np.arange(300)[:, None] + np.arange(7)) % 2 + 1).astype(np.int16)[None]
    lab[0, 100:140, 2:5] = 0
    masks = rng.random((5, 300, 7)) < 0.5
    masks[0] = lab[0] == 1
    s = {"strategy": strategy, "per": "class", "give_up": "ignore", "skip": (), "t": 0.3}
    out = sr.refine_semantic(lab, Proposals.from_dense(masks), **_kw(s))
    _check_against_reference(out, lab, [masks], s)


@given(case=cases(max_b=3), s=SETTINGS)
def test_batch_equals_one_image_at_a_time(case, s):
    labels, props = case
    plist = [Proposals.from_dense(p) for p in props]
    out = sr.refine_semantic(labels, plist, **_kw(s))
    for b in range(len(labels)):
        one = sr.refine_semantic(labels[b], plist[b], **_kw(s))
        np.testing.assert_array_equal(out.labels[b], one.labels)
        np.testing.assert_array_equal(out.matched[b], one.matched)


# ---------------------------------------------------------------- the documented rules


def _props(*masks):
    """One-row proposals from 1-D rows."""
    return Proposals.from_dense(np.array(masks, bool).reshape(len(masks), 1, -1))


def test_give_up_ignore_or_keep():
    lab = np.array([[1, 1, 1, 1, 2, 2]], np.uint8)
    props = _props([0, 1, 1, 1, 1, 0])
    out = sr.refine_semantic(lab, props)
    assert out.labels.tolist() == [[255, 1, 1, 1, 1, 2]]
    assert out.matched.tolist() == [[False, True, True, True, True, False]]
    kept = sr.refine_semantic(lab, props, give_up="keep")
    assert kept.labels.tolist() == [[1, 1, 1, 1, 1, 2]]
    assert kept.matched.tolist() == out.matched.tolist()


def test_conflict_goes_to_the_higher_scoring_region():
    # class 1 (cols 0-3) and class 2 (cols 4-7); proposal A = cols 0-4 (IoU 4/5 with class 1),
    # proposal B = cols 3-7 (IoU 4/5 with class 2) -> pixel 3 and 4 claimed twice.
    lab = np.array([[1, 1, 1, 1, 2, 2, 2, 2]], np.int64)
    a = [1, 1, 1, 1, 1, 0, 0, 0]
    b = [0, 0, 0, 1, 1, 1, 1, 1]
    out = sr.refine_semantic(lab, _props(a, b), strategy="iom")
    # equal scores (0.8 each): the lower region id (class 1) wins both contested pixels
    assert out.labels.tolist() == [[1, 1, 1, 1, 1, 2, 2, 2]]
    # make B fit class 2 better (IoU 1): class 2 wins the pixel both claim
    b2 = [0, 0, 0, 0, 1, 1, 1, 1]
    a2 = [1, 1, 1, 1, 1, 0, 0, 0]
    out = sr.refine_semantic(lab, _props(a2, b2), strategy="iom")
    np.testing.assert_array_equal(out.regions.score, [0.8, 1.0])
    assert out.labels.tolist() == [[1, 1, 1, 1, 2, 2, 2, 2]]


def test_claims_overwrite_ignore_and_skipped_classes():
    lab = np.array([[0, 255, 1, 1, 0, 0]], np.uint8)
    out = sr.refine_semantic(lab, _props([1, 1, 1, 1, 0, 0]), skip_classes=(0,))
    assert out.labels.tolist() == [[1, 1, 1, 1, 0, 0]]
    assert len(out.regions) == 1 and int(out.regions.cls[0]) == 1


def test_components_are_8_connected():
    lab = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], np.uint8)
    out = sr.refine_semantic(lab, Proposals.empty((4, 3)), per="component", skip_classes=(0,))
    # the diagonal pair is one component, the bottom pair another
    assert out.regions.component.tolist() == [0, 1]
    assert out.regions.area.tolist() == [2, 2]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_none_strategy_no_proposals_no_regions_change_nothing(backend):
    lab = np.array([[3, 3, 255], [1, 1, 1]], np.uint8)
    full = Proposals.from_dense(np.ones((1, 2, 3), bool))
    for strategy in ("none", "cpi-u"):
        out = sr.refine_semantic(lab, Proposals.empty((2, 3)), strategy=strategy, backend=backend)
        np.testing.assert_array_equal(out.labels, lab)
        assert not out.matched.any() and out.match_rate == 0.0
    # every pixel void or skipped: no region, nothing refined even by a full proposal
    for skip in [(0,), ()]:
        lab = np.full((2, 3), 255 if not skip else 0, np.uint8)
        out = sr.refine_semantic(lab, full, skip_classes=skip, backend=backend)
        np.testing.assert_array_equal(out.labels, lab)
        assert len(out.regions) == 0 and not out.matched.any()


# ---------------------------------------------------------------- validation


def test_bad_input_is_refused_with_a_fix():
    props = Proposals.empty((2, 3))
    lab = np.zeros((2, 3), np.uint8)
    with pytest.raises(TypeError, match="integer class map"):
        sr.refine_semantic(lab.astype(np.float32), props)
    with pytest.raises(TypeError, match="refine"):
        sr.refine_semantic(lab.astype(bool), props)
    with pytest.raises(ValueError, match="negative class"):
        sr.refine_semantic(np.full((2, 3), -2, np.int64), props)
    with pytest.raises(ValueError, match="num_classes=3"):
        sr.refine_semantic(np.full((2, 3), 5, np.int64), props, num_classes=3)
    with pytest.raises(ValueError, match="resize"):
        sr.refine_semantic(np.zeros((4, 4), np.uint8), props)
    with pytest.raises(ValueError, match="2 images"):
        sr.refine_semantic(np.zeros((2, 2, 3), np.uint8), props)
    with pytest.raises(ValueError, match="does not fit"):
        sr.refine_semantic(lab.astype(np.int8), props)  # 255 does not fit int8
    with pytest.raises(ValueError, match="give_up='keep'"):
        sr.refine_semantic(lab, props, ignore_index=None)
    with pytest.raises(ValueError, match="per must"):
        sr.refine_semantic(lab, props, per="instance")
    with pytest.raises(ValueError, match="unknown strategy"):
        sr.refine_semantic(lab, props, strategy="best")
    with pytest.raises(ValueError, match="does not read under"):
        sr.refine_semantic(lab, props, strategy="iom", under=0.5)
    with pytest.raises(ValueError, match="skip_classes"):
        sr.refine_semantic(lab, props, skip_classes=(-1,))
    # ignore_index=-1 with a signed dtype is fine, and -1 pixels are void
    out = sr.refine_semantic(np.array([[-1, 0, 0], [0, 0, 0]]), props, ignore_index=-1)
    assert out.labels[0, 0] == -1 and len(out.regions) == 1


def test_thresholds_follow_the_strategy_registry_as_refine_does():
    # the rules of samrefine.resolve_strategy, shared with refine: a threshold the strategy does
    # not read raises, cpi may switch one test off, a ResolvedStrategy carries its thresholds
    lab = np.array([[1, 1, 1, 1, 2, 2]], np.uint8)
    props = Proposals.from_dense(np.array([[[0, 1, 1, 1, 1, 0]]], bool))
    with pytest.raises(ValueError, match="does not read over"):
        sr.refine_semantic(lab, props, strategy="cpi-u", over=0.7)
    with pytest.raises(ValueError, match="does not read iom_thresh"):
        sr.refine_semantic(lab, props, strategy="cpi", iom_thresh=0.5)
    with pytest.raises(ValueError, match="at least one"):
        sr.refine_semantic(lab, props, strategy="cpi", under=None, over=None)
    # class 1: s1 = 3/4, s2 = 3/4; class 2: s1 = 1/2, s2 = 1/4
    assert sr.refine_semantic(lab, props, strategy="cpi-u", under=0.8).regions.matched.sum() == 0
    by_name = sr.refine_semantic(lab, props, strategy="cpi", under=None, over=0.7)
    assert by_name.strategy == "cpi"
    np.testing.assert_array_equal(by_name.regions.matched, [True, False])
    resolved = sr.resolve_strategy("cpi", under=None, over=0.7)
    by_record = sr.refine_semantic(lab, props, strategy=resolved)
    np.testing.assert_array_equal(by_record.labels, by_name.labels)
    np.testing.assert_array_equal(by_record.labels, [[255, 1, 1, 1, 1, 2]])
    with pytest.raises(ValueError, match="resolve_strategy"):
        sr.refine_semantic(lab, props, strategy=resolved, over=0.5)


def test_import_samrefine_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, samrefine; samrefine.refine_semantic; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
