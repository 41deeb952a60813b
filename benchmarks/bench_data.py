"""Benchmark: RefCOCO-format data loading and augmentation at 480 x 480.

Reads a synthetic RefCOCO written in the refer layout (JPEG decode, polygon rasterisation,
tokenisation) through ``ReferDataset`` with the semi-supervised training pipeline: random crop,
resize to 480 x 480, horizontal flip, weak and strong views (colour jitter + blur), and, when
``samrefine.Proposals`` is available, 64 proposals per image that follow every transform.
Prints the median samples/s over repeats, in one process and with 2 DataLoader workers, and the
rate per worker.

Usage::

    python benchmarks/bench_data.py [--images 48] [--samples 96] [--repeats 3] [--no-proposals]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.semires_lavt.data import (
    RandomCrop,
    RandomHorizontalFlip,
    ReferDataset,
    Resize,
    collate,
    decode_polygons,
    load_refer,
    write_synthetic_refcoco,
)


def proposal_source(root: Path, n_masks: int, seed: int = 0) -> dict:
    """Per image: its annotation masks plus random boxes and ellipses, ``n_masks`` in all."""
    import samrefine

    rng = np.random.default_rng(seed)
    index = load_refer(root)
    source = {}
    for image_id, record in index.images.items():
        height, width = record["height"], record["width"]
        masks = [
            decode_polygons(a["segmentation"], height, width)
            for a in index.annotations.values()
            if a["image_id"] == image_id
        ]
        yy, xx = np.mgrid[:height, :width]
        while len(masks) < n_masks:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = rng.uniform(4, width / 3), rng.uniform(4, height / 3)
            if rng.random() < 0.5:
                masks.append((abs(xx - cx) < rx) & (abs(yy - cy) < ry))
            else:
                masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1)
        source[image_id] = samrefine.Proposals.from_dense(np.stack(masks[:n_masks]))
    return source


def rate(dataset, workers: int, samples: int, batch_size: int = 8) -> float:
    """Samples per second for ``samples`` samples through a DataLoader."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    seen, start = 0, None
    for batch in loader:
        if start is None:  # exclude worker start-up and the first batch
            start = time.perf_counter()
            continue
        seen += batch["input_ids"].shape[0]
        if seen >= samples:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--no-proposals", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_refcoco(root, n_images=args.images, seed=0, progress=False)
        proposals = None
        if not args.no_proposals:
            try:
                proposals = proposal_source(root, n_masks=64)
            except (ImportError, AttributeError) as err:
                print(f"proposals skipped ({err})")
        dataset = ReferDataset(
            root,
            split="train",
            image_size=args.size,
            proposals=proposals,
            transforms=[RandomCrop((0.7, 1.0), p=0.5), Resize(args.size), RandomHorizontalFlip()],
            views=("weak", "strong"),
        )
        print(
            f"{len(dataset)} referents, {args.size}x{args.size}, weak+strong views, "
            f"proposals: {'64 per image' if proposals else 'none'}"
        )
        for workers in (0, 2):
            rates = [rate(dataset, workers, args.samples) for _ in range(args.repeats)]
            median = statistics.median(rates)
            per_worker = median / max(workers, 1)
            print(
                f"workers={workers}: median {median:7.1f} samples/s "
                f"({per_worker:6.1f} per worker; runs {', '.join(f'{r:.1f}' for r in rates)})"
            )


if __name__ == "__main__":
    main()
