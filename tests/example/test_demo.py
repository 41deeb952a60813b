"""The CPU demo end to end at a toy size, and the semi-stage recipe pieces it uses."""

from __future__ import annotations

import math

import pytest
import torch

from examples.semires_lavt.config import ConfigError, build_config
from examples.semires_lavt.semires_step import SemiRESSettings, semi_step, sigmoid_rampup

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_sigmoid_rampup_follows_laine_and_aila():
    assert sigmoid_rampup(0, 0) == 1.0 and sigmoid_rampup(50, 0) == 1.0
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(400, 100) == 1.0
    values = [sigmoid_rampup(s, 100) for s in range(101)]
    assert values == sorted(values)


def test_recipe_keys_are_checked():
    cfg = build_config([{"unsup_class_weight": [1.0, 1.0], "jitter_hue": 0.0}])
    assert cfg.unsup_class_weight == (1.0, 1.0) and cfg.jitter_hue == 0.0
    with pytest.raises(ConfigError, match="jitter_hue"):
        build_config([{"jitter_hue": 0.7}])
    with pytest.raises(ConfigError, match="unsup_rampup_steps"):
        build_config([{"unsup_rampup_steps": -1}])
    assert (
        SemiRESSettings.from_config(build_config([{"unsup_rampup_steps": 7}])).unsup_rampup_steps
        == 7
    )


def _batches(root, tokenizer):
    from examples.semires_lavt.data import ReferDataset, collate

    labelled = ReferDataset(root, split="train", image_size=48, tokenizer=tokenizer)
    unlabelled = ReferDataset(
        root, split="train", image_size=48, tokenizer=tokenizer, views=("weak", "strong")
    )
    torch.manual_seed(0)
    return collate([labelled[i] for i in range(2)]), collate([unlabelled[i] for i in range(2, 4)])


class _HalfForeground(torch.nn.Module):
    """A teacher whose logits say "object" on the left half of the image."""

    def forward(self, image, input_ids, attention_mask):
        b, _, h, w = image.shape
        logits = torch.zeros(b, 2, h, w)
        logits[:, 1, :, : w // 2] = 2.0
        return logits


def test_rampup_and_unlabelled_class_weights_change_only_the_unlabelled_term(
    synthetic_root, tokenizer
):
    from examples.semires_lavt.lavt import build_lavt
    from samrefine import PWABCELoss

    torch.manual_seed(0)
    model = build_lavt("tiny_random", img_size=48, drop_path_rate=0.0, verbose=False).eval()
    labelled, unlabelled = _batches(synthetic_root, tokenizer)
    settings = SemiRESSettings(strategy="none", pwa=False, unsup_rampup_steps=10, amp=False)
    weighted, plain = PWABCELoss(class_weight=(1.0, 3.0)), PWABCELoss()
    teacher = _HalfForeground()  # pseudo-labels with both classes, so class weights matter
    args = (model, teacher, labelled, unlabelled, weighted, settings, torch.device("cpu"))
    with torch.no_grad():
        start, s0 = semi_step(*args, step=0)
        done, s1 = semi_step(*args, step=10)
        other, s2 = semi_step(*args, step=10, unsup_criterion=plain)
    assert s0["loss_unsup"] == pytest.approx(s1["loss_unsup"])  # the ramp scales, not the term
    ramp = sigmoid_rampup(0, 10)
    assert float(start) == pytest.approx(s0["loss_sup"] + ramp * s0["loss_unsup"], rel=1e-5)
    assert float(done) == pytest.approx(s1["loss_sup"] + s1["loss_unsup"], rel=1e-5)
    assert s2["loss_sup"] == pytest.approx(s1["loss_sup"])  # labelled loss keeps its weights
    assert s2["loss_unsup"] != pytest.approx(s1["loss_unsup"])  # unlabelled one does not


def test_demo_runs_end_to_end_and_reports_every_row(tmp_path, capsys):
    from examples.semires_lavt import demo
    from examples.semires_lavt.train import train

    overrides = {
        "out_dir": str(tmp_path / "out"),
        "synthetic_dir": str(tmp_path / "data"),
        "synthetic_images": 30,
        "labelled_percent": 30,
        "progress": False,
        "tensorboard": False,
        "eval_batch_size": 8,
        "eval_max_batches": 1,
        "burnin": {"epochs": 1, "batch_size": 4},
        "semi": {"max_steps": 2, "unlabelled_batch_size": 2, "batch_size": 2},
    }
    summary = demo.run_demo(overrides, train, processes=1)
    out = capsys.readouterr().out
    assert set(summary["oIoU"]) == {
        "supervised only (burn-in)",
        "plain semi-supervised baseline (teacher)",
        "SemiRES IOM + PWA (teacher)",
        "SemiRES CPI-U + PWA (teacher)",
    }
    for strategy in ("iom", "cpi-u"):
        counts = summary["audit"][strategy]
        assert counts["positive"] + counts["negative"] + counts["tie"] + counts["no_correction"] > 0
        assert f"SemiRES {strategy.upper()} + PWA (teacher)" in out
        assert strategy in summary["semires_minus_baseline"]
    assert "the plain baseline" in out and "positive" in out
    assert (tmp_path / "out" / "seed0" / "demo_summary.json").is_file()


def test_config_replace_keeps_defaults_implicit():
    """``replace`` on a baseline config (strategy none) must not make the default thresholds
    explicit (a to_dict round trip refused them: 'none' reads no thresholds)."""
    cfg = build_config([{"method": "baseline"}])
    assert cfg.strategy == "none"
    assert cfg.replace(seed=3).seed == 3
    with pytest.raises(ConfigError, match="unknown config key 'sed'"):
        cfg.replace(sed=3)
    with pytest.raises(ConfigError, match="iom_thresh"):
        cfg.replace(iom_thresh=0.6)  # given explicitly for a strategy that does not read it
