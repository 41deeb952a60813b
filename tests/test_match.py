"""IOM / CPI on both backends against the dense numpy reference of tests/naive.py."""

import naive
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import mask_stacks

import samrefine as sr
from samrefine import Proposals, kernels
from samrefine.match import KernelMode, resolve_strategy

CUDA = torch.cuda.is_available()
BACKENDS = ["numba", "torch"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if CUDA else [])


@st.composite
def cases(draw, max_b=3):
    """A batch: B pseudo-labels and B proposal stacks of one (H, W)."""
    stack = draw(mask_stacks(max_n=6, min_n=0))
    n, h, w = stack.shape
    b = draw(st.integers(1, max_b))
    pseudo, props = [], []
    for _ in range(b):
        kind = draw(st.sampled_from(["random", "empty", "full", "copy", "noisy"]))
        if kind == "random":
            p = draw(hnp.arrays(np.bool_, (h, w)))
        elif kind == "empty":
            p = np.zeros((h, w), bool)
        elif kind == "full":
            p = np.ones((h, w), bool)
        else:  # a proposal, possibly with flipped pixels: forces matches
            base = stack[draw(st.integers(0, n - 1))] if n else np.zeros((h, w), bool)
            flip = draw(hnp.arrays(np.bool_, (h, w))) if kind == "noisy" else False
            p = base ^ (flip & (np.arange(h * w).reshape(h, w) % 5 == 0))
        pseudo.append(p)
        # each image gets a (possibly empty) subset of the stack, in a drawn order
        idx = draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n)) if n else []
        props.append(stack[idx] if n else np.zeros((0, h, w), bool))
    return np.stack(pseudo), props


def _run(pseudo, props, strategy, backend, **kw):
    plist = [Proposals.from_dense(p) for p in props]
    if backend == "numba":
        return sr.refine(pseudo, plist, strategy, **kw), lambda a: np.asarray(a)
    dev = "cuda" if backend == "cuda" else "cpu"
    ref = sr.refine(
        torch.from_numpy(pseudo).to(dev),
        sr.ProposalBatch(plist).to(dev),
        strategy,
        backend="torch",
        **kw,
    )
    return ref, lambda a: a.cpu().numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=cases(), thresh=st.sampled_from([0.0, 0.3, 0.5, 0.9]))
def test_iom_matches_reference(backend, case, thresh):
    pseudo, props = case
    ref, host = _run(pseudo, props, "iom", backend, iom_thresh=thresh)
    masks = host(ref.masks)
    for b in range(len(pseudo)):
        want, matched, chosen = naive.iom(pseudo[b], props[b], thresh)
        assert bool(host(ref.matched)[b]) == matched
        assert int(host(ref.chosen)[b]) == chosen
        np.testing.assert_array_equal(masks[b], want)
        inter, iou, s1, s2 = naive.scores(pseudo[b], props[b])
        sl = slice(ref.mask_offsets[b], ref.mask_offsets[b + 1])
        np.testing.assert_array_equal(host(ref.scores.intersection)[sl], inter)
        np.testing.assert_allclose(host(ref.scores.iou)[sl], iou, rtol=0, atol=1e-15)
        np.testing.assert_allclose(host(ref.scores.s1)[sl], s1, rtol=0, atol=1e-15)
        np.testing.assert_allclose(host(ref.scores.s2)[sl], s2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    case=cases(),
    under=st.sampled_from([None, 0.0, 0.5, 0.7]),
    over=st.sampled_from([None, 0.0, 0.5, 0.7]),
)
def test_cpi_matches_reference(backend, case, under, over):
    if under is None and over is None:
        return
    pseudo, props = case
    ref, host = _run(pseudo, props, "cpi", backend, under=under, over=over)
    masks = host(ref.masks)
    for b in range(len(pseudo)):
        want, matched, sel = naive.cpi(pseudo[b], props[b], under, over)
        assert bool(host(ref.matched)[b]) == matched
        assert ref.selected[b].tolist() == sel
        np.testing.assert_array_equal(masks[b], want)
        if matched:  # refined is inside the union of proposals
            assert not (masks[b] & ~props[b].any(0)).any()


