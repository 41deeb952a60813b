"""Benchmark reading a library as 256 unmerged shards against the same library merged.

Builds one set of images (synthetic proposals: 12 level-set masks of a smooth random image,
about 200-600 runs each), writes it as ``--shards`` shard files of one build and as their
merge, then measures in this process:

1. random-access lookup + decode (``lib[k]``), microseconds per image, CPU time (the shared
   machine makes wall time noisy), medians of ``--repeats`` passes, sharded / merged ratio;
2. the one-off cost of the first lookup in the sharded library (reading and checking every
   shard's id list to build the routing table), ms;
3. the shard files this process holds open after the passes (``/proc/self/fd``),
for several values of ``MAX_OPEN_SHARDS`` (the per-thread bound on open shard files).

Run: ``python benchmarks/bench_shards.py`` (about a minute on 2 cores).
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

from samrefine.library import (  # noqa: E402
    ProposalLibrary,
    build_library,
    merge_libraries,
    reader,  # noqa: E402
)
from samrefine.library.generate import Generator  # noqa: E402


def image(key: int) -> np.ndarray:
    rng = np.random.default_rng(key)
    yy, xx = np.mgrid[:96, :128]
    chans = [
        (np.sin(xx / (5 + c) + rng.random() * 6) * np.cos(yy / (7 + c)) + 1) * 127 for c in range(3)
    ]
    return np.stack(chans, -1).astype(np.uint8)


def masks(img: np.ndarray) -> np.ndarray:
    return np.stack([img[..., c] > t for c in range(3) for t in (40, 90, 140, 190)])


def open_library_fds(folder: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith(folder)
        except OSError:
            pass
    return n


def per_lookup_us(lib, keys) -> float:
    t = time.process_time()
    for k in keys:
        lib[k]
    return (time.process_time() - t) / len(keys) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=256)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--lookups", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--max-open",
        type=int,
        nargs="*",
        default=[32, 128, 256],
        help="MAX_OPEN_SHARDS values to measure",
    )
    args = ap.parse_args(argv)
    gen = Generator("levels", masks, params={"levels": 4})
    ids = list(range(args.images))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i in range(args.shards):
            build_library(
                os.path.join(tmp, "lib.srlib"),
                ids,
                gen,
                load=image,
                shard=(i, args.shards),
                progress=False,
                commit_every=64,
            )
        shards = sorted(os.path.join(tmp, f) for f in os.listdir(tmp) if "-shard-" in f)
        merged = merge_libraries(shards, os.path.join(tmp, "merged.srlib"), progress=False)
        one = ProposalLibrary.open(merged)
        many = ProposalLibrary.open(shards)
        keys = np.random.default_rng(0).choice(ids, args.lookups).tolist()
        assert all(one[k] == many[k] for k in keys[:50])  # same answers
        many.close()
        print(
            f"{args.images} images, {args.shards} shards (built in "
            f"{time.perf_counter() - t0:.0f} s), {args.lookups} random lookups x "
            f"{args.repeats}; lookup + decode, us per image (CPU time), medians"
        )
        merged_runs = [per_lookup_us(one, keys) for _ in range(args.repeats)]
        m = statistics.median(merged_runs)
        print(f"{'merged library':44s} {m:8.1f} us")
        for bound in args.max_open:
            reader.MAX_OPEN_SHARDS = bound
            many = ProposalLibrary.open(shards)
            t = time.process_time()
            many[keys[0]]
            first_ms = (time.process_time() - t) * 1e3
            runs = [per_lookup_us(many, keys) for _ in range(args.repeats)]
            fds = open_library_fds(tmp) - 1  # minus the merged file
            s = statistics.median(runs)
            print(
                f"{f'sharded, MAX_OPEN_SHARDS={bound}':44s} {s:8.1f} us  {s / m:5.2f}x merged;"
                f" {fds} shard files open; first lookup {first_ms:.0f} ms"
            )
            many.close()
        one.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
