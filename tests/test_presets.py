"""Presets: registry lookups, the documented values, and the objects they build."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import samrefine
from samrefine.presets import PRESETS, get_preset, list_presets


def test_registry_names_and_unknown_name():
    assert list_presets() == ["paper", "reference-code", "reference-code-iom"]
    assert set(PRESETS) == set(list_presets())
    with pytest.raises(ValueError, match="paper, reference-code, reference-code-iom"):
        get_preset("papr")
    with pytest.raises(TypeError):
        PRESETS["x"] = get_preset("paper")  # read-only mapping


def test_presets_are_frozen():
    p = get_preset("paper")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ema_decay = 0.5
    q = p.replace(ema_decay=0.99)
    assert q.ema_decay == 0.99 and p.ema_decay == 0.996
    with pytest.raises(ValueError, match="strategy"):
        p.replace(strategy="cpi-x")
    with pytest.raises(ValueError, match="ema_decay"):
        p.replace(ema_decay=2.0)


def test_paper_values():
    p = get_preset("paper")
    assert (p.loss, p.class_weight, p.reduction) == ("bce", None, "mean")
    assert (p.ema_decay, p.strategy, p.under, p.over) == (0.996, "cpi-u", 0.7, None)
    assert (p.pwa_gamma, p.pwa_mu, p.pwa_var) == (1.3, 0.5, 0.1)
    assert p.refine_kwargs() == {"strategy": "cpi-u", "under": 0.7}


def test_reference_code_values():
    p = get_preset("reference-code")
    assert (p.loss, p.class_weight, p.reduction) == ("ce2", (0.9, 1.1), "group-mean")
    assert (p.ema_decay, p.strategy, p.under, p.over) == (0.9996, "cpi", 0.7, 0.7)
    assert (p.sup_weight, p.unsup_weight) == (1.0, 1.0)
    iom = get_preset("reference-code-iom")
    assert iom.refine_kwargs() == {"strategy": "iom", "iom_thresh": 0.5}
    assert iom.sup_weight == 10.0


def test_make_teacher_and_loss():
    student = torch.nn.Linear(2, 2)
    teacher = get_preset("reference-code").make_teacher(student)
    assert isinstance(teacher, samrefine.EMATeacher)
    assert (teacher.decay, teacher.warmup) == (0.9996, False)
    # reference-code loss on an all-matched batch is the reference criterion:
    # CE(weight=(0.9, 1.1), reduction="none").mean().
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 5, 5), generator=g)
    expected = F.cross_entropy(
        logits, target, weight=torch.tensor([0.9, 1.1], dtype=torch.float64), reduction="none"
    ).mean()
    crit = get_preset("reference-code").make_loss(validate=False)
    assert isinstance(crit, samrefine.PWABCELoss) and crit.validate is False
    torch.testing.assert_close(crit(logits, target), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["paper", "reference-code", "reference-code-iom"])
def test_refine_kwargs_are_accepted_by_refine(name):
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4] = True
    masks[1, 4:] = True
    pseudo = np.zeros((1, 8, 8), bool)
    pseudo[0, :4] = True
    ref = samrefine.refine(
        pseudo, [samrefine.Proposals.from_dense(masks)], **get_preset(name).refine_kwargs()
    )
    # The pseudo-label equals proposal 0 exactly: every strategy matches it and nothing else.
    assert bool(ref.matched[0])
    np.testing.assert_array_equal(ref.masks[0], masks[0])


def test_a_preset_with_another_strategy_passes_only_the_thresholds_it_reads():
    # reference-code sets over=0.7; CPI-U does not read over, so it must not turn into full CPI
    ref = get_preset("reference-code")
    assert ref.refine_kwargs("cpi-u") == {"strategy": "cpi-u", "under": 0.7}
    assert ref.refine_kwargs("cpi-o") == {"strategy": "cpi-o", "over": 0.7}
    assert ref.refine_kwargs("iom") == {"strategy": "iom", "iom_thresh": 0.5}
    assert ref.refine_kwargs("none") == {"strategy": "none"}
    # paper leaves over unset: full CPI then uses the registry default for it
    assert get_preset("paper").refine_kwargs("cpi") == {"strategy": "cpi", "under": 0.7}
    with pytest.raises(ValueError, match="unknown strategy 'cpi-x'; valid: iom, cpi"):
        ref.refine_kwargs("cpi-x")


def test_cpi_u_from_a_cpi_preset_selects_on_s1_only():
    # one proposal covers half the pseudo-label (s1 = 0.5) and lies inside it (s2 = 1):
    # CPI selects it through s2, CPI-U must not.
    pseudo = np.zeros((1, 8, 8), bool)
    pseudo[0, :4] = True
    part = np.zeros((1, 8, 8), bool)
    part[0, :2] = True
    props = [samrefine.Proposals.from_dense(part)]
    ref = get_preset("reference-code")
    assert bool(samrefine.refine(pseudo, props, **ref.refine_kwargs()).matched[0])
    assert not bool(samrefine.refine(pseudo, props, **ref.refine_kwargs("cpi-u")).matched[0])


def test_a_preset_must_set_what_its_own_strategy_reads():
    with pytest.raises(ValueError, match="reads over, which is None"):
        get_preset("paper").replace(strategy="cpi-o")
    with pytest.raises(ValueError, match="reads iom_thresh"):
        get_preset("paper").replace(strategy="iom", iom_thresh=None)
