"""audit_semantic: per-class IoU and correction counts, against hand counts and a plain loop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import samrefine as sr
from samrefine import Proposals


def test_worked_example():
    t = np.array([[1, 1, 1, 1, 2, 2]], np.uint8)
    g = np.array([[0, 1, 1, 1, 1, 2]], np.uint8)
    props = Proposals.from_dense(np.array([[[0, 1, 1, 1, 1, 0]]], bool))
    rep = sr.audit_semantic(t, props, g, num_classes=3, strategies=("cpi-u",))
    assert rep.n_images == 1
    np.testing.assert_allclose(rep.teacher.iou, [0 / 1, 3 / 5, 1 / 2])
    after = rep.strategies["cpi-u"]
    np.testing.assert_allclose(after.iou, [0 / 1, 4 / 4, 1 / 1])  # class 1 took pixel 4
    assert (after.positive, after.negative, after.tie, after.no_correction) == (1, 0, 0, 1)
    assert rep.teacher.coverage == 1.0 and after.coverage == 5 / 6
    assert after.accuracy_labelled == 5 / 5 and rep.teacher.accuracy_labelled == 4 / 6
    assert after.region_match_rate == 0.5
    assert "cpi-u" in rep.table() and rep.to_dict()["strategies"]["cpi-u"]["positive"] == 1


def _plain_iou(pairs, k, ignore=255):
    """Dataset IoU per class by explicit pixel loops."""
    inter = np.zeros(k)
    union = np.zeros(k)
    for a, g in pairs:
        for x, y in zip(a.ravel(), g.ravel(), strict=True):
            if y == ignore:
                continue
            for c in range(k):
                inter[c] += (x == c) and (y == c)
                union[c] += (x == c) or (y == c)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@given(data=st.data())
def test_iou_and_counts_match_a_plain_loop(data):
    h, w, k = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)), 4
    n = data.draw(st.integers(1, 3))
    labs = data.draw(hnp.arrays(np.uint8, (n, h, w), elements=st.sampled_from([0, 1, 2, 3, 255])))
    gts = data.draw(hnp.arrays(np.uint8, (n, h, w), elements=st.sampled_from([0, 1, 2, 3, 255])))
    props = [Proposals.from_dense(data.draw(hnp.arrays(np.bool_, (3, h, w)))) for _ in range(n)]
    rep = sr.audit_semantic(labs, props, gts, num_classes=k, strategies=("iom", "cpi-u"))
    np.testing.assert_allclose(rep.teacher.iou, _plain_iou(zip(labs, gts, strict=True), k))
    for s in ("iom", "cpi-u"):
        outs = [sr.refine_semantic(labs[i], props[i], strategy=s) for i in range(n)]
        np.testing.assert_allclose(
            rep.strategies[s].iou, _plain_iou(zip([o.labels for o in outs], gts, strict=True), k)
        )
        # correction counts: one unit per (image, refined class)
        cnt = np.zeros(4, int)
        for i, o in enumerate(outs):
            for c in np.unique(o.regions.cls):
                if not o.regions.matched[o.regions.cls == c].any():
                    cnt[3] += 1
                    continue
                b = _plain_iou([(labs[i], gts[i])], k)[c]
                a = _plain_iou([(o.labels, gts[i])], k)[c]
                b, a = (1.0 if np.isnan(b) else b), (1.0 if np.isnan(a) else a)
                cnt[0 if a > b + 1e-12 else 1 if a < b - 1e-12 else 2] += 1
        st_ = rep.strategies[s]
        assert [st_.positive, st_.negative, st_.tie, st_.no_correction] == cnt.tolist()


def test_iterable_input_and_errors():
    t = np.array([[1, 1, 2]], np.uint8)
    g = np.array([[1, 2, 2]], np.uint8)
    p = Proposals.empty((1, 3))
    rep = sr.audit_semantic(iter([(t, p, g), (t, p, g)]), num_classes=3, strategies=("iom",))
    assert rep.n_images == 2 and rep.strategies["iom"].no_correction == 4
    with pytest.raises(ValueError, match="outside 0..1"):
        sr.audit_semantic(t, p, g, num_classes=2)
    with pytest.raises(ValueError, match="unknown strategy"):
        sr.audit_semantic(t, p, g, num_classes=3, strategies=("best",))
    with pytest.raises(ValueError, match="together"):
        sr.audit_semantic(t, p, None, num_classes=3)


# ---------------------------------------------------------------- samrefine audit --semantic


def _worked_example_npz(path):
    """The module docstring's worked example as the command line reads it (one image)."""
    t = np.array([[[1, 1, 1, 1, 2, 2]]], np.uint8)
    g = np.array([[[0, 1, 1, 1, 1, 2]]], np.uint8)
    np.savez(
        path,
        pseudo=t,
        gt=g,
        proposals=np.array([[[0, 1, 1, 1, 1, 0]]], bool),
        proposal_offsets=np.array([0, 1]),
    )


def test_cli_audit_semantic_reads_class_maps(tmp_path, capsys):
    import json

    from samrefine.cli import main

    data = tmp_path / "d.npz"
    _worked_example_npz(data)
    out = tmp_path / "out"
    rc = main(
        [
            "audit",
            str(data),
            "--semantic",
            "--num-classes",
            "3",
            "--strategies",
            "cpi-u",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "cpi-u" in capsys.readouterr().out
    d = json.loads((out / "audit.json").read_text())
    assert d["num_classes"] == 3 and d["n_images"] == 1
    after = d["strategies"]["cpi-u"]
    np.testing.assert_allclose(d["teacher"]["iou"], [0 / 1, 3 / 5, 1 / 2])
    np.testing.assert_allclose(after["iou"], [0 / 1, 4 / 4, 1 / 1])
    assert (after["positive"], after["no_correction"]) == (1, 1)
    assert after["coverage"] == 5 / 6
    # class 1 not refined: class 2 alone (s1 = 1/2) does not match, the map is unchanged
    out2 = tmp_path / "out2"
    assert (
        main(
            [
                "audit",
                str(data),
                "--semantic",
                "--num-classes",
                "3",
                "--strategies",
                "cpi-u",
                "--skip-classes",
                "1",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    after = json.loads((out2 / "audit.json").read_text())["strategies"]["cpi-u"]
    np.testing.assert_allclose(after["iou"], [0 / 1, 3 / 5, 1 / 2])
    assert (after["positive"], after["no_correction"], after["region_match_rate"]) == (0, 1, 0)


def test_cli_audit_semantic_refuses_flags_that_do_not_apply(tmp_path, capsys):
    from samrefine.cli import main

    data = tmp_path / "d.npz"
    _worked_example_npz(data)
    o = str(tmp_path / "o")
    assert main(["audit", str(data), "--semantic", "--out", o]) == 2
    assert "--num-classes" in capsys.readouterr().err
    assert main(["audit", str(data), "--num-classes", "3", "--out", o]) == 2
    assert "--semantic" in capsys.readouterr().err
    assert (
        main(["audit", str(data), "--semantic", "--num-classes", "3", "--show", "2", "--out", o])
        == 2
    )
    assert "--show" in capsys.readouterr().err
    assert main(["audit", str(data), "--semantic", "--num-classes", "2", "--out", o]) == 2
    assert "outside 0..1" in capsys.readouterr().err  # class 2 in the maps
