"""PWACELoss, class_pwa_weight and the multi-class semires_targets."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import samrefine as sr
from samrefine import Proposals, PWABCELoss, PWACELoss, class_pwa_weight


def psi(p, gamma=1.3, mu=0.5, var=0.1):
    """Paper Eq. 9, written out."""
    return gamma - math.exp(-((p - mu) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


@pytest.mark.parametrize("class_weight", [None, (0.9, 1.1)])
@pytest.mark.parametrize("per_pixel_ignore", [False, True])
@given(seed=st.integers(0, 2**31 - 1))
def test_two_classes_equal_pwabce(class_weight, per_pixel_ignore, seed):
    g = torch.Generator().manual_seed(seed)
    b, h, w = 3, 5, 4
    logits = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64) * 3
    teacher = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64) * 3
    prob = torch.softmax(teacher, 1)
    y = torch.randint(0, 2, (b, h, w), generator=g)
    matched = torch.rand(b, generator=g) < 0.5
    ignore = (torch.rand(b, h, w, generator=g) < 0.2) if per_pixel_ignore else None
    y255 = y.masked_fill(ignore, 255) if ignore is not None else y
    for reduction in ("mean", "none"):
        ce = PWACELoss(class_weight=class_weight, reduction=reduction)(logits, y255, prob, matched)
        bce = PWABCELoss(class_weight=class_weight, reduction=reduction)(
            logits, y, prob[:, 1], matched, ignore=ignore
        )
        torch.testing.assert_close(ce, bce, rtol=1e-12, atol=1e-12)
    # a supervised batch (no prob, no matched) too
    torch.testing.assert_close(
        PWACELoss()(logits, y255), PWABCELoss()(logits, y, ignore=ignore), rtol=1e-12, atol=1e-12
    )


def test_psi_on_two_classes_is_the_binary_psi():
    p = torch.linspace(0, 1, 101, dtype=torch.float64)
    prob2 = torch.stack([1 - p, p], 1)[..., None, None]  # (101, 2, 1, 1)
    got = class_pwa_weight(prob2)[:, 0, 0]
    want = torch.tensor([psi(float(v)) for v in p], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_psi_uses_the_top_two_classes_only():
    # q1 = 0.45 among 21 classes with a flat tail: p2 = 0.45 / 0.5 = 0.9
    q = torch.full((21,), 0.55 / 20, dtype=torch.float64)
    q[3] = 0.45
    q[7] = 0.05
    q = q / q.sum()
    w = class_pwa_weight(q.view(1, 21, 1, 1))
    p2 = float(q[3] / (q[3] + q[7]))
    assert abs(float(w) - psi(p2)) < 1e-12
    # a tie between the top two is the least trusted pixel
    t = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64).view(1, 3, 1, 1)
    assert abs(float(class_pwa_weight(t)) - psi(0.5)) < 1e-12
    # logits and probabilities give the same weight
    z = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        class_pwa_weight(z, from_logits=True),
        class_pwa_weight(torch.softmax(z, 1)),
        rtol=1e-12,
        atol=1e-12,
    )


def test_hand_computed_loss_with_ignore():
    logits = torch.tensor(
        [[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]], [[-1.0, 0.5, 3.0]]]], dtype=torch.float64
    )  # (1, 3, 1, 3)
    target = torch.tensor([[[0, 2, 255]]])
    prob = torch.tensor(
        [[[[0.6, 0.2, 0.3]], [[0.3, 0.7, 0.3]], [[0.1, 0.1, 0.4]]]], dtype=torch.float64
    )
    matched = torch.tensor([[[True, False, False]]])
    z = logits[0, :, 0].numpy()  # (3 classes, 3 pixels)
    lse = np.log(np.exp(z).sum(0))
    ce0 = lse[0] - z[0, 0]
    ce1 = lse[1] - z[2, 1]
    w1 = psi(0.7 / (0.7 + 0.2))
    want = (ce0 + w1 * ce1) / 2  # pixel 2 ignored
    got = PWACELoss()(logits, target, prob, matched)
    assert abs(float(got) - want) < 1e-12
    none = PWACELoss(reduction="none")(logits, target, prob, matched)
    assert float(none[0, 0, 2]) == 0.0


def test_gradient_reaches_the_logits_only():
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    prob = torch.softmax(torch.randn(2, 4, 3, 3), 1).requires_grad_()
    y = torch.randint(0, 4, (2, 3, 3))
    PWACELoss()(logits, y, prob, torch.tensor([True, False])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert prob.grad is None


def test_bad_input_is_refused():
    logits = torch.zeros(1, 3, 2, 2)
    y = torch.zeros(1, 2, 2, dtype=torch.int64)
    prob = torch.full((1, 3, 2, 2), 1 / 3)
    crit = PWACELoss()
    with pytest.raises(ValueError, match="outside 0..2"):
        crit(logits, torch.full((1, 2, 2), 3))
    with pytest.raises(ValueError, match="NaN"):
        crit(logits, y, prob.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="prob .* is required"):
        crit(logits, y, None, torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        crit(logits, y[:, :1])
    with pytest.raises(TypeError, match="integer class map"):
        crit(logits, y.float())
    with pytest.raises(ValueError, match="class_weight has 2"):
        PWACELoss(class_weight=(1.0, 2.0))(logits, y)
    with pytest.raises(ValueError, match="C >= 2"):
        crit(torch.zeros(1, 1, 2, 2), y)


# ---------------------------------------------------------------- multi-class semires_targets


def _scene():
    lab = torch.tensor([[1, 1, 1, 1, 2, 2]])
    logits = torch.full((1, 3, 1, 6), -2.0)
    logits[0, 1, 0, :4] = 2.0
    logits[0, 2, 0, 4:] = 2.0
    logits[0, 1, 0, 3] = 0.1  # pixel 3: barely class 1 (low confidence)
    logits[0, 2, 0, 3] = 0.0
    props = Proposals.from_dense(np.array([[[0, 1, 1, 1, 1, 0]]], bool))
    return lab, logits, props


def test_semires_targets_with_many_classes_refines_the_argmax():
    lab, logits, props = _scene()
    t = sr.semires_targets(logits, [props])
    assert isinstance(t, sr.SemanticTargets)
    assert t.pseudo[0].tolist() == lab.tolist()
    want = sr.refine_semantic(lab, props)
    assert t.target[0].tolist() == want.labels.tolist() == [[255, 1, 1, 1, 1, 2]]
    assert t.matched[0].tolist() == want.matched.tolist()
    psi_px = class_pwa_weight(torch.softmax(logits, 1))
    torch.testing.assert_close(t.weight, torch.where(t.matched, torch.ones_like(psi_px), psi_px))
    # the loss reads everything from the targets
    student = torch.randn(1, 3, 1, 6)
    torch.testing.assert_close(
        PWACELoss()(student, t), PWACELoss()(student, t.target, t.prob, t.matched)
    )
    assert 0 < t.summary()["matched_fraction"] < 1


def test_confidence_threshold_spares_matched_pixels():
    lab, logits, props = _scene()
    t = sr.semires_targets(logits, [props], conf_thresh=0.95, skip_classes=(1,))
    # class 1 is skipped: pixels 0-3 unmatched; pixel 3 has low confidence -> ignored.
    # class 2 has 1 of its 2 pixels in the proposal (s1 = 1/2): unmatched.
    conf = torch.softmax(logits, 1).amax(1)[0]
    want = [255 if conf[0, i] < 0.95 else int(lab[0, i]) for i in range(6)]
    assert conf[0, 3] < 0.95 and t.target[0, 0].tolist() == want
    t2 = sr.semires_targets(logits, [props], conf_thresh=0.95)
    assert t2.target[0, 0, 3] == 1 and t2.matched[0, 0, 3]  # matched: kept despite low confidence
    # conf_on_matched: the same matched pixel is masked by its confidence like any other, the
    # confident matched pixels keep their refined label and weight 1
    t3 = sr.semires_targets(logits, [props], conf_thresh=0.95, conf_on_matched=True)
    assert t3.target[0, 0, 3] == 255 and t3.matched[0, 0, 3]
    keep = conf >= 0.95
    assert t3.target[0][keep].tolist() == t2.target[0][keep].tolist()
    assert (t3.target[0][~keep] == 255).all()
    assert torch.equal(t3.weight, t2.weight)
    with pytest.raises(TypeError, match="conf_on_matched"):
        sr.semires_targets(logits, [props], conf_thresh=0.95, conf_on_matched=1)
    with pytest.raises(ValueError, match="conf_thresh is None"):
        sr.semires_targets(logits, [props], conf_on_matched=True)


def test_semantic_keywords_are_refused_for_binary_outputs():
    props = Proposals.empty((1, 6))
    with pytest.raises(TypeError, match="multi-class"):
        sr.semires_targets(torch.zeros(1, 2, 1, 6), [props], skip_classes=(0,))
    with pytest.raises(ValueError, match="class id"):
        sr.semires_targets(torch.zeros(1, 3, 1, 6), [props], ignore_index=1)
    with pytest.raises(ValueError, match="NaN"):
        sr.semires_targets(torch.full((1, 3, 1, 6), float("nan")), [props])
