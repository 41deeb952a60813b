"""SIGKILL anywhere, then resume: the same bits as a run never interrupted (CPU, 1 thread).

A tiny SemiRES run (CPI-U, PWA, EMA teacher, flips, colour jitter, BERT dropout, drop-path) of
6 steps, 4 per epoch, checkpoints every 2 steps, an evaluation at the epoch end (step 4). A
subprocess running it is killed with a real SIGKILL at three points:

* mid-epoch, after step 3 (the last checkpoint is from step 2),
* right after the epoch-end checkpoint of step 4 (its evaluation is in that checkpoint),
* during the write of that checkpoint (half of the file on disk; ``latest.pth`` is still
  step 2's).

Each killed run is resumed and compared with the uninterrupted run: every tensor of
``latest.pth`` (student, teacher, optimiser, schedule, RNG states) and ``final.pth``, the
history and the final metrics. Re-running the finished run changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from examples.semires_lavt.config import build_config
from examples.semires_lavt.lavt import build_lavt
from examples.semires_lavt.train import train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]

DRIVER = r"""
import io, json, os, signal, sys
from pathlib import Path
import torch
from examples.semires_lavt.config import build_config
from examples.semires_lavt.train import train

settings, mode, at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


if mode == "write":  # die with half of step `at`'s latest.pth written
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == at and hasattr(f, "write"):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            kill()
        return real_save(obj, f, *args, **kwargs)

    torch.save = half_save
    train(build_config([settings]))
else:  # die right after step `at` (and its checkpoint, if it has one)
    train(build_config([settings]), after_step=lambda step: kill() if step == at else None)
raise SystemExit("the run was not killed")
"""


def _settings(root: Path, library: str, init: str, out: Path) -> dict[str, Any]:
    from tiny_settings import tiny_train_settings

    return tiny_train_settings(
        root,
        out,
        method="semires-cpi-u",
        library=library,
        init_checkpoint=init,
        unlabelled_batch_size=10,  # 43 unlabelled referents: 4 steps per epoch
        max_steps=6,
        ckpt_every=2,
        eval_every_epochs=1,
        hflip_p=0.5,
        num_threads=1,
    )


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Equal bits: tensors with torch.equal, containers item by item, the rest with ==."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _load(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state.pop("config")  # holds out_dir, which differs between the runs
    return state


def _start_killed_run(settings: dict, mode: str, at: int) -> subprocess.Popen:
    """Start the run in a subprocess that SIGKILLs itself at the given point."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "OMP_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(settings), mode, str(at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    results.pop("wall_s")
    return results


def test_sigkill_anywhere_then_resume_equals_uninterrupted(synthetic_root, library, tmp_path):
    torch.manual_seed(0)
    init = tmp_path / "init.pth"
    torch.save({"model": build_lavt("tiny_random", img_size=48, verbose=False).state_dict()}, init)
    cases = {"mid_epoch": ("after", 3, 2), "after_epoch_ckpt": ("after", 4, 4)}
    cases["during_write"] = ("write", 4, 2)
    killed = {  # the killed runs go on in subprocesses while the reference run trains here
        name: _start_killed_run(
            _settings(synthetic_root, library, str(init), tmp_path / name), mode, at
        )
        for name, (mode, at, _) in cases.items()
    }
    straight_dir = tmp_path / "straight"
    straight = train(build_config([_settings(synthetic_root, library, str(init), straight_dir)]))
    assert [h["tag"] for h in straight["history"]] == ["epoch 1", "final"]
    reference = _load(straight_dir / "latest.pth")
    reference_final = torch.load(straight_dir / "final.pth", weights_only=True)
    reference_final.pop("config")

    for name, (mode, _, saved_step) in cases.items():
        out = tmp_path / name
        output, _ = killed[name].communicate(timeout=300)
        assert killed[name].returncode == -signal.SIGKILL, output[-3000:]
        assert torch.load(out / "latest.pth", weights_only=True)["step"] == saved_step, name
        if mode == "write":
            assert (out / ".latest.pth.tmp").is_file()  # the half-written file is left behind
        assert not (out / "results.json").exists()
        train(build_config([_settings(synthetic_root, library, str(init), out)]))
        _assert_same(_load(out / "latest.pth"), reference, name)
        final = torch.load(out / "final.pth", weights_only=True)
        final.pop("config")
        _assert_same(final, reference_final, f"{name} final.pth")
        _assert_same(_results(out), _results(straight_dir), f"{name} results.json")

    # a finished run re-run: no second final evaluation, nothing trained, same files
    again = train(build_config([_settings(synthetic_root, library, str(init), straight_dir)]))
    assert [h["tag"] for h in again["history"]] == ["epoch 1", "final"]
    _assert_same(_load(straight_dir / "latest.pth"), reference, "re-run")
    _assert_same(_results(straight_dir), {k: v for k, v in straight.items() if k != "wall_s"})


def test_iterating_the_loaders_does_not_draw_from_the_global_rng(synthetic_root):
    """Evaluation between two steps must not change what the next step draws (exact resume)."""
    from tiny_settings import tiny_train_settings

    from examples.semires_lavt.data import load_refer, make_split
    from examples.semires_lavt.distributed import DistInfo
    from examples.semires_lavt.loaders import build_loaders

    cfg = build_config([tiny_train_settings(synthetic_root, method="supervised")])
    split = make_split(load_refer(synthetic_root).train_image_ids(), 30, 0)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    loaders = build_loaders(cfg, info, synthetic_root, split, None, 48)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for loader in (loaders.evaluation, loaders.labelled):
        next(iter(loader))
    assert torch.equal(torch.get_rng_state(), before)
