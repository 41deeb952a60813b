"""samrefine.audit (in samrefine.auditing): correction counts, sweep, validation, CLI.

Every expected number below is derived by hand from the masks (see the comments), or, in the
property test, from the independent dense reference of ``tests/naive.py`` with exact fractions;
none is taken from the code's own output.
"""

import importlib.util
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from hypothesis.extra import numpy as hnp

import samrefine as sr
from samrefine.cli import main

H, W = 4, 6

# the dense reference, loaded by path: a bare ``import naive`` / ``conftest`` can resolve to
# another test folder's module when the whole suite is collected
_spec = importlib.util.spec_from_file_location(
    "naive_reference", Path(__file__).with_name("naive.py")
)
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)


def box(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def hand_case():
    """Six samples (pseudo, [proposals], gt) on a 4 x 6 grid, one situation each."""
    s = []
    # A: P (4 px) inside G (6 px): IoU(P, G) = 4/6. S0 = G: IoU(P, S0) = 4/6 > .5, s1 = 1,
    #    s2 = 4/6. IOM, CPI-U, CPI -> G (IoU 1): positive; CPI-O unmatched.
    s.append((box(0, 2, 0, 2), [box(0, 2, 0, 3)], box(0, 2, 0, 3)))
    # B: G (4 px) inside P (6 px): IoU 4/6. S0 = rows 0-3 x cols 0-2 (12 px): IoU(P,S0) = .5,
    #    s1 = 1, s2 = .5. S1 = rows 0-2 x cols 0-2 (9 px): IoU(P,S1) = 6/9, s1 = 1, s2 = 6/9.
    #    IOM -> S1, IoU(S1, G) = 4/9 < 4/6: negative. CPI-U -> S0 u S1 = S0, IoU 4/12: negative.
    #    CPI-O: no s2 > .7: unmatched.
    s.append((box(0, 2, 0, 3), [box(0, 4, 0, 3), box(0, 3, 0, 3)], box(0, 2, 0, 2)))
    # C: P disjoint from G: IoU 0. S0 = rows 2-3 x cols 0-2 (6 px) contains P: IoU(P,S0) = 4/6,
    #    s1 = 1, s2 = 4/6. IOM, CPI-U -> S0, still disjoint from G: IoU 0 == 0, tie.
    s.append((box(2, 4, 0, 2), [box(2, 4, 0, 3)], box(0, 2, 0, 2)))
    # D: P == G; the only proposal is disjoint (row 3, cols 3-5): every score 0, all unmatched.
    s.append((box(0, 2, 0, 2), [box(3, 4, 3, 6)], box(0, 2, 0, 2)))
    # E: over-segmented P (8 px) contains G (4 px): IoU .5. S0 = G: IoU(P, S0) = .5 (not > .5),
    #    s1 = .5, s2 = 1. Only CPI-O and CPI select it: IoU 1, positive.
    s.append((box(0, 4, 0, 2), [box(0, 2, 0, 2)], box(0, 2, 0, 2)))
    # F: G = row 0 cols 0-3 (4 px), P = row 0 cols 0-1 (2 px): IoU 2/4. S0 = P + (0, 2) in G +
    #    row 1 cols 0-1 outside G (5 px): IoU(P,S0) = 2/5, s1 = 1, s2 = 2/5. CPI-U and CPI
    #    select it: IoU(S0, G) = 3/6 == 2/4, an exact tie with non-zero IoU.
    s0 = box(0, 1, 0, 3) | box(1, 2, 0, 2)
    s.append((box(0, 1, 0, 2), [s0], box(0, 1, 0, 4)))
    pseudo = np.stack([x[0] for x in s])
    props = [sr.Proposals.from_dense(np.stack(x[1])) for x in s]
    gt = np.stack([x[2] for x in s])
    return pseudo, props, gt


#                 positive, negative, tie, no-correction
EXPECTED = {"iom": (1, 1, 1, 3), "cpi-u": (1, 1, 2, 2), "cpi-o": (1, 0, 0, 5), "cpi": (2, 1, 2, 1)}
# per-sample IoU after, from the comments above (A..F)
IOU_AFTER = {
    "iom": [1, 4 / 9, 0, 1, 0.5, 0.5],
    "cpi-u": [1, 4 / 12, 0, 1, 0.5, 0.5],
    "cpi-o": [4 / 6, 4 / 6, 0, 1, 1, 0.5],
    "cpi": [1, 4 / 12, 0, 1, 1, 0.5],
}
IOU_BEFORE = [4 / 6, 4 / 6, 0, 1, 0.5, 0.5]


def counts(stats):
    return stats.positive, stats.negative, stats.tie, stats.no_correction


def test_hand_built_counts_and_ious():
    pseudo, props, gt = hand_case()
    rep = sr.audit(pseudo, props, gt, sweep=None)
    assert rep.n_samples == 6
    assert list(rep.strategies) == ["iom", "cpi", "cpi-u", "cpi-o"]
    np.testing.assert_allclose(rep.iou_before, IOU_BEFORE)
    for name, want in EXPECTED.items():
        st = rep.strategies[name]
        assert counts(st) == want, name
        assert st.matched == sum(want[:3]) and st.n == 6
        np.testing.assert_allclose(rep.iou_after[name], IOU_AFTER[name], err_msg=name)
        assert st.miou_before == pytest.approx(np.mean(IOU_BEFORE))
        assert st.miou_after == pytest.approx(np.mean(IOU_AFTER[name]))
    # overall IoU before: intersections 4+4+0+4+4+2 = 18, unions 6+6+8+4+8+4 = 36
    assert rep.strategies["iom"].oiou_before == pytest.approx(18 / 36)
    # IOM after: A 6/6, B 4/9, C 0/10, D 4/4, E 4/8, F 2/4 -> 20/41
    assert rep.strategies["iom"].oiou_after == pytest.approx(20 / 41)
    # mean gain over IOM's 3 matched samples: (1 - 4/6) + (4/9 - 4/6) + 0
    assert rep.strategies["iom"].mean_gain_matched == pytest.approx((1 / 3 - 2 / 9) / 3)


def test_sweep_rows_are_strict_and_recommendation():
    pseudo, props, gt = hand_case()
    rep = sr.audit(pseudo, props, gt, ["iom"], sweep=[0.4, 0.6])
    rows = {r.thresholds["iom_thresh"]: r for r in rep.sweep}
    # at 0.4: A (.67) pos, B -> S1 neg, C tie, D none, E (.5 > .4) pos, F (.4, not > .4) none
    assert counts(rows[0.4]) == (2, 1, 1, 2)
    # at 0.6: A, B, C as at 0.5; E (.5) and F (.4) unmatched
    assert counts(rows[0.6]) == (1, 1, 1, 3)
    rec = rep.recommend()
    # mean IoU after: 0.4 -> (1 + 4/9 + 0 + 1 + 1 + .5) / 6 beats 0.6 -> (1 + 4/9 + 0 + 1 + .5 +
    # .5) / 6
    assert rec["strategy"] == "iom" and rec["thresholds"] == {"iom_thresh": 0.4}
    assert rec["after"] == pytest.approx((3.5 + 4 / 9) / 6)
    assert rec["before"] == pytest.approx(np.mean(IOU_BEFORE))


def test_cpi_sweep_is_a_grid_and_table_lists_everything():
    pseudo, props, gt = hand_case()
    rep = sr.audit(pseudo, props, gt, ["cpi", "cpi-u"], sweep=[0.5, 0.7, 0.9])
    cpi_rows = [r for r in rep.sweep if r.strategy == "cpi"]
    assert len(cpi_rows) == 9 and len(rep.sweep) == 12
    assert all(r.thresholds.keys() == {"under"} for r in rep.sweep if r.strategy == "cpi-u")
    text = rep.table(sweep=True)
    assert "recommended:" in text and "all 12 sweep settings" in text
    assert "no-corr" in text and "tie" in text


def test_iterable_input_matches_arrays_and_allows_mixed_sizes():
    pseudo, props, gt = hand_case()
    rep = sr.audit(pseudo, props, gt, sweep=None)
    # the same samples, one by one, plus a bigger image whose proposals need resizing
    big_p = np.zeros((8, 12), np.uint8)
    big_p[:4, :4] = 1
    big_g = big_p.astype(bool)
    big_props = sr.Proposals.from_dense(big_g[None, ::2, ::2])  # 4 x 6, resized x2 -> exact
    items = [(p, pr, g) for p, pr, g in zip(pseudo, props, gt)] + [(big_p, big_props, big_g)]
    rep2 = sr.audit(iter(items), strategies=["iom"], sweep=None, resize=True, batch_size=4)
    assert rep2.n_samples == 7
    # the seventh sample: P == G and the resized proposal equals P: matched, IoU 1 == 1, tie
    want = EXPECTED["iom"]
    assert counts(rep2.strategies["iom"]) == (want[0], want[1], want[2] + 1, want[3])
    np.testing.assert_allclose(rep2.iou_after["iom"][:6], rep.iou_after["iom"])


def test_probabilities_and_torch_input():
    torch = pytest.importorskip("torch")
    pseudo, props, gt = hand_case()
    prob = torch.from_numpy(np.where(pseudo, 0.8, 0.3).astype(np.float32))
    rep = sr.audit(prob, props, torch.from_numpy(gt), ["cpi-o"], sweep=None, prob_thresh=0.5)
    assert counts(rep.strategies["cpi-o"]) == EXPECTED["cpi-o"]


def test_json_round_trip(tmp_path):
    pseudo, props, gt = hand_case()
    rep = sr.audit(pseudo, props, gt, ["iom", "cpi-o"], sweep=[0.5])
    path = tmp_path / "a.json"
    rep.to_json(path, per_sample=True)
    d = json.loads(path.read_text())
    assert d["n_samples"] == 6
    s = d["strategies"]["cpi-o"]
    assert (s["positive"], s["negative"], s["tie"], s["no_correction"]) == EXPECTED["cpi-o"]
    assert d["per_sample"]["category"]["iom"] == [
        "positive",
        "negative",
        "tie",
        "no_correction",
        "no_correction",
        "no_correction",
    ]
    assert "tie" in d["definitions"] and d["recommendation"]["n_samples"] == 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategies": ["iom", "bogus"]}, "unknown strategy 'bogus'"),
        ({"iom_thresh": 1.5}, "iom_thresh must be a number in"),
        ({"sweep": [0.2, 2.0]}, "sweep thresholds must lie in"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    pseudo, props, gt = hand_case()
    with pytest.raises(ValueError, match=match):
        sr.audit(pseudo, props, gt, **kwargs)


def test_bad_data_messages_name_the_fix():
    pseudo, props, gt = hand_case()
    with pytest.raises(ValueError, match="gt has shape"):
        sr.audit(pseudo, props, gt[:, :2])
    with pytest.raises(ValueError, match="pass prob_thresh=0.5"):
        sr.audit(pseudo * 0.7, props, gt, sweep=None)
    with pytest.raises(ValueError, match="gt .sample 1. must hold only 0 and 1"):
        g = gt.astype(np.uint8)
        g[1, 0, 0] = 2
        sr.audit(pseudo, props, g, sweep=None)
    small = [p.resize((2, 3)) for p in props]
    with pytest.raises(ValueError, match=r"resize=True"):
        sr.audit(pseudo, small, gt, sweep=None)
    with pytest.raises(ValueError, match="pseudo has 6 samples but proposals has 5"):
        sr.audit(pseudo, props[:5], gt)
    with pytest.raises(ValueError, match="no samples"):
        sr.audit(iter([]), sweep=None)


def write_hand_npz(path, with_image=False):
    pseudo, props, gt = hand_case()
    dense = [p.to_dense() for p in props]
    off = np.cumsum([0] + [len(d) for d in dense])
    extra = {"image": np.zeros((6, H, W, 3), np.uint8)} if with_image else {}
    np.savez(
        path,
        pseudo=pseudo.astype(np.uint8),
        gt=gt,
        proposals=np.concatenate(dense),
        proposal_offsets=off,
        **extra,
    )
    return props


def test_cli_audit_npz(tmp_path, capsys):
    data = tmp_path / "d.npz"
    write_hand_npz(data, with_image=True)
    out = tmp_path / "out"
    rc = main(
        [
            "audit",
            str(data),
            "--sweep",
            "none",
            "--out",
            str(out),
            "--no-progress",
            "--show",
            "2",
            "--per-sample",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "positive" in printed and "cpi-u" in printed
    d = json.loads((out / "audit.json").read_text())
    for name, want in EXPECTED.items():
        s = d["strategies"][name]
        assert (s["positive"], s["negative"], s["tie"], s["no_correction"]) == want
    assert (out / "corrections.png").stat().st_size > 0
    assert len(list(out.glob("sample_*.png"))) == 2


def test_cli_audit_json_proposals(tmp_path):
    data = tmp_path / "d.npz"
    pseudo, props, gt = hand_case()
    np.savez(data, pseudo=pseudo, gt=gt)
    rles = [
        [{"size": r["size"], "counts": r["counts"].decode()} for r in p.to_rle()] for p in props
    ]
    (tmp_path / "p.json").write_text(json.dumps(rles))
    out = tmp_path / "out"
    rc = main(
        [
            "audit",
            str(data),
            "--proposals",
            str(tmp_path / "p.json"),
            "--strategies",
            "cpi",
            "--sweep",
            "0.7",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    s = json.loads((out / "audit.json").read_text())["strategies"]["cpi"]
    assert (s["positive"], s["negative"], s["tie"], s["no_correction"]) == EXPECTED["cpi"]


def test_cli_audit_errors(tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, pseudo=np.zeros((2, 4, 4), bool))
    assert main(["audit", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "missing array 'gt'" in capsys.readouterr().err
    assert main(["audit", "--out", str(tmp_path / "o")]) == 2
    assert "--demo" in capsys.readouterr().err


def test_cli_audit_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "audit",
            "--demo",
            "--samples",
            "6",
            "--size",
            "64",
            "--sweep",
            "0.5,0.7",
            "--out",
            str(out),
            "--no-progress",
            "--show",
            "1",
        ]
    )
    assert rc == 0
    d = json.loads((out / "audit.json").read_text())
    assert d["n_samples"] == 6
    for s in d["strategies"].values():
        assert s["positive"] + s["negative"] + s["tie"] + s["no_correction"] == 6
    assert len(list(out.glob("sample_*.png"))) == 1
    assert "recommended:" in capsys.readouterr().out


# ------------------------------------------------------------------ property: against naive.py


def exact_iou(a, g):
    u = int(np.logical_or(a, g).sum())
    return Fraction(int(np.logical_and(a, g).sum()), u) if u else Fraction(1)


@hst.composite
def stacks(draw):
    """(N, H, W) bool proposals, N >= 1, with empty and full masks now and then."""
    h, w, n = draw(hst.integers(1, 9)), draw(hst.integers(1, 9)), draw(hst.integers(1, 5))
    out = draw(hnp.arrays(np.bool_, (n, h, w)))
    kinds = draw(hst.lists(hst.sampled_from(["keep", "empty", "full"]), min_size=n, max_size=n))
    for k, kind in enumerate(kinds):
        if kind != "keep":
            out[k] = kind == "full"
    return out


@settings(max_examples=30, deadline=None)
@given(stack=stacks(), data=hst.data())
def test_categories_match_the_naive_reference(stack, data):
    n, h, w = stack.shape
    b = data.draw(hst.integers(1, 3))
    pseudo = np.stack([data.draw(hnp.arrays(np.bool_, (h, w))) | stack[i % n] for i in range(b)])
    gt = np.stack([data.draw(hnp.arrays(np.bool_, (h, w))) for _ in range(b)])
    props = [sr.Proposals.from_dense(stack)] * b
    rep = sr.audit(pseudo, props, gt, sweep=None)
    names = {0: "positive", 1: "negative", 2: "tie", 3: "no_correction"}
    for name in ("iom", "cpi", "cpi-u", "cpi-o"):
        want = []
        for p, g in zip(pseudo, gt):
            if name == "iom":
                r, matched, _ = naive.iom(p, stack)
            else:
                u = None if name == "cpi-o" else 0.7
                o = None if name == "cpi-u" else 0.7
                r, matched = naive.cpi(p, stack, under=u, over=o)[:2]
            before, after = exact_iou(p, g), exact_iou(r, g)
            want.append(
                "no_correction"
                if not matched
                else "positive"
                if after > before
                else "negative"
                if after < before
                else "tie"
            )
        assert [names[c] for c in rep.category[name]] == want, name
        st = rep.strategies[name]
        assert [st.positive, st.negative, st.tie, st.no_correction] == [
            want.count(c) for c in ("positive", "negative", "tie", "no_correction")
        ]
