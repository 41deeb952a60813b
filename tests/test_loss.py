"""PWABCELoss: formula transcription, reference group-mean rule, gradients, autocast, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import samrefine
from samrefine.loss import PWABCELoss


def psi(p: float) -> float:
    return 1.3 - math.exp(-((p - 0.5) ** 2) / 0.2) / math.sqrt(2 * math.pi * 0.1)


def bce(z: float, y: float) -> float:
    """-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)), written with log1p/exp."""
    log_sig = -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))
    log_one_minus = -z + log_sig
    return -(y * log_sig + (1 - y) * log_one_minus)


def naive_loss(z, y, p, matched, ignore, class_weight, reduction):
    """Direct transcription with Python loops; z, y, p are (B, H, W) float64 numpy arrays."""
    b, h, w = z.shape
    per = np.zeros((b, h, w))
    valid = np.ones((b, h, w), bool) if ignore is None else ~ignore
    for i in range(b):
        for r in range(h):
            for c in range(w):
                if not valid[i, r, c]:
                    continue
                if matched[i]:
                    wt = 1.0 if class_weight is None else class_weight[int(y[i, r, c])]
                else:
                    wt = psi(p[i, r, c])
                per[i, r, c] = wt * bce(z[i, r, c], y[i, r, c])
    if reduction == "none":
        return per
    if reduction == "mean":
        return per.sum() / max(valid.sum(), 1)
    means = []
    for group in (np.asarray(matched), ~np.asarray(matched)):
        n = valid[group].sum()
        if n > 0:
            means.append(per[group].sum() / n)
    return sum(means) / len(means) if means else 0.0


@st.composite
def batches(draw):
    b = draw(st.integers(1, 4))
    h = draw(st.integers(1, 4))
    w = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    g = np.random.default_rng(seed)
    z = g.normal(0, 3, (b, h, w))
    y = (g.random((b, h, w)) > 0.5).astype(np.float64)
    p = g.random((b, h, w))
    matched = np.array(draw(st.lists(st.booleans(), min_size=b, max_size=b)))
    ignore = g.random((b, h, w)) > 0.7 if draw(st.booleans()) else None
    return z, y, p, matched, ignore


@settings(max_examples=40, deadline=None)
@given(
    data=batches(),
    class_weight=st.sampled_from([None, (0.9, 1.1), (2.0, 0.5)]),
    reduction=st.sampled_from(["mean", "group-mean", "none"]),
    two_class=st.booleans(),
)
def test_matches_direct_transcription(data, class_weight, reduction, two_class):
    z, y, p, matched, ignore = data
    zt = torch.from_numpy(z)
    if two_class:
        # (z0, z1) with z1 - z0 = z: softmax CE over two classes is BCE of the difference.
        z0 = torch.randn_like(zt)
        logits = torch.stack([z0, z0 + zt], dim=1)
    else:
        logits = zt[:, None] if reduction == "mean" else zt
    crit = PWABCELoss(class_weight=class_weight, reduction=reduction)
    got = crit(
        logits,
        torch.from_numpy(y).bool(),
        torch.from_numpy(p),
        torch.from_numpy(matched),
        ignore=None if ignore is None else torch.from_numpy(ignore),
    )
    expected = naive_loss(z, y, p, matched, ignore, class_weight, reduction)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_two_class_equals_torch_weighted_cross_entropy_mean():
    # The reference's criterion: CE(weight=(0.9, 1.1), reduction="none").mean(), all matched.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 6, 5, generator=g, dtype=torch.float64) * 4
    target = torch.randint(0, 2, (3, 6, 5), generator=g)
    ref = F.cross_entropy(
        logits, target, weight=torch.tensor([0.9, 1.1], dtype=torch.float64), reduction="none"
    ).mean()
    crit = PWABCELoss(class_weight=(0.9, 1.1))
    prob = torch.rand(3, 6, 5, generator=g, dtype=torch.float64)
    got = crit(logits, target, prob, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # prob and matched omitted: a supervised batch, every pixel weighted like a matched one.
    torch.testing.assert_close(crit(logits, target), ref, rtol=1e-12, atol=1e-12)


def test_group_mean_by_hand():
    # Three images of 1 x 2 pixels; images 0 and 2 matched, image 1 not. BCE with logits 0
    # costs log 2 per pixel whatever the target.
    logits = torch.zeros(3, 1, 2, dtype=torch.float64)
    logits[2, 0, 1] = 2.0
    target = torch.tensor([[[1, 0]], [[1, 1]], [[0, 1]]])
    prob = torch.tensor([[[0.9, 0.1]], [[0.5, 1.0]], [[0.2, 0.7]]], dtype=torch.float64)
    matched = torch.tensor([True, False, True])
    ln2 = math.log(2.0)
    bce_21 = math.log1p(math.exp(-2.0))  # target 1, logit 2
    matched_mean = (ln2 + ln2 + ln2 + bce_21) / 4  # PWA does not touch matched pixels
    unmatched_mean = (psi(0.5) * ln2 + psi(1.0) * ln2) / 2
    expected_group = (matched_mean + unmatched_mean) / 2
    expected_mean = (4 * matched_mean + 2 * unmatched_mean) / 6
    crit_g = PWABCELoss(reduction="group-mean")
    crit_m = PWABCELoss(reduction="mean")
    got_g = crit_g(logits, target, prob, matched)
    got_m = crit_m(logits, target, prob, matched)
    assert float(got_g) == pytest.approx(expected_group, rel=1e-12)
    assert float(got_m) == pytest.approx(expected_mean, rel=1e-12)
    # One group only: group-mean is that group's mean (no halving).
    only = crit_g(logits[1:2], target[1:2], prob[1:2], matched[1:2])
    assert float(only) == pytest.approx(unmatched_mean, rel=1e-12)


def test_prob_without_matched_weights_every_pixel():
    # Table 5's "PWA without refinement": every sample treated as unmatched.
    logits = torch.zeros(1, 1, 2, dtype=torch.float64)
    prob = torch.tensor([[[0.5, 1.0]]], dtype=torch.float64)
    got = PWABCELoss()(logits, torch.tensor([[[1, 0]]]), prob)
    assert float(got) == pytest.approx((psi(0.5) + psi(1.0)) * math.log(2) / 2, rel=1e-12)


def test_group_mean_equals_reference_style_unfused():
    """The SemiRES reference computation: separate CE calls per group, numpy PWA weights."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 2, 8, 8, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (5, 8, 8), generator=g)
    prob = torch.rand(5, 8, 8, generator=g, dtype=torch.float64)
    matched = torch.tensor([True, False, False, True, False])
    w_np = np.vectorize(psi)(prob.numpy())
    cw = torch.tensor([0.9, 1.1], dtype=torch.float64)
    l_match = F.cross_entropy(logits[matched], target[matched], weight=cw, reduction="none").mean()
    ce_u = F.cross_entropy(logits[~matched], target[~matched], reduction="none")
    l_unm = (ce_u * torch.from_numpy(w_np)[~matched]).mean()
    expected = (l_match + l_unm) / 2
    got = PWABCELoss(class_weight=(0.9, 1.1), reduction="group-mean")(logits, target, prob, matched)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_all_ignored_gives_zero_with_graph():
    logits = torch.randn(2, 3, 3, requires_grad=True)
    ignore = torch.ones(2, 3, 3, dtype=torch.bool)
    for reduction in ("mean", "group-mean"):
        out = PWABCELoss(reduction=reduction)(
            logits,
            torch.zeros(2, 3, 3),
            torch.rand(2, 3, 3),
            torch.tensor([True, False]),
            ignore=ignore,
        )
        assert float(out.detach()) == 0.0
        out.backward()
        assert torch.all(logits.grad == 0)


