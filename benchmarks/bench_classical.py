"""Benchmark the classical (non-SAM) proposal generator: the ``hierarchy`` method (the default)
against the older ``multiscale`` method (Felzenszwalb at four scales plus SLIC), measured in the
same run on the same images.

Images: ``skimage.data`` photos (real, 300-600 px) and the worked example's synthetic RefCOCO
scenes (160-320 px, the generator's default sizes). For each image and method the generator runs
``--repeats`` times, alternating methods; the median wall time per image is printed with the
mask count and the ratio multiscale / hierarchy (above 1: the hierarchy is faster). One thread.

Run: ``python benchmarks/bench_classical.py`` (about a minute on one core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

from samrefine.library.classical import classical_proposals  # noqa: E402

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [(name, getattr(data, name)()) for name in PHOTOS]


def synthetic(n: int) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    from examples.semires_lavt.data.refer import IMAGE_DIR
    from examples.semires_lavt.data.synthetic import write_synthetic_refcoco

    root = tempfile.mkdtemp(prefix="bench_classical_")
    write_synthetic_refcoco(root, n, seed=0, progress=False)
    files = sorted(os.listdir(os.path.join(root, IMAGE_DIR)))[:n]
    return [
        (f"synthetic {i}", np.asarray(Image.open(os.path.join(root, IMAGE_DIR, f)).convert("RGB")))
        for i, f in enumerate(files)
    ]


def timed(image: np.ndarray, method: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    props = classical_proposals(image, method=method)
    return time.perf_counter() - t0, len(props)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=8, help="synthetic scenes to time")
    args = parser.parse_args()
    images = photos() + synthetic(args.synthetic)
    timed(images[-1][1], "hierarchy")  # warm-up: imports and Numba compilation
    timed(images[-1][1], "multiscale")
    print(
        f"{'image':<14} {'size':>9} {'hierarchy ms':>13} {'masks':>6} {'multiscale ms':>14} "
        f"{'masks':>6} {'ratio':>6}"
    )
    ratios = {"photo": [], "synthetic": []}
    for name, image in images:
        runs: dict[str, list[float]] = {"hierarchy": [], "multiscale": []}
        masks = {}
        for _ in range(args.repeats):
            for method in runs:
                t, n = timed(image, method)
                runs[method].append(t)
                masks[method] = n
        h, m = statistics.median(runs["hierarchy"]), statistics.median(runs["multiscale"])
        ratios["synthetic" if name.startswith("synthetic") else "photo"].append(m / h)
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(
            f"{name:<14} {size:>9} {1e3 * h:>13.1f} {masks['hierarchy']:>6} {1e3 * m:>14.1f} "
            f"{masks['multiscale']:>6} {m / h:>6.2f}"
        )
    for kind, values in ratios.items():
        print(f"median ratio multiscale / hierarchy, {kind}: {statistics.median(values):.2f}x")


if __name__ == "__main__":
    main()