@given(case=cases(max_b=4))
def test_backends_bit_identical(case):
    pseudo, props = case
    for strategy in ("iom", "cpi", "cpi-u", "cpi-o", "none"):
        a, _ = _run(pseudo, props, strategy, "numba")
        b, host = _run(pseudo, props, strategy, "torch")
        np.testing.assert_array_equal(a.masks, host(b.masks))
        np.testing.assert_array_equal(a.matched, host(b.matched))
        np.testing.assert_array_equal(a.chosen, host(b.chosen))
        np.testing.assert_array_equal(a.selected_mask, host(b.selected_mask))
        for f in ("intersection", "iou", "s1", "s2"):
            assert np.array_equal(
                getattr(a.scores, f), host(getattr(b.scores, f)), equal_nan=True
            )  # bit for bit, not approximately


@given(case=cases(), t1=st.floats(0, 1), t2=st.floats(0, 1))
def test_raising_a_threshold_never_selects_more(case, t1, t2):
    lo, hi = sorted((t1, t2))
    pseudo, props = case
    for kw_lo, kw_hi in (
        ({"under": lo, "over": None}, {"under": hi, "over": None}),
        ({"under": None, "over": lo}, {"under": None, "over": hi}),
    ):
        a, _ = _run(pseudo, props, "cpi", "numba", **kw_lo)
        b, _ = _run(pseudo, props, "cpi", "numba", **kw_hi)
        assert not (b.selected_mask & ~a.selected_mask).any()
    a, _ = _run(pseudo, props, "iom", "numba", iom_thresh=lo)
    b, _ = _run(pseudo, props, "iom", "numba", iom_thresh=hi)
    assert not (b.matched & ~a.matched).any()


def test_iom_ties_go_to_lowest_index():
    p = np.zeros((4, 4), bool)
    p[:2] = True  # 8 pixels
    a = np.zeros((4, 4), bool)
    a[:2, :3] = True  # IoU 6/8
    b = np.zeros((4, 4), bool)
    b[:2, 1:] = True  # IoU 6/8, same score
    ref = sr.iom(p, Proposals.from_dense(np.stack([np.zeros_like(p), a, b])))
    assert ref.chosen.tolist() == [1] and ref.matched.tolist() == [True]
    np.testing.assert_array_equal(ref.masks, a)


def test_shapes_dtypes_and_kinds_follow_the_input(rng):
    props = Proposals.from_dense(rng.random((5, 6, 7)) < 0.5)
    for arr in (
        rng.random((6, 7)) < 0.5,
        (rng.random((6, 7)) < 0.5).astype(np.int64),
        (rng.random((6, 7)) < 0.5).astype(np.float32),
    ):
        out = sr.cpi(arr, props, 0.1, None)
        assert isinstance(out.masks, np.ndarray) and out.masks.shape == (6, 7)
        assert out.masks.dtype == arr.dtype
        t = torch.from_numpy(arr)
        out_t = sr.cpi(t, props, 0.1, None)
        assert isinstance(out_t.masks, torch.Tensor) and out_t.masks.dtype == t.dtype
        np.testing.assert_array_equal(out_t.masks.numpy(), out.masks)