def test_ignored_pixels_may_hold_void_labels():
    target = torch.tensor([[[0, 255], [1, 1]]])
    ignore = target == 255
    logits = torch.tensor([[[0.0, 5.0], [1.0, -1.0]]], dtype=torch.float64)
    out = PWABCELoss()(
        logits, target, torch.full((1, 2, 2), 0.9), torch.tensor([True]), ignore=ignore
    )
    expected = (bce(0.0, 0) + bce(1.0, 1) + bce(-1.0, 1)) / 3
    assert float(out) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "group-mean", "none"])
@pytest.mark.parametrize("channels", [None, 1, 2])
def test_gradcheck(reduction, channels):
    g = torch.Generator().manual_seed(2)
    shape = (3, 4, 5) if channels is None else (3, channels, 4, 5)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(3, 4, 5, generator=g) > 0.5
    prob = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    matched = torch.tensor([True, False, True])
    ignore = torch.rand(3, 4, 5, generator=g) > 0.8
    crit = PWABCELoss(class_weight=(0.9, 1.1), reduction=reduction)
    assert torch.autograd.gradcheck(
        lambda x: crit(x, target, prob, matched, ignore=ignore), (logits,)
    )


def test_teacher_probability_is_detached():
    prob = torch.rand(2, 3, 3, requires_grad=True)
    logits = torch.randn(2, 3, 3, requires_grad=True)
    PWABCELoss()(logits, torch.zeros(2, 3, 3), prob, torch.tensor([False, False])).backward()
    assert prob.grad is None and logits.grad is not None


