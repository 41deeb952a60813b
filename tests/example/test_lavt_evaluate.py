"""Evaluation metrics against hand counts; distributed evaluation equals one process; CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from examples.semires_lavt.data import ReferDataset, collate
from examples.semires_lavt.evaluate import evaluate, iou_counts, main, summarize, summarize_by_size

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Five hand-made 4x4 samples; I and U counted by hand.
PRED = [
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]],
]
GT = [
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]],  # I = 2, U = 6
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],  # I = 0, U = 1
    [[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],  # I = 3, U = 3
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],  # I = 0, U = 0 -> IoU 0
    [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]],  # I = 1, U = 2 -> IoU 0.5
]


def test_metrics_against_hand_counts():
    inter, union = iou_counts(torch.tensor(PRED), torch.tensor(GT))
    assert inter.tolist() == [2, 0, 3, 0, 1] and union.tolist() == [6, 1, 3, 0, 2]
    metrics = summarize(inter.numpy(), union.numpy())
    assert metrics["n"] == 5
    assert metrics["oIoU"] == pytest.approx(6 / 12)
    assert metrics["mIoU"] == pytest.approx((1 / 3 + 0 + 1 + 0 + 0.5) / 5)
    assert metrics["precision@0.5"] == pytest.approx(2 / 5)  # IoU >= 0.5 counts
    for t in (0.6, 0.7, 0.8, 0.9):
        assert metrics[f"precision@{t}"] == pytest.approx(1 / 5)


def test_size_buckets_and_smallest_subsets():
    inter = np.array([2, 0, 3, 0, 1])
    union = np.array([6, 1, 3, 0, 2])
    areas = np.array([500, 2000, 50_000, 10, 9216])  # small, medium, large, small, large
    buckets = summarize_by_size(inter, union, areas)
    assert buckets["small"]["n"] == 2 and buckets["small"]["oIoU"] == pytest.approx(2 / 6)
    assert buckets["medium"]["n"] == 1 and buckets["medium"]["oIoU"] == 0.0
    assert buckets["large"]["n"] == 2 and buckets["large"]["oIoU"] == pytest.approx(4 / 5)
    # ceil(5 % of 5) = 1 sample: the one of area 10 (I = 0, U = 0)
    assert buckets["smallest_5%"]["n"] == 1 and buckets["smallest_5%"]["mIoU"] == 0.0
    with pytest.raises(ValueError, match="swapped"):
        summarize([3], [2])


class _ToyModel(nn.Module):
    """Deterministic stand-in for LAVT: logits from the image and the mean token id."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(2, 3, 1, 1, generator=generator))
            self.conv.bias.zero_()

    def forward(self, image, input_ids, attention_mask):
        shift = (input_ids.float() * attention_mask).mean(dim=1).view(-1, 1, 1) / 3000.0
        logits = self.conv(image)
        return torch.stack([logits[:, 0], logits[:, 1] + shift], dim=1)


class _AllForeground(nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image, input_ids, attention_mask):
        logits = torch.zeros(image.shape[0], 2, *image.shape[-2:])
        logits[:, 1] = 1.0
        return logits


def _val_dataset(root, size=32):
    return ReferDataset(root, split="val", image_size=size, sentences="all", with_orig_mask=True)


def test_evaluate_all_foreground_matches_direct_counts(synthetic_root):
    dataset = _val_dataset(synthetic_root)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate)
    result = evaluate(_AllForeground(), loader, progress=False)
    # predicting every pixel: I = |GT|, U = all pixels
    gt_model = [int(dataset[i]["mask"].sum()) for i in range(len(dataset))]
    gt_orig = [int(dataset[i]["mask_orig"].sum()) for i in range(len(dataset))]
    pixels_orig = [int(np.prod(dataset[i]["orig_size"])) for i in range(len(dataset))]
    assert result["n_samples"] == len(dataset)
    model_size = result["protocols"]["model_size"]["all"]
    assert model_size["oIoU"] == pytest.approx(sum(gt_model) / (32 * 32 * len(dataset)))
    original = result["protocols"]["original"]["all"]
    assert original["oIoU"] == pytest.approx(sum(gt_orig) / sum(pixels_orig))
    assert original["mIoU"] == pytest.approx(np.mean(np.divide(gt_orig, pixels_orig)))
    assert result["oIoU"] == model_size["oIoU"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        dataset = _val_dataset(Path(root))
        subset = torch.utils.data.Subset(dataset, range(len(dataset) - (len(dataset) % 2 == 0)))
        sampler = torch.utils.data.DistributedSampler(subset, shuffle=False)
        loader = torch.utils.data.DataLoader(
            subset, batch_size=2, sampler=sampler, collate_fn=collate
        )
        result = evaluate(_ToyModel(), loader, progress=False)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_equals_single_process(synthetic_root, tmp_path):
    dataset = _val_dataset(synthetic_root)
    subset = torch.utils.data.Subset(dataset, range(len(dataset) - (len(dataset) % 2 == 0)))
    assert len(subset) % 2 == 1  # odd: DistributedSampler repeats one sample on rank 1
    loader = torch.utils.data.DataLoader(subset, batch_size=2, collate_fn=collate)
    single = evaluate(_ToyModel(), loader, progress=False)
    torch.multiprocessing.spawn(
        _distributed_worker,
        args=(2, _free_port(), str(synthetic_root), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for rank in range(2):
        distributed = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert distributed["n_samples"] == len(subset)
        # JSON round trip turns NaN into NaN floats; compare with NaN-aware equality
        np.testing.assert_equal(distributed, json.loads(json.dumps(single)))


def test_cli_help_and_smoke_run(synthetic_root, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    script = repo / "examples" / "semires_lavt" / "evaluate.py"
    env = dict(os.environ, PYTHONPATH="")
    help_run = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert help_run.returncode == 0 and "--random-init" in help_run.stdout
    out = tmp_path / "eval.json"
    from examples.semires_lavt.lavt import build_lavt

    checkpoint = tmp_path / "tiny_random.pth"
    torch.save({"model": build_lavt("tiny_random", verbose=False).state_dict()}, checkpoint)
    results = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--model",
            "tiny_random",
            "--data-root",
            str(synthetic_root),
            "--splits",
            "val",
            "testB",
            "--batch-size",
            "4",
            "--output",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert set(results) == {"val", "testB"} == set(saved["results"])
    assert results["val"]["n_samples"] == len(_val_dataset(synthetic_root))
    for result in results.values():
        assert 0.0 <= result["oIoU"] <= 1.0
        assert set(result["protocols"]) == {"model_size", "original"}
        assert set(result["protocols"]["original"]["by_size"]) == {
            "small",
            "medium",
            "large",
            "smallest_5%",
            "smallest_10%",
        }
