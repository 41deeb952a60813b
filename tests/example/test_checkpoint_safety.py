"""Checkpoints are read with weights_only=True: a crafted file cannot run code (issue 14)."""

from __future__ import annotations

import argparse
import pathlib

import pytest
import torch

from examples.semires_lavt import checkpoints
from examples.semires_lavt.config import build_config
from examples.semires_lavt.lavt import build_lavt, load_lavt_checkpoint, load_swin_checkpoint
from examples.semires_lavt.lavt.swin import UnsafeCheckpointError, read_checkpoint
from examples.semires_lavt.train import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class _Payload:
    """Unpickling this creates ``marker`` (stands for any code an attacker could run)."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _crafted(tmp_path, name: str = "evil.pth") -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / f"{name}.ran"
    path = tmp_path / name
    weights = build_lavt("tiny_random", img_size=48, verbose=False).state_dict()
    torch.save({"model": weights, "step": 2, "extra": _Payload(marker)}, path)
    return path, marker


def test_the_crafted_file_does_run_code_when_unpickled_unsafely(tmp_path):
    """The payload is live: unpickling it fully creates the marker (its absence means something)."""
    path, marker = _crafted(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.is_file()


def test_every_reader_refuses_the_crafted_file_without_running_it(tmp_path):
    path, marker = _crafted(tmp_path)
    model = build_lavt("tiny_random", img_size=48, verbose=False)
    for read in (
        checkpoints.load_checkpoint,
        read_checkpoint,
        lambda p: load_lavt_checkpoint(model, p),
        lambda p: load_swin_checkpoint(model.backbone.swin, p),
    ):
        with pytest.raises(UnsafeCheckpointError, match="not loaded"):
            read(path)
    assert not marker.exists()


def test_training_refuses_a_crafted_resume_state_and_initial_weights(synthetic_root, tmp_path):
    from tiny_settings import tiny_train_settings

    out = tmp_path / "run"
    out.mkdir()
    latest, marker = _crafted(out, "latest.pth")
    with pytest.raises(UnsafeCheckpointError):
        train(build_config([tiny_train_settings(synthetic_root, out, method="supervised")]))
    init, init_marker = _crafted(tmp_path, "init.pth")
    settings = tiny_train_settings(
        synthetic_root, tmp_path / "semi", method="baseline", init_checkpoint=str(init)
    )
    with pytest.raises(UnsafeCheckpointError):
        train(build_config([settings]))
    assert not marker.exists() and not init_marker.exists()


def test_our_own_checkpoints_and_official_lavt_args_load_safely(tmp_path):
    """RNG states as tensors and numbers; an official checkpoint's argparse.Namespace admitted."""
    import random

    import numpy as np

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = checkpoints.rng_state()
    path = checkpoints.save_checkpoint(tmp_path / "latest.pth", {"rng": [state], "step": 1})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    checkpoints.set_rng_state(checkpoints.load_checkpoint(path)["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected

    official = tmp_path / "model_best_refcoco.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=5e-5)}, official)
    loaded = read_checkpoint(official)
    assert loaded["args"].lr == 5e-5 and torch.equal(loaded["model"]["w"], torch.ones(2))