def test_autocast_bf16_and_fp16_no_overflow():
    lin = torch.nn.Linear(4, 2)
    x = torch.randn(2, 6, 6, 4) * 50
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(x).permute(0, 3, 1, 2)  # (B, 2, H, W) in bf16
        assert logits.dtype == torch.bfloat16
        target = torch.rand(2, 6, 6) > 0.5
        prob = torch.rand(2, 6, 6)
        out = PWABCELoss(reduction="group-mean")(logits, target, prob, torch.tensor([1, 0]).bool())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    ref = PWABCELoss(reduction="group-mean")(
        logits.float(), target, prob, torch.tensor([True, False])
    )
    torch.testing.assert_close(out, ref)
    # fp16 logits near the fp16 maximum: the loss is ~60000 per wrong pixel, not inf.
    big = torch.tensor([[[60000.0, -60000.0]]], dtype=torch.float16)
    out16 = PWABCELoss()(
        big, torch.tensor([[[0, 1]]]), torch.full((1, 1, 2), 0.9), torch.tensor([True])
    )
    assert float(out16) == pytest.approx(60000.0, rel=1e-3)


def test_torch_compile_fullgraph():
    crit = PWABCELoss(class_weight=(0.9, 1.1), reduction="group-mean")
    compiled = torch.compile(crit, backend="aot_eager", fullgraph=True)
    logits = torch.randn(3, 2, 8, 8, requires_grad=True)
    args = (torch.rand(3, 8, 8) > 0.5, torch.rand(3, 8, 8), torch.tensor([True, False, True]))
    out = compiled(logits, *args)
    torch.testing.assert_close(out, crit(logits, *args))
    out.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def _refinement(batch_size: int, size=(6, 6)):
    rng = np.random.default_rng(0)
    masks = rng.random((3, *size)) > 0.5
    props = [samrefine.Proposals.from_dense(masks) for _ in range(batch_size)]
    pseudo = torch.from_numpy(rng.random((batch_size, *size)) > 0.5)
    return samrefine.refine(pseudo, props, "cpi", under=0.3, over=0.3)


def test_accepts_refinement():
    ref = _refinement(3)
    logits = torch.randn(3, 6, 6, dtype=torch.float64)
    prob = torch.rand(3, 6, 6, dtype=torch.float64)
    crit = PWABCELoss(reduction="group-mean")
    explicit = crit(logits, torch.as_tensor(ref.masks), prob, torch.as_tensor(ref.matched))
    torch.testing.assert_close(crit(logits, ref, prob), explicit)


def test_errors_are_clear():
    crit = PWABCELoss()
    logits = torch.randn(2, 4, 4)
    target = torch.zeros(2, 4, 4)
    prob = torch.rand(2, 4, 4)
    matched = torch.tensor([True, False])
    with pytest.raises(ValueError, match="batch of 3 image"):
        crit(logits, _refinement(3, (4, 4)), prob)
    with pytest.raises(ValueError, match="target must have shape"):
        crit(logits, torch.zeros(2, 4, 5), prob, matched)
    with pytest.raises(ValueError, match="prob must have shape"):
        crit(logits, target, torch.rand(2, 4), matched)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        crit(logits, target, prob + 1, matched)
    with pytest.raises(ValueError, match="NaN"):
        crit(logits, target, torch.full((2, 4, 4), float("nan")), matched)
    with pytest.raises(ValueError, match="0/1"):
        crit(logits, target + 2, prob, matched)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        crit(logits, target, prob, torch.tensor([True]))
    with pytest.raises(TypeError, match="bool"):
        crit(logits, target, prob, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="prob"):
        crit(logits, target, None, matched)
    with pytest.raises(ValueError, match="C > 2"):
        crit(torch.randn(2, 3, 4, 4), target, prob, matched)
    with pytest.raises(TypeError, match="floating"):
        crit(torch.zeros(2, 4, 4, dtype=torch.long), target, prob, matched)
    with pytest.raises(TypeError, match="pseudo-label"):
        crit(logits, target, prob > 0.5, matched)
    with pytest.raises(ValueError, match="reduction"):
        PWABCELoss(reduction="sum")
    with pytest.raises(ValueError, match="class_weight"):
        PWABCELoss(class_weight=(1.0, -1.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 2, 16, 16, generator=g)
    target = torch.rand(4, 16, 16, generator=g) > 0.5
    prob = torch.rand(4, 16, 16, generator=g)
    matched = torch.tensor([True, False, False, True])
    crit = PWABCELoss(class_weight=(0.9, 1.1), reduction="group-mean")
    cpu = crit(logits, target, prob, matched)
    gpu = crit(logits.cuda(), target.cuda(), prob.cuda(), matched.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu)
    with pytest.raises(ValueError, match="logits are on"):
        crit(logits.cuda(), target, prob.cuda(), matched.cuda())
