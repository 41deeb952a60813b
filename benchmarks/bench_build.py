"""Benchmark ``build_library``: image prefetching, and what keeps both cores busy.

Writes JPEG files from ``skimage.data`` photos and builds a library from them, alternating
``--repeats`` times between:

* ``prefetch=0``: load, then generate, one after the other (the build loop before prefetching);
* ``prefetch=2``: the next images decoded in a thread while the generator runs (the default);
* ``workers=2``: two forked processes load and generate images while this one writes the
  library (``samrefine build --workers 2``; classical only);
* ``2 shards``: two processes (forked), each building one shard with ``prefetch=2``, as
  ``samrefine build --shard 0/2`` and ``--shard 1/2`` side by side do (classical only).

Generators:

* ``classical`` (the default contrast hierarchy, ``samrefine build --generator classical``) on
  640 x 480 JPEGs, the size of a COCO photo;
* ``threshold`` (12 level sets) on 1600 x 1200 JPEGs: generation is cheap, so decoding a large
  JPEG is a real share of the work and prefetching could show.

Prints, per mode, wall-clock images/s (median), the ratio to ``prefetch=0`` measured in this
run, and CPU utilisation (CPU seconds of every process / wall seconds: 1.0 is one busy core,
2.0 both), plus the median decode and generate times of one image and the load average (the
machine may be shared). Run: ``python benchmarks/bench_build.py`` (about 2 minutes on 2 idle
cores).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from samrefine.library import ProposalLibrary, build_library, get_generator  # noqa: E402
from samrefine.library.generate import Generator, load_image  # noqa: E402

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def write_images(folder: str, n: int, size: tuple[int, int]) -> list[int]:
    """``n`` JPEGs ``<i>.jpg`` of ``size = (W, H)`` in ``folder``."""
    from PIL import Image
    from skimage import data

    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()
        im = Image.fromarray(photo).convert("RGB").resize(size, Image.BILINEAR)
        im.save(os.path.join(folder, f"{i}.jpg"), quality=92)
    return list(range(n))


def levels(image: np.ndarray) -> np.ndarray:
    return np.stack([image[..., c] > t for c in range(3) for t in (40, 90, 140, 190)])


def _cpu() -> float:
    """CPU seconds of this process and its finished children (a build's workers have exited
    when it returns)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _build(folder, ids, gen, prefetch, out, workers=1, shard=None) -> None:
    r = build_library(
        out,
        ids,
        gen,
        images=folder,
        file_pattern="{image_id}.jpg",
        if_exists="overwrite",
        prefetch=prefetch,
        workers=workers,
        shard=shard,
        progress=False,
    )
    assert r.finished and r.added == r.total, r


def run(folder, ids, gen, mode, out) -> tuple[float, float]:
    """``(images/s, CPU utilisation)`` of one build of ``ids``."""
    t, c = time.perf_counter(), _cpu()
    if mode == "workers=2":
        _build(folder, ids, gen, 2, out, workers=2)
    elif mode == "2 shards":
        fork = multiprocessing.get_context("fork")
        procs = [
            fork.Process(target=_build, args=(folder, ids, gen, 2, out, 1, (i, 2)))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0, p.exitcode
        with ProposalLibrary.open(out.replace(".srlib", "-shard-*.srlib")) as lib:
            assert lib.image_ids().tolist() == sorted(ids)  # read unmerged, as one library
    else:
        _build(folder, ids, gen, 0 if mode == "prefetch=0" else 2, out)
    wall = time.perf_counter() - t
    return len(ids) / wall, (_cpu() - c) / wall


def per_image_ms(folder, ids, gen) -> tuple[float, float]:
    """Median decode and generate milliseconds of one image."""
    decode, generate = [], []
    for key in ids:
        t = time.perf_counter()
        image = load_image(os.path.join(folder, f"{key}.jpg"))
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        gen(image)
        generate.append(time.perf_counter() - t)
    return 1e3 * statistics.median(decode), 1e3 * statistics.median(generate)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=12, help="images per build (default 12)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-threshold", action="store_true", help="only the classical generator")
    args = ap.parse_args(argv)
    cases = [("classical", get_generator("classical"), (640, 480))]
    if not args.no_threshold:
        cases.append(("threshold", Generator("threshold", levels), (1600, 1200)))
    print(
        f"{args.images} JPEGs per build, {args.repeats} alternating runs per mode; medians; "
        f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, gen, size in cases:
            folder = os.path.join(tmp, name)
            ids = write_images(folder, args.images, size)
            gen(load_image(os.path.join(folder, "0.jpg")))  # compile / warm up
            decode, generate = per_image_ms(folder, ids[:4], gen)
            modes = ["prefetch=0", "prefetch=2"]
            if name == "classical":
                modes += ["workers=2", "2 shards"]
            got: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
            for r in range(args.repeats):
                for m in modes:
                    got[m].append(run(folder, ids, gen, m, os.path.join(tmp, f"{name}{r}.srlib")))
            print(
                f"\n{name}: {size[0]}x{size[1]} JPEGs; one image: decode {decode:.1f} ms, "
                f"generate {generate:.1f} ms (decoding is {decode / (decode + generate):.1%})"
            )
            base = statistics.median(v[0] for v in got["prefetch=0"])
            for m in modes:
                rate = statistics.median(v[0] for v in got[m])
                cpu = statistics.median(v[1] for v in got[m])
                runs = ", ".join(f"{v[0]:.2f}" for v in got[m])
                print(
                    f"  {m:11s} {rate:7.2f} images/s  {rate / base:5.2f}x  CPU {cpu:4.2f} cores"
                    f"   (runs: {runs})"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
