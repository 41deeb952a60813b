"""semires_targets against a dense naive pipeline; ProposalCollate against dense augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import samrefine
from samrefine import Proposals
from samrefine.targets import ProposalCollate, follow_geometry, semires_targets


def psi(p: float, gamma: float = 1.3, mu: float = 0.5, var: float = 0.1) -> float:
    """Eq. 9: gamma - N(p; mu, var), var a variance."""
    return gamma - math.exp(-((p - mu) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def naive_refine(pseudo: np.ndarray, dense: list[np.ndarray], strategy: str, t1=0.7, t2=0.7):
    """Algorithm 1 with dense masks and Python loops; returns (refined (B,H,W), matched (B,))."""
    refined, matched = [], []
    for p, props in zip(pseudo, dense, strict=True):
        p = p.astype(bool)
        out = np.zeros_like(p)
        best, hit = 0.0, False
        for s in props:
            inter = np.logical_and(p, s).sum()
            if strategy == "iom":
                union = np.logical_or(p, s).sum()
                iou = inter / union if union else 0.0
                if iou > t1 and iou > best:
                    out, best, hit = s.copy(), iou, True
            else:
                s1 = inter / (p.sum() + 1e-9)
                s2 = inter / s.sum() if s.sum() else 0.0
                take = (strategy in ("cpi", "cpi-u") and s1 > t1) or (
                    strategy in ("cpi", "cpi-o") and s2 > t2
                )
                if take:
                    out |= s
                    hit = True
        refined.append(out if hit else p)
        matched.append(hit)
    return np.stack(refined), np.array(matched)


def _scene(seed: int, b: int = 4, h: int = 12, w: int = 10, n: int = 6):
    rng = np.random.default_rng(seed)
    dense, props = [], []
    for _ in range(b):
        masks = np.zeros((n, h, w), bool)
        for k in range(n):
            y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
            masks[k, y0 : y0 + rng.integers(2, h), x0 : x0 + rng.integers(2, w)] = True
        dense.append(masks)
        props.append(Proposals.from_dense(masks))
    # Teacher logits: a blob near proposal 0 plus noise, so some images match and some do not.
    base = np.where(np.stack([d[0] for d in dense]), 2.0, -2.0)
    logits1 = torch.from_numpy(base + rng.normal(0, 2.5, (b, h, w))).float()
    logits0 = torch.from_numpy(rng.normal(0, 0.5, (b, h, w))).float()
    return torch.stack([logits0, logits1], dim=1), dense, props


@pytest.mark.parametrize("strategy", ["cpi-u", "cpi", "cpi-o", "iom"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_dense_naive_pipeline(strategy, seed):
    logits, dense, props = _scene(seed)
    thresh = {"iom": {}, "cpi": {}, "cpi-u": {}, "cpi-o": {}}[strategy]
    t = semires_targets(logits, props, strategy, **thresh)
    prob = F.softmax(logits.double(), dim=1)[:, 1]
    pseudo = (logits.argmax(dim=1) == 1).numpy()
    t1 = 0.5 if strategy == "iom" else 0.7
    refined, matched = naive_refine(pseudo, dense, strategy, t1=t1)
    np.testing.assert_array_equal(t.pseudo.numpy(), pseudo)
    np.testing.assert_array_equal(t.target.numpy(), refined)
    np.testing.assert_array_equal(t.matched.numpy(), matched)
    torch.testing.assert_close(t.prob.double(), prob, rtol=1e-6, atol=1e-6)
    w_expected = np.where(matched[:, None, None], 1.0, np.vectorize(psi)(prob.numpy()))
    np.testing.assert_allclose(t.weight.numpy(), w_expected, rtol=1e-5, atol=1e-6)
    assert t.weight.dtype == torch.float32 and t.target.dtype == torch.bool
    s = t.summary()
    assert s["match_rate"] == pytest.approx(matched.mean())
    assert t.match_rate == pytest.approx(matched.mean())
    assert s["num_matched"] == matched.sum()
    assert s["changed_fraction"] == pytest.approx((refined != pseudo).mean(), abs=1e-7)
    assert s["target_foreground"] == pytest.approx(refined.mean(), abs=1e-7)
    if (~matched).any():
        expected_unm = w_expected[~matched].mean()
        assert s["unmatched_weight"] == pytest.approx(expected_unm, rel=1e-5)
    else:
        assert s["unmatched_weight"] == 0.0


def test_scene_has_both_groups():
    # Guards the parametrised test above against a degenerate scene.
    matched = set()
    for seed in (0, 1):
        logits, _, props = _scene(seed)
        matched.update(semires_targets(logits, props, "cpi-u").matched.tolist())
    assert matched == {True, False}


def test_other_layouts_and_thresholds():
    logits2, dense, props = _scene(2)
    z = logits2[:, 1] - logits2[:, 0]
    ref = semires_targets(logits2, props, "cpi", under=0.6, over=None)
    for out, kw in (
        (z, {}),
        (z[:, None], {}),
        (torch.sigmoid(z), {"from_logits": False}),
        (F.softmax(logits2, dim=1), {"from_logits": False}),
    ):
        t = semires_targets(out, props, "cpi", under=0.6, over=None, **kw)
        np.testing.assert_array_equal(t.target.numpy(), ref.target.numpy())
        np.testing.assert_array_equal(t.matched.numpy(), ref.matched.numpy())
        torch.testing.assert_close(t.prob, ref.prob, rtol=1e-5, atol=1e-6)
    pseudo = (torch.sigmoid(z.double()) > 0.5).numpy()
    refined, matched = naive_refine(pseudo, dense, "cpi-u", t1=0.6)
    np.testing.assert_array_equal(ref.target.numpy(), refined)
    np.testing.assert_array_equal(ref.matched.numpy(), matched)


def test_tied_logits_are_background_like_argmax():
    logits = torch.zeros(1, 2, 4, 4)
    t = semires_targets(logits, [Proposals.from_dense(np.ones((1, 4, 4), bool))], "cpi-u")
    assert not t.pseudo.any()
    assert not t.matched.any()  # an empty pseudo-label never matches


def test_loss_accepts_targets():
    logits, _, props = _scene(3)
    t = semires_targets(logits, props, "cpi")
    student = torch.randn_like(logits)
    crit = samrefine.PWABCELoss(class_weight=(0.9, 1.1), reduction="group-mean")
    explicit = crit(student, t.target, t.prob, t.matched)
    torch.testing.assert_close(crit(student, t), explicit)
    with pytest.raises(ValueError, match="already carries"):
        crit(student, t, t.prob)


def test_errors():
    logits, _, props = _scene(4)
    with pytest.raises(ValueError, match="NaN"):
        semires_targets(torch.full_like(logits, float("nan")), props)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        semires_targets(logits, props, from_logits=False)
    with pytest.raises(ValueError, match="proposals"):
        semires_targets(logits, props[:3])
    with pytest.raises(ValueError, match="resize"):
        semires_targets(logits[..., :8], props)
    with pytest.raises(ValueError, match="valid"):
        semires_targets(logits, props, "cpi-x")
    with pytest.raises(TypeError, match="floating"):
        semires_targets(logits.long(), props)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        semires_targets(logits[:, :1].expand(-1, 3, -1, -1), props)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_all_on_device_and_equal_to_cpu():
    logits, _, props = _scene(5)
    cpu = semires_targets(logits, props, "cpi")
    gpu = semires_targets(logits.cuda(), samrefine.ProposalBatch(props).to("cuda"), "cpi")
    for name in ("target", "weight", "matched", "prob", "pseudo"):
        assert getattr(gpu, name).device.type == "cuda", name
    assert all(v.device.type == "cuda" for v in gpu.stats.values())
    torch.testing.assert_close(gpu.target.cpu(), cpu.target)
    torch.testing.assert_close(gpu.matched.cpu(), cpu.matched)
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight)
    assert gpu.summary() == pytest.approx(cpu.summary())


# ------------------------------------------------------------------------------ collation


def dense_follow(masks: np.ndarray, ops, size) -> np.ndarray:
    """The same geometry on dense masks with numpy slicing and torch nearest interpolation."""
    m = masks.copy()
    for op in ops:
        op = (op,) if isinstance(op, str) else op
        if op[0] == "hflip":
            m = m[:, :, ::-1]
        elif op[0] == "crop":
            x, y, w, h = op[1]
            out = np.zeros((m.shape[0], h, w), bool)
            ys, xs = max(y, 0), max(x, 0)
            ye, xe = min(y + h, m.shape[1]), min(x + w, m.shape[2])
            if ye > ys and xe > xs:
                out[:, ys - y : ye - y, xs - x : xe - x] = m[:, ys:ye, xs : xs + (xe - xs)]
            m = out
        elif op[0] == "resize":
            m = _nearest(m, op[1])
    return _nearest(m, size) if size is not None else m


def _nearest(m: np.ndarray, size) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m)).float()[None]
    return F.interpolate(t, size=tuple(size), mode="nearest")[0].bool().numpy()


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_collate_follows_geometry_in_a_dataloader():
    rng = np.random.default_rng(0)
    dense = [rng.random((3, 20, 16)) > 0.6, rng.random((2, 14, 18)) > 0.5]
    ops = [
        [("hflip",), ("crop", (2, 3, 10, 12))],
        [("crop", (-2, 4, 12, 14)), ("resize", (9, 7)), "hflip"],
    ]
    samples = [
        {
            "image": torch.full((3, 2, 2), float(i)),
            "proposals": Proposals.from_dense(d),
            "geometry": g,
        }
        for i, (d, g) in enumerate(zip(dense, ops, strict=True))
    ]
    loader = DataLoader(_Dataset(samples), batch_size=2, collate_fn=ProposalCollate(size=(11, 13)))
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 2, 2)
    assert isinstance(batch["proposals"], samrefine.ProposalBatch)
    assert batch["proposals"].size == (11, 13) and len(batch["proposals"]) == 2
    assert batch["geometry"] == ops
    for b in range(2):
        got = batch["proposals"][b].to_dense()
        np.testing.assert_array_equal(got, dense_follow(dense[b], ops[b], (11, 13)))


def test_follow_geometry_matches_dense_ops():
    rng = np.random.default_rng(1)
    d = rng.random((4, 15, 12)) > 0.5
    ops = [("resize", (30, 8)), ("crop", (1, 20, 9, 15)), ("hflip",)]
    got = follow_geometry(Proposals.from_dense(d), ops).to_dense()
    np.testing.assert_array_equal(got, dense_follow(d, ops, None))


def test_collate_tuples_and_errors():
    p = Proposals.from_dense(np.ones((1, 4, 4), bool))
    out = ProposalCollate(key=1)([(torch.zeros(2), p), (torch.ones(2), p)])
    assert isinstance(out, tuple) and out[0].shape == (2, 2) and len(out[1]) == 2
    with pytest.raises(ValueError, match="no 'proposals' entry"):
        ProposalCollate()([{"x": 1}])
    with pytest.raises(ValueError, match="geometry op 0"):
        ProposalCollate()([{"proposals": p, "geometry": [("rotate", 90)]}])
    with pytest.raises(ValueError, match="one size"):
        q = Proposals.from_dense(np.ones((1, 5, 4), bool))
        ProposalCollate()([{"proposals": p}, {"proposals": q}])
    with pytest.raises(TypeError, match="Proposals"):
        ProposalCollate()([{"proposals": np.ones((1, 4, 4))}])


def test_weight_uses_the_given_pwa_parameters_and_the_loss_agrees_with_it():
    logits, _, props = _scene(3)
    t = semires_targets(logits, props, "cpi-u", gamma=2.0, mu=0.4, var=0.05)
    assert t.pwa_params == (2.0, 0.4, 0.05)
    prob = t.prob.double().numpy()
    m = t.matched.numpy()
    want = np.where(m[:, None, None], 1.0, np.vectorize(lambda p: psi(p, 2.0, 0.4, 0.05))(prob))
    np.testing.assert_allclose(t.weight.numpy(), want, rtol=1e-5, atol=1e-6)
    # the loss forms the same weights itself: per-pixel loss = weight * BCE(target)
    student = torch.randn(logits.shape[0], *logits.shape[2:], dtype=torch.float64)
    got = samrefine.PWABCELoss(reduction="none", gamma=2.0, mu=0.4, var=0.05)(student, t)
    bce = F.binary_cross_entropy_with_logits(student, t.target.double(), reduction="none")
    torch.testing.assert_close(got, t.weight.double() * bce, rtol=1e-5, atol=1e-6)
