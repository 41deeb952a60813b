"""Training pieces of examples/semires_lavt: steps learn, EMA keeps integer buffers, data order.

A tiny LAVT (``tiny_random``, 48 px) on the 24-image synthetic RefCOCO of ``conftest.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from examples.semires_lavt import sampling
from examples.semires_lavt.config import build_config
from examples.semires_lavt.data import ReferDataset, collate
from examples.semires_lavt.optim import build_optimizer
from examples.semires_lavt.semires_step import (
    SemiRESSettings,
    confidence_ignore,
    correction_stats,
    semi_step,
    supervised_step,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZE = 48


def _model():
    from examples.semires_lavt.lavt import build_lavt

    torch.manual_seed(0)
    return build_lavt("tiny_random", img_size=SIZE, drop_path_rate=0.0, verbose=False)


def _batches(root, tokenizer, library=None):
    from samrefine.library import ProposalLibrary

    labelled = ReferDataset(root, split="train", image_size=SIZE, tokenizer=tokenizer)
    unlabelled = ReferDataset(
        root,
        split="train",
        image_size=SIZE,
        tokenizer=tokenizer,
        proposals=ProposalLibrary.open(library) if library else None,
        views=("weak", "strong"),
    )
    torch.manual_seed(0)
    return collate([labelled[i] for i in range(4)]), collate([unlabelled[i] for i in range(4, 8)])


def _config(**changes):
    base = {"model": "tiny_random", "image_size": SIZE, "lr": 1e-3, "ema_decay": 0.99}
    return build_config([base, changes])


def test_burnin_loss_finite_and_decreasing_on_a_fixed_batch(synthetic_root, tokenizer):
    from samrefine import PWABCELoss

    model = _model()
    batch, _ = _batches(synthetic_root, tokenizer)
    optimizer = build_optimizer(model, 1e-3, 1e-2)
    criterion = PWABCELoss(class_weight=(0.9, 1.1))
    losses = []
    for _ in range(5):
        loss, stats = supervised_step(model, batch, criterion, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(stats["loss"])
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_semi_loss_finite_and_decreasing_and_teacher_integer_buffers_kept(
    synthetic_root, tokenizer, library
):
    from samrefine import EMATeacher, PWABCELoss

    cfg = _config(stage="semi", strategy="cpi-u")
    student = _model()
    teacher = EMATeacher(student, decay=cfg.ema_decay)
    initial_ints = {
        name: buf.clone()
        for name, buf in teacher.module.named_buffers()
        if not buf.is_floating_point()
    }
    assert any("relative_position_index" in n for n in initial_ints)
    labelled, unlabelled = _batches(synthetic_root, tokenizer, library)
    assert unlabelled["proposals"].size == (SIZE, SIZE)
    optimizer = build_optimizer(student, cfg.lr, cfg.weight_decay)
    criterion = PWABCELoss()
    losses = []
    for _ in range(5):
        loss, stats = semi_step(
            student,
            teacher.module,
            labelled,
            unlabelled,
            criterion,
            SemiRESSettings.from_config(cfg),
            torch.device("cpu"),
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        teacher.update(student)
        losses.append(stats["loss"])
        assert 0.0 <= stats["match_rate"] <= 1.0
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    student_buffers = dict(student.named_buffers())
    for name, before in initial_ints.items():
        after = dict(teacher.module.named_buffers())[name]
        assert after.dtype == before.dtype
        assert torch.equal(after, student_buffers[name]), name
        if "relative_position_index" in name:  # the reference truncates these after EMA
            assert torch.equal(after, before), name
    # floating weights did move, and not all the way to the student
    name, param = next(iter(teacher.module.named_parameters()))
    assert not torch.equal(param, dict(student.named_parameters())[name])


def test_confidence_filter_drops_the_least_confident_pixels():
    # confidences max(p, 1-p): 0.9 0.55 0.7 0.95 | 0.6 0.99 0.8 0.5
    prob = torch.tensor([[[0.9, 0.45], [0.7, 0.05]], [[0.4, 0.99], [0.2, 0.5]]])
    assert confidence_ignore(prob, 0.2) is None  # floor(0.2 * 4) = 0 pixels
    ignore = confidence_ignore(prob, 0.25)  # one pixel per image
    assert ignore.tolist() == [[[False, True], [False, False]], [[False, False], [False, True]]]
    ignore = confidence_ignore(prob, 0.5)  # two per image
    assert ignore.sum(dim=(1, 2)).tolist() == [2, 2]
    assert ignore[0, 1, 0] and ignore[1, 0, 0]


def test_correction_stats_against_hand_counts():
    pseudo = torch.tensor([[[1, 1, 0, 0]]])
    target = torch.tensor([[[1, 0, 1, 1]]])  # 3 pixels changed
    gt = torch.tensor([[[1, 0, 1, 0]]])  # two of them now agree with GT, one does not
    stats = correction_stats(pseudo, target, gt)
    assert stats["changed"] == pytest.approx(3 / 4)
    assert stats["positive"] == pytest.approx(2 / 3)
    assert stats["negative"] == pytest.approx(1 / 3)
    assert stats["pseudo_iou"] == pytest.approx(1 / 3)  # I = 1, U = 3
    assert stats["target_iou"] == pytest.approx(2 / 3)  # I = 2, U = 3


def test_global_batch_sampler_same_batches_for_any_world_size():
    one = sampling.GlobalBatchSampler(23, 4, rank=0, world_size=1, seed=3)
    two = [sampling.GlobalBatchSampler(23, 2, rank=r, world_size=2, seed=3) for r in range(2)]
    assert one.batches_per_epoch == two[0].batches_per_epoch == 5  # 23 // 4, last dropped
    for epoch in (0, 1):
        one.set_epoch(epoch)
        for s in two:
            s.set_epoch(epoch)
        for whole, part0, part1 in zip(one, *two, strict=True):
            assert whole == part0 + part1
    one.set_epoch(0)
    epoch0 = list(one)
    one.set_epoch(1)
    assert list(one) != epoch0  # each epoch has its own order
    # starting at batch 3 yields the tail of the same epoch
    one.set_epoch(1)
    full = list(one)
    one.start_at(1, 3)
    assert list(one) == full[3:] and len(one) == 2
    with pytest.raises(ValueError, match="fewer than one global batch"):
        sampling.GlobalBatchSampler(3, 2, world_size=2)


def test_seeded_samples_do_not_depend_on_the_process_rng(synthetic_root, tokenizer):
    dataset = ReferDataset(
        synthetic_root,
        split="train",
        image_size=SIZE,
        tokenizer=tokenizer,
        views=("weak", "strong"),
    )
    wrapped = sampling.SeededSamples(dataset, seed=5)
    torch.manual_seed(1)
    a = wrapped[(2, 7)]
    before = torch.get_rng_state()
    torch.manual_seed(99)
    b = wrapped[(2, 7)]
    torch.manual_seed(1)
    _ = wrapped[(2, 7)]
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is restored
    assert torch.equal(a["image_strong"], b["image_strong"]) and a["sentence"] == b["sentence"]
    # another epoch: other augmentation draws (checked over a few samples)
    differs = [
        not torch.equal(wrapped[(2, i)]["image_strong"], wrapped[(3, i)]["image_strong"])
        for i in range(6)
    ]
    assert any(differs)
