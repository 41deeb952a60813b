"""Benchmark ``build_library`` with and without image prefetching (decoding in threads).

Writes ``--images`` JPEG files (``skimage.data`` photos scaled to 1600 x 1200, the size of a
large COCO-like photo) and builds a library from them with ``prefetch=0`` (load, then generate,
one after the other) and ``prefetch=2`` (the next images decoded in threads while the generator
runs), alternating, ``--repeats`` times each, for two generators:

* ``threshold`` (12 level sets of the photo): a cheap generator, so loading would show;
* ``classical`` (superpixel regions; only with ``--classical``, many seconds an image at this
  size): decoding is a small share.

Prints wall-clock images per second (medians) and the ratio prefetch / no prefetch, measured in
this run. Run: ``python benchmarks/bench_build.py`` (about three minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from samrefine.library import build_library, get_generator  # noqa: E402
from samrefine.library.generate import Generator  # noqa: E402

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def write_images(folder: str, n: int) -> list[int]:
    from PIL import Image
    from skimage import data

    for i in range(n):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()
        im = Image.fromarray(photo).convert("RGB").resize((1600, 1200), Image.BILINEAR)
        im.save(os.path.join(folder, f"{i}.jpg"), quality=92)
    return list(range(n))


def levels(image: np.ndarray) -> np.ndarray:
    return np.stack([image[..., c] > t for c in range(3) for t in (40, 90, 140, 190)])


def rate(folder: str, ids, gen, prefetch: int, out: str) -> float:
    t = time.perf_counter()
    r = build_library(
        out,
        ids,
        gen,
        images=folder,
        file_pattern="{image_id}.jpg",
        if_exists="overwrite",
        prefetch=prefetch,
        progress=False,
    )
    assert r.finished and r.added == len(ids)
    return len(ids) / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--classical",
        action="store_true",
        help="also the classical generator (slow: minutes per run at this size)",
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ids = write_images(tmp, args.images)
        gens = {"threshold": Generator("threshold", levels)}
        if args.classical:
            gens["classical"] = get_generator("classical", max_masks=100)
        print(
            f"{args.images} JPEGs of 1600x1200, {args.repeats} alternating runs each; "
            "wall-clock images/s, medians"
        )
        for name, gen in gens.items():
            ids_here = ids if name == "threshold" else ids[: max(4, args.images // 4)]
            runs = {0: [], 2: []}
            for _ in range(args.repeats):
                for p in (0, 2):
                    runs[p].append(rate(tmp, ids_here, gen, p, os.path.join(tmp, "o.srlib")))
            a, b = statistics.median(runs[0]), statistics.median(runs[2])
            print(
                f"{name:10s} ({len(ids_here)} images)  prefetch=0 {a:7.2f}   prefetch=2 "
                f"{b:7.2f}   ratio {b / a:5.2f}x   all: {runs}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
