"""Kill-and-resume equals an uninterrupted run, bit for bit on CPU (examples/semires_lavt)."""

from __future__ import annotations

import pytest
import torch

from examples.semires_lavt.config import build_config
from examples.semires_lavt.train import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class _Crash(Exception):
    """Raised from the step callback to stop a run abruptly."""


def _config(root, out, **changes):
    from tiny_settings import tiny_train_settings

    settings = tiny_train_settings(root, out, hflip_p=0.5, ckpt_every=2)
    settings.update(changes)
    return build_config([settings])


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_kill_and_resume_equals_uninterrupted(synthetic_root, library, tmp_path):
    """4 SemiRES steps (BERT dropout and drop-path on, flips, colour jitter, CPI-U, EMA).

    The interrupted run stops abruptly after step 3 (its last checkpoint is from step 2, so the
    resumed run repeats step 3 from the saved state) and after a restart must reach exactly the
    weights, teacher, optimiser state and logs of the run that was never interrupted.
    """
    from examples.semires_lavt.lavt import build_lavt

    torch.manual_seed(0)
    weights = str(tmp_path / "init.pth")
    torch.save(
        {"model": build_lavt("tiny_random", img_size=48, verbose=False).state_dict()}, weights
    )
    semi = {
        "method": "semires-cpi-u",
        "library": library,
        "init_checkpoint": weights,
        "max_steps": 4,
    }
    straight = train(_config(synthetic_root, tmp_path / "straight", **semi))

    def crash_after_step_3(step: int) -> None:
        if step == 3:
            raise _Crash  # nothing more is saved, as in a killed process

    with pytest.raises(_Crash):
        train(_config(synthetic_root, tmp_path / "resumed", **semi), after_step=crash_after_step_3)
    assert torch.load(tmp_path / "resumed" / "latest.pth", weights_only=True)["step"] == 2
    resumed = train(_config(synthetic_root, tmp_path / "resumed", **semi))
    assert resumed["steps"] == straight["steps"] == 4

    a = torch.load(tmp_path / "straight" / "latest.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "latest.pth", weights_only=True)
    _assert_same_state(a["model"], b["model"])
    _assert_same_state(a["teacher"]["module"], b["teacher"]["module"])
    assert a["teacher"]["step"] == b["teacher"]["step"] == 4
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        _assert_same_state(sa, sb)
    assert a["scheduler"] == b["scheduler"]
    assert a["history"] == b["history"]
    # and the run did train: weights moved away from the burn-in initialisation
    init = torch.load(weights, weights_only=True)["model"]
    assert any(not torch.equal(init[k], a["model"][k]) for k in init)
