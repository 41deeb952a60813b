"""torchrun with gloo on 2 CPU processes = 1 process with the same global batch (same weights).

Both stages are checked: burn-in, then SemiRES (CPI-U, PWA, EMA teacher) from one set of
burn-in weights.

The step is made deterministic across layouts: drop-path 0 and BERT dropout off (each rank
draws its own dropout masks otherwise), every sample's augmentation seeded by (epoch, index),
global batches identical by construction (``GlobalBatchSampler``), BatchNorm statistics summed
over ranks (``AllReduceBatchNorm2d``), in float64 in both layouts (``exact_batchnorm``), so the
forward pass is the same bits and no ReLU decides differently. The remaining differences are
float summation order in the backward pass.

AdamW runs with lr = 1 and eps = 1 here, which makes its step linear in the gradient
(SGD-like). With eps = 1e-8 its first steps are lr * sign(g), and elements whose gradient is
float noise (null directions such as PWAM's projection biases, cancelled by softmax or
InstanceNorm, and near-cancelling sums) flip sign between any two summation orders: one process
with 1 or 2 threads already differs by 2 * lr there. The equality checked is then "to float
summation order", as it should be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "semires_lavt" / "train.py"


DRIVER = """
import sys
sys.path.insert(0, {repo!r})
from examples.semires_lavt.train import main
config, out, init = sys.argv[1:4]
common = ["--config", config, "--batch-size", "2", "--unlabelled-batch-size", "2"]
main(common + ["--method", "supervised", "--out-dir", out + "/burnin"])
main(common + ["--method", "semires-cpi-u", "--init-checkpoint", init, "--out-dir", out + "/semi"])
"""


def _compare(one: dict, two: dict, init: dict, parts: tuple[str, ...]) -> None:
    """Every floating tensor equal to float summation order, relative to how far it moved."""
    moved = 0
    for part in parts:
        assert one[part].keys() == two[part].keys()
        for key, value in one[part].items():
            name = f"{part}.{key}"
            if not value.is_floating_point():
                assert torch.equal(two[part][key], value), name
                continue
            step = (value - init[key]).norm().item()
            diff = (two[part][key] - value).norm().item()
            assert diff <= 1e-3 * step + 1e-6 * value.numel() ** 0.5, (name, diff, step)
            moved += step > 1e-3 * value.numel() ** 0.5
    assert moved > 50  # the weights did change, so their equality is not trivial


def test_two_gloo_processes_equal_one_process(synthetic_root, library, tmp_path):
    """Burn-in, then SemiRES (CPI-U) from the same burn-in weights: 1 x (4 + 4) = 2 x (2 + 2)."""
    from examples.semires_lavt.train import main

    config = tmp_path / "ddp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_root": str(synthetic_root),
                "library": library,
                "model": "tiny_random",
                "image_size": 48,
                "labelled_percent": 30,
                "workers": 0,
                "max_steps": 2,
                "lr": 1.0,
                "adam_eps": 1.0,
                "hflip_p": 0.5,
                "drop_path_rate": 0.0,
                "text_dropout": False,
                "eval_batch_size": 2,
                "eval_max_batches": 1,
                "progress": False,
                "tensorboard": False,
                "num_threads": 1,
                "exact_batchnorm": True,
            }
        )
    )
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", str(config), "--batch-size", "4", "--unlabelled-batch-size", "4"]
    main(common + ["--method", "supervised", "--out-dir", str(one / "burnin")])
    init = str(one / "burnin" / "final.pth")
    main(
        common
        + ["--method", "semires-cpi-u", "--init-checkpoint", init, "--out-dir", str(one / "semi")]
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(driver),
            str(config),
            str(two),
            init,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "world 2" in run.stdout

    def load(path):
        return torch.load(path, weights_only=True)

    burnin_one, burnin_two = load(one / "burnin" / "final.pth"), load(two / "burnin" / "final.pth")
    torch.manual_seed(0)
    from examples.semires_lavt.lavt import build_lavt

    fresh = build_lavt("tiny_random", img_size=48, drop_path_rate=0.0, verbose=False).state_dict()
    _compare(burnin_one, burnin_two, fresh, ("model",))
    semi_one, semi_two = load(one / "semi" / "final.pth"), load(two / "semi" / "final.pth")
    _compare(semi_one, semi_two, burnin_one["model"], ("student", "model"))