def test_probabilities_need_prob_thresh(rng):
    prob = rng.random((2, 6, 7)).astype(np.float32)
    props = [Proposals.from_dense(rng.random((3, 6, 7)) < 0.5)] * 2
    with pytest.raises(ValueError, match="prob_thresh=0.5"):
        sr.refine(prob, props, "cpi")
    out = sr.refine(prob, props, "cpi", prob_thresh=0.5)
    hard = sr.refine(prob > 0.5, props, "cpi")
    np.testing.assert_array_equal(out.masks, hard.masks)
    assert out.masks.dtype == np.bool_
    bad = prob.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sr.refine(bad, props, "cpi", prob_thresh=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sr.refine(prob * 2, props, "cpi", prob_thresh=0.5)


def test_bad_input_is_named(rng):
    props = Proposals.from_dense(rng.random((3, 6, 7)) < 0.5)
    pseudo = rng.random((6, 7)) < 0.5
    with pytest.raises(ValueError, match="resize the proposals"):
        sr.iom(pseudo[:5], props)
    with pytest.raises(ValueError, match="2 images but proposals have 1"):
        sr.iom(np.stack([pseudo, pseudo]), [props])
    with pytest.raises(ValueError, match="only 0 and 1"):
        sr.iom(pseudo.astype(np.int64) * 2, props)
    with pytest.raises(TypeError, match="dtype"):
        sr.iom(pseudo.astype(np.complex64), props)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        sr.iom(pseudo[None, None], props)
    with pytest.raises(ValueError, match="unknown strategy"):
        sr.refine(pseudo, props, "best")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sr.iom(pseudo, props, thresh=1.5)
    with pytest.raises(ValueError, match="at least one"):
        sr.cpi(pseudo, props, None, None)
    with pytest.raises(ValueError, match="backend"):
        sr.iom(pseudo, props, backend="cupy")
    with pytest.raises(TypeError, match="ProposalBatch"):
        sr.iom(pseudo, props.to_dense())


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_matches_numba_bit_for_bit(rng):
    h = w = 96
    props = [Proposals.from_dense(rng.random((40, h, w)) < rng.random()) for _ in range(16)]
    pseudo = rng.random((16, h, w)) < 0.4
    for strategy in ("iom", "cpi", "cpi-u"):
        a = sr.refine(pseudo, props, strategy)
        b = sr.refine(torch.from_numpy(pseudo).cuda(), sr.ProposalBatch(props).to("cuda"), strategy)
        assert b.masks.is_cuda
        np.testing.assert_array_equal(a.masks, b.masks.cpu().numpy())
        assert np.array_equal(a.scores.iou, b.scores.iou.cpu().numpy())


def test_strategy_registry_is_the_module_table():
    assert list(sr.STRATEGIES) == ["iom", "cpi", "cpi-u", "cpi-o", "none"]
    table = {name: (s.mode, s.thresholds, dict(s.defaults)) for name, s in sr.STRATEGIES.items()}
    assert table == {
        "iom": (KernelMode.IOM, ("iom_thresh",), {"iom_thresh": 0.5}),
        "cpi": (KernelMode.CPI, ("under", "over"), {"under": 0.7, "over": 0.7}),
        "cpi-u": (KernelMode.CPI, ("under",), {"under": 0.7}),
        "cpi-o": (KernelMode.CPI, ("over",), {"over": 0.7}),
        "none": (KernelMode.NONE, (), {}),
    }
    with pytest.raises(TypeError):
        sr.STRATEGIES["mine"] = sr.STRATEGIES["cpi"]  # read-only


def test_resolver_defaults_and_disabling():
    r = resolve_strategy("cpi-u")
    assert (r.mode, r.under, r.over, r.thresholds) == (KernelMode.CPI, 0.7, None, {"under": 0.7})
    assert resolve_strategy("cpi-o", over=0.4).thresholds == {"over": 0.4}
    assert resolve_strategy("cpi", over=None).thresholds == {"under": 0.7, "over": None}
    assert resolve_strategy("iom").iom_thresh == 0.5
    # a threshold the strategy does not read may be None (no test to switch off)
    assert resolve_strategy("cpi-u", over=None) == resolve_strategy("cpi-u")
    assert resolve_strategy("none").thresholds == {}


@pytest.mark.parametrize(
    "name, kw, reads",
    [
        ("cpi-u", {"over": 0.7}, "under"),
        ("cpi-o", {"under": 0.7}, "over"),
        ("iom", {"under": 0.7}, "iom_thresh"),
        ("cpi", {"iom_thresh": 0.5}, "under, over"),
        ("none", {"under": 0.7}, "no thresholds"),
    ],
)
def test_a_threshold_the_strategy_does_not_read_is_an_error(name, kw, reads, rng):
    with pytest.raises(ValueError, match=rf"does not read {next(iter(kw))} \(it reads: {reads}\)"):
        resolve_strategy(name, **kw)
    props = Proposals.from_dense(rng.random((3, 6, 7)) < 0.5)
    with pytest.raises(ValueError, match="does not read"):  # every entry point uses the resolver
        sr.refine(rng.random((6, 7)) < 0.5, props, name, **kw)
    with pytest.raises(ValueError, match="does not read"):
        sr.semires_targets(torch.zeros(1, 6, 7), [props], name, **kw)


def test_required_thresholds_and_ranges():
    with pytest.raises(ValueError, match="'cpi-u' needs under"):
        resolve_strategy("cpi-u", under=None)
    with pytest.raises(ValueError, match="at least one of under/over"):
        resolve_strategy("cpi", under=None, over=None)
    with pytest.raises(ValueError, match=r"over must be in \[0, 1\]"):
        resolve_strategy("cpi", over=float("nan"))
    with pytest.raises(TypeError, match="number"):
        resolve_strategy("iom", iom_thresh="high")
    with pytest.raises(ValueError, match="unknown strategy 'best'; valid: iom, cpi, cpi-u"):
        resolve_strategy("best")


def test_refine_takes_a_resolved_strategy(rng):
    pseudo = rng.random((6, 7)) < 0.5
    props = Proposals.from_dense(rng.random((4, 6, 7)) < 0.5)
    r = resolve_strategy("cpi", under=0.3, over=0.2)
    a = sr.refine(pseudo, props, r)
    b = sr.refine(pseudo, props, "cpi", under=0.3, over=0.2)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.strategy == "cpi"
    with pytest.raises(ValueError, match="resolve_strategy"):
        sr.refine(pseudo, props, r, under=0.5)


@pytest.mark.parametrize(
    "mode, kw",
    [
        (KernelMode.IOM, {"iom_thresh": 0.2, "under": None, "over": None}),
        (KernelMode.CPI, {"iom_thresh": 0.0, "under": 0.3, "over": 0.6}),
    ],
)
def test_both_kernels_return_one_result_type(rng, mode, kw):
    props = [Proposals.from_dense(rng.random((k, 9, 7)) < 0.4) for k in (5, 0, 3)]
    batch = sr.ProposalBatch(props)
    x = (rng.random((3, 9, 7)) < 0.5).astype(np.uint8)
    a = kernels.refine_batch(x, batch.segments(), mode, eps=1e-9, backend="numba", **kw)
    b = kernels.refine_batch(
        torch.from_numpy(x), batch.segments("cpu"), mode, eps=1e-9, backend="torch", **kw
    )
    assert type(a) is type(b) is kernels.KernelResult
    for name, va, vb in zip(a._fields, a, b):
        vb = vb.numpy()
        assert va.dtype == vb.dtype, name
        assert np.array_equal(va, vb), name
    assert a.masks.dtype == np.bool_ and a.masks.shape == (3, 9, 7)
    # chosen is local to each image: within [-1, len(props[b]))
    assert all(-1 <= c < len(p) for c, p in zip(a.chosen, props))


@pytest.mark.parametrize("strategy", ["iom", "cpi-u", "cpi"])
@given(stack=mask_stacks(max_n=10, min_n=2, max_side=12), data=st.data())
def test_instances_with_repeated_proposals_are_refined_one_by_one(strategy, stack, data):
    """Instance pseudo-labels (docs/semantic.md): N possibly overlapping masks of one image,
    the image's proposals repeated per instance, give each instance exactly its own refine."""
    k = data.draw(st.integers(1, len(stack) - 1))
    masks, p = stack[:k], Proposals.from_dense(stack[k:])
    ref = sr.refine(masks, [p] * len(masks), strategy)
    for i, m in enumerate(masks):
        one = sr.refine(m, p, strategy)
        np.testing.assert_array_equal(ref.masks[i], one.masks)
        assert bool(ref.matched[i]) == bool(one.matched)
        assert int(ref.chosen[i]) == int(np.asarray(one.chosen).reshape(-1)[0])
