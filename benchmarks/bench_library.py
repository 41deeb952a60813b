"""Benchmark the proposal library against the SemiRES reference per-referent JSON.

Measures, in one run, with realistic proposals (classical multi-scale superpixel regions, not
SAM, on real photos from ``skimage.data``, ~300 masks per image):

1. random access of one image's proposals plus a nearest resize to 480x480, images per second,
   in one process and through a DataLoader with 4 workers (fork): the library
   (``lib[id].resize((480, 480))``, runs) against a faithful naive reader of the reference
   format (``json.load``, ``rle2mask`` per proposal, ``torch`` nearest interpolate to 480x480,
   int64 as the reference dataset returns);
2. bytes on disk per image: the library against pycocotools compressed-RLE JSON of the same
   masks and the reference JSON (one file per referent; RefCOCO train has ~2.5 referents per
   image);
3. the time and memory to open a 20,000-image library (records repeated).

Run: ``python benchmarks/bench_library.py`` (about two minutes on 2 cores). Prints medians and
ratios measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")
REFS_PER_IMAGE = 2.5  # RefCOCO train: 42,404 referents over 16,994 images
SIZE = (480, 480)


# --------------------------------------------------------------------------- reference format


def reference_mask2rle(mask: np.ndarray) -> list[int]:
    """SemiRES ``mask2rle``: column-major, 1-based start/length pairs."""
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return runs.tolist()


def reference_rle2mask(counts, h, w) -> np.ndarray:
    """SemiRES ``rle2mask``: paint ``[start - 1, start - 1 + length)``, reshape column-major."""
    flat = np.zeros(h * w, dtype=np.uint8)
    for s, ln in zip(counts[0::2], counts[1::2]):
        flat[s - 1 : s - 1 + ln] = 1
    return flat.reshape((h, w), order="F")


def reference_load(path: str):
    """What SemiRES ``ReferSAMOfflineRleDataset`` does per sample: decode every proposal,
    interpolate (nearest) to 480x480, int64."""
    import torch

    with open(path) as f:
        doc = json.load(f)
    h, w = doc[0]["size"]
    dense = np.stack([reference_rle2mask(m["counts"], h, w) for m in doc])
    t = torch.from_numpy(dense)[None].float()
    return torch.nn.functional.interpolate(t, size=SIZE, mode="nearest")[0].long()


# --------------------------------------------------------------------------- datasets


class LibraryDataset:
    def __init__(self, lib, ids):
        self.lib, self.ids = lib, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        p = self.lib[self.ids[i]].resize(SIZE)
        return p.starts, p.lengths, p.offsets


class ReferenceDataset:
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return reference_load(self.paths[i])


def rate_single(fn, keys, min_seconds=2.0, max_items=10**6):
    """Median items/s over repeated passes (per-item times -> median latency)."""
    times = []
    t_end = time.perf_counter() + min_seconds
    n = 0
    while (time.perf_counter() < t_end or n < 3) and n < max_items:
        k = keys[n % len(keys)]
        t = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t)
        n += 1
    return 1.0 / statistics.median(times), len(times)


def rate_loader(dataset, n_items, workers=4):
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        shuffle=True,
        multiprocessing_context="fork",
        prefetch_factor=1,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    next(it)  # workers started
    t = time.perf_counter()
    got = 0
    for _ in it:
        got += 1
        if got >= n_items:
            break
    rate = got / (time.perf_counter() - t)
    del it
    return rate


# --------------------------------------------------------------------------- main


def open_probe(path: str) -> str:
    """Python source that opens the library in a fresh process and reports time and memory."""
    return "\n".join(
        [
            "import time, tracemalloc, resource",
            "import samrefine.library as L",
            "tracemalloc.start(); rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss",
            f"t = time.perf_counter(); lib = L.ProposalLibrary.open({path!r}); n = len(lib)",
            "dt = time.perf_counter() - t; peak = tracemalloc.get_traced_memory()[1]",
            "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0",
            "t = time.perf_counter(); r = lib.raw(12345); dr = time.perf_counter() - t",
            "t = time.perf_counter(); p = lib[12346]; dd = time.perf_counter() - t",
            "print(dt, peak, rss, n, dr, dd)",
            "",
        ]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40, help="images in the access benchmark")
    ap.add_argument("--big", type=int, default=20000, help="images in the open-time library")
    ap.add_argument("--seconds", type=float, default=2.0, help="min seconds per timing")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args(argv)

    import pycocotools.mask as pm
    import torch

    from samrefine.demo import photo
    from samrefine.library import ProposalLibrary
    from samrefine.library.classical import classical_proposals

    torch.set_num_threads(1)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_library_")
    os.makedirs(work, exist_ok=True)
    try:
        print(f"generating classical proposals for {', '.join(PHOTOS)} ...", flush=True)
        props = {name: classical_proposals(photo(name)) for name in PHOTOS}
        for name, p in props.items():
            print(f"  {name:10s} {p.size[0]}x{p.size[1]}  {len(p)} masks  {p.starts.size} runs")

        # ------------------------------------------------ build both stores
        ids = list(range(1, args.images + 1))
        src = {i: PHOTOS[i % len(PHOTOS)] for i in ids}
        lib_path = os.path.join(work, "bench.srlib")
        with ProposalLibrary.create(lib_path, generator="classical", if_exists="overwrite") as w:
            for i in ids:
                w.append(i, props[src[i]])
        ref_dir = os.path.join(work, "sam_rle_mask")
        os.makedirs(ref_dir, exist_ok=True)
        ref_text = {}
        for name, p in props.items():
            h, w_ = p.size
            dense = p.to_dense()
            ref_text[name] = json.dumps(
                [{"counts": reference_mask2rle(m), "size": [h, w_]} for m in dense]
            )
        ref_paths = {}
        for i in ids:  # one file per image is enough to time one referent's read
            ref_paths[i] = os.path.join(ref_dir, f"{i}.json")
            with open(ref_paths[i], "w") as f:
                f.write(ref_text[src[i]])
        lib = ProposalLibrary.open(lib_path)
        raw_path = os.path.join(work, "bench_raw.srlib")
        with ProposalLibrary.create(
            raw_path, generator="classical", if_exists="overwrite", compression="none"
        ) as w:
            for i in ids:
                w.append(i, props[src[i]])
        lib_raw = ProposalLibrary.open(raw_path)

        # ------------------------------------------------ correctness: same masks
        for name in PHOTOS:
            i = next(k for k in ids if src[k] == name)
            ours = lib[i].resize(SIZE).to_dense()
            theirs = reference_load(ref_paths[i]).numpy().astype(bool)
            assert np.array_equal(ours, theirs), f"{name}: library and reference disagree"
        print("check: library resize == reference decode+interpolate for every photo: OK")

        # ------------------------------------------------ random access + resize
        rng = np.random.default_rng(0)
        order = rng.permutation(ids).tolist()
        ours_1, n1 = rate_single(lambda k: lib[k].resize(SIZE), order, args.seconds)
        raw_1, _ = rate_single(lambda k: lib_raw[k].resize(SIZE), order, args.seconds)
        dense_1, _ = rate_single(lambda k: lib[k].resize(SIZE).to_dense(), order, args.seconds)
        ref_1, n2 = rate_single(
            lambda k: reference_load(ref_paths[k]), order, args.seconds, max_items=30
        )
        read_1, _ = rate_single(lambda k: lib.raw(k), order, 1.0)
        ours_4 = rate_loader(LibraryDataset(lib, order * 20), 600)
        ref_4 = rate_loader(ReferenceDataset([ref_paths[k] for k in order]), 24)

        # ------------------------------------------------ bytes per image
        n_img = len(PHOTOS)
        small = os.path.join(work, "sizes.srlib")
        small_z = os.path.join(work, "sizes_zlib.srlib")
        for path, comp in ((small, "none"), (small_z, "zlib")):
            with ProposalLibrary.create(
                path, generator="classical", if_exists="overwrite", compression=comp
            ) as w:
                for k, name in enumerate(PHOTOS):
                    w.append(k, props[name])
        ours_nb = os.path.getsize(small) / n_img
        ours_b = os.path.getsize(small_z) / n_img
        coco_b = 0
        for _name, p in props.items():
            rles = pm.encode(np.asfortranarray(p.to_dense().transpose(1, 2, 0).astype(np.uint8)))
            coco_b += len(
                json.dumps([{"size": r["size"], "counts": r["counts"].decode()} for r in rles])
            )
        coco_b /= n_img
        ref_file_b = sum(len(t) for t in ref_text.values()) / n_img
        ref_b = ref_file_b * REFS_PER_IMAGE

        # ------------------------------------------------ open a 20k-image library
        big = os.path.join(work, "big.srlib")
        records = [lib.raw(next(k for k in ids if src[k] == name)) for name in PHOTOS]
        print(f"writing a {args.big}-image library (records repeated) ...", flush=True)
        w = ProposalLibrary.create(
            big, generator="classical", if_exists="overwrite", commit_every=2000
        )
        for i in range(args.big):
            w.append_record(i, records[i % len(records)])
        w.finish(vacuum=False)
        big_bytes = os.path.getsize(big)
        opens = []
        for _ in range(5):
            out = subprocess.run(
                [sys.executable, "-c", open_probe(big)], capture_output=True, text=True, check=True
            ).stdout.split()
            opens.append([float(v) for v in out])
        open_s = statistics.median(o[0] for o in opens)
        open_peak = statistics.median(o[1] for o in opens)
        open_rss = statistics.median(o[2] for o in opens)
        first_read = statistics.median(o[4] for o in opens)
        first_decode = statistics.median(o[5] for o in opens)
        assert all(int(o[3]) == args.big for o in opens)
        tracemalloc.start()
        t = time.perf_counter()
        ProposalLibrary.open(big)
        warm_open = time.perf_counter() - t
        tracemalloc.stop()

        # ------------------------------------------------ report
        masks = statistics.median(len(p) for p in props.values())
        print()
        print(f"{'measure (medians)':58s} {'library':>12s} {'reference':>12s} {'ratio':>8s}")
        print("-" * 94)
        rows = [
            (
                "random access + resize 480x480, img/s, 1 process",
                ours_1,
                ref_1,
                f"{ours_1 / ref_1:.0f}x",
            ),
            (
                "  same, uncompressed records (compression='none'), img/s",
                raw_1,
                ref_1,
                f"{raw_1 / ref_1:.0f}x",
            ),
            (
                "  same, library decoded to dense bool, img/s",
                dense_1,
                ref_1,
                f"{dense_1 / ref_1:.0f}x",
            ),
            (
                "random access + resize, img/s, DataLoader 4 workers",
                ours_4,
                ref_4,
                f"{ours_4 / ref_4:.0f}x",
            ),
        ]
        for label, a, b, r in rows:
            print(f"{label:58s} {a:12.1f} {b:12.2f} {r:>8s}")
        print(
            f"{'bytes per image on disk (library vs reference JSON)':58s} {ours_b:12,.0f} "
            f"{ref_b:12,.0f} {ref_b / ours_b:7.1f}x"
        )
        print(
            f"{'  pycocotools compressed-RLE JSON, bytes per image':58s} {'':12s} "
            f"{coco_b:12,.0f} {coco_b / ours_b:7.2f}x"
        )
        print(
            f"{'  library, uncompressed records, bytes per image':58s} {ours_nb:12,.0f} "
            f"{'':12s} {coco_b / ours_nb:7.2f}x"
        )
        print(f"{'  reference, one referent file':58s} {'':12s} {ref_file_b:12,.0f}")
        print(f"{'raw record read (SQLite + CRC32), us':58s} {1e6 / read_1:12.1f}")
        print(
            f"{f'open {args.big}-image library ({big_bytes / 2**30:.2f} GiB), ms':58s} "
            f"{open_s * 1e3:12.2f}   (fresh process; {warm_open * 1e3:.2f} ms warm)"
        )
        print(f"{'  Python memory allocated by open (peak), KiB':58s} {open_peak / 1024:12.1f}")
        print(f"{'  RSS growth during open, KiB':58s} {open_rss:12.0f}")
        print(f"{'  first random record read after open, ms':58s} {first_read * 1e3:12.2f}")
        print(
            f"{'  first decode in a process (loads numba kernels), ms':58s} "
            f"{first_decode * 1e3:12.2f}"
        )
        print(
            f"\n{masks:.0f} masks per image (median); reference per-sample timings: {n2} "
            f"samples; library: {n1}. Ratios are library / reference for speed and "
            "reference / library for bytes."
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
