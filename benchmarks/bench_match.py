"""Benchmark: IOM / CPI matching of one pseudo-label against one image's proposals.

Inputs are realistic: proposals shaped like SAM's "segment everything" output (classical
multi-scale superpixel regions of real photographs from ``skimage.data``: nested, smooth,
100-300 per image, and one case with ~1000), pseudo-labels at 480x480 that are corrupted copies
of an object (eroded or dilated, holed, with a spurious blob).

Routes, per sample, median of many runs, one core:

- ``naive``: the SemiRES reference code path at every step: decode every proposal from the
  reference's 1-based start/length format to dense, ``interpolate(mode="nearest")`` to 480x480,
  then a Python loop over proposals with dense torch ops;
- ``naive (pre-resized)``: the same loop on proposals already dense at 480x480;
- ``pycocotools``: proposals pre-resized as compressed RLE; encode the pseudo-label,
  ``mask.iou``, then ``merge``/``decode`` the selection;
- ``samrefine numba`` and ``samrefine torch`` (CPU; CUDA when available): resized runs,
  collated once into a ``ProposalBatch`` (the batch path);
- ``single``: ``refine(pseudo, proposals)`` on the image's own ``Proposals`` (numba), the call
  most users write, and its ratio to the batch path.

Also ``Proposals.resize`` against decoding + torch nearest, the first-call JIT time, and a
warm ``import samrefine``. Run: ``python benchmarks/bench_match.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import torch

torch.set_num_threads(1)

SIZE = (480, 480)


def median_time(fn, reps: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


# ---------------------------------------------------------------- the reference code path


def to_reference_format(props) -> list[dict]:
    """Our runs -> SemiRES files: 1-based (start, length) pairs, column-major."""
    out = []
    h, w = props.size
    for k in range(len(props)):
        a, b = props.offsets[k], props.offsets[k + 1]
        pairs = np.stack([props.starts[a:b] + 1, props.lengths[a:b]], 1).reshape(-1)
        out.append({"counts": pairs.tolist(), "size": [h, w]})
    return out


def reference_decode(rec) -> np.ndarray:
    """SemiRES ``rle2mask``: zeros(H*W); set each 1-based run; reshape in Fortran order."""
    h, w = rec["size"]
    flat = np.zeros(h * w, np.uint8)
    c = rec["counts"]
    for i in range(0, len(c), 2):
        flat[c[i] - 1 : c[i] - 1 + c[i + 1]] = 1
    return flat.reshape((h, w), order="F")


def naive_load(ref_recs) -> torch.Tensor:
    dense = np.stack([reference_decode(r) for r in ref_recs])
    t = torch.from_numpy(dense)[None].float()
    return torch.nn.functional.interpolate(t, size=SIZE, mode="nearest")[0].long()


def naive_match(pseudo: torch.Tensor, props: torch.Tensor, strategy: str) -> torch.Tensor:
    """The reference loops (facts §4.5), dense torch ops per proposal."""
    if strategy == "iom":
        best, chosen, misses = 0.0, None, 0
        for s in props:
            inter = (pseudo & s).sum()
            union = (pseudo | s).sum()
            iou = (inter / union).item()
            if iou > 0.5:
                if iou > best:
                    best, chosen = iou, s
            else:
                misses += 1
        return pseudo if misses == len(props) else chosen
    refined = torch.zeros_like(pseudo)
    misses = 0
    p_area = pseudo.sum()
    for s in props:
        inter = (pseudo & s).sum()
        s1 = (inter / (p_area + 1e-9)).item()
        s2 = (inter / s.sum()).item()
        if s1 > 0.7 or (strategy == "cpi" and s2 > 0.7):
            refined |= s
        else:
            misses += 1
    return pseudo if misses == len(props) else refined


def coco_match(pseudo: np.ndarray, rles: list, areas: np.ndarray, strategy: str) -> np.ndarray:
    from pycocotools import mask as mu

    p_rle = mu.encode(np.asfortranarray(pseudo.astype(np.uint8)))
    iou = mu.iou(rles, [p_rle], [0])[:, 0]
    if strategy == "iom":
        k = int(np.argmax(iou))
        return mu.decode(rles[k]).astype(bool) if iou[k] > 0.5 else pseudo
    pa = float(pseudo.sum())
    inter = iou * (pa + areas) / (1.0 + iou)
    sel = inter / (pa + 1e-9) > 0.7
    if strategy == "cpi":
        sel |= inter / np.maximum(areas, 1) > 0.7
    if not sel.any():
        return pseudo
    return mu.decode(mu.merge([rles[k] for k in np.flatnonzero(sel)])).astype(bool)


# ---------------------------------------------------------------- inputs


def make_cases(quick: bool, limit: int | None = None):
    from samrefine.demo import corrupt_mask, photo, pick_object
    from samrefine.library.classical import classical_proposals

    rng = np.random.default_rng(0)
    names = (
        ("coffee", "astronaut")
        if quick
        else ("coffee", "astronaut", "chelsea", "rocket", "motorcycle")
    )
    cases = []
    for name in names[:limit]:
        props = classical_proposals(photo(name), max_masks=300)
        cases.append((name, props))
    if not quick:
        props = classical_proposals(
            photo("astronaut"),
            scales=(16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            slic_segments=(100, 200, 400),
            max_masks=1000,
            dedup_iou=1.0,
            min_area_frac=0.0001,
        )
        cases.append(("astronaut-1000", props))
    out = []
    for name, props in cases:
        small = props.resize(SIZE)
        obj = small[np.array([pick_object(small, rng)])].to_dense()[0]
        pseudo = corrupt_mask(obj, rng, strength=0.5)
        out.append((name, props, small, pseudo))
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer photos and repetitions")
    ap.add_argument(
        "--cuda-only",
        action="store_true",
        help="only the CUDA batch of 16 (benchmarks/gpu_check.sh)",
    )
    args = ap.parse_args()
    reps = 20 if args.quick else 100
    from pycocotools import mask as mu

    import samrefine as sr

    if args.cuda_only:
        if not torch.cuda.is_available():
            sys.exit("--cuda-only needs a CUDA device")
        bench_cuda(make_cases(True, limit=1))
        return

    t0 = time.perf_counter()
    cases = make_cases(args.quick)
    print(f"inputs: {len(cases)} photos, classical proposals ({time.perf_counter() - t0:.1f} s)")

    # first-call compile (or cache load) time of the kernels, in a fresh process
    code = (
        "import time, numpy as np; t=time.perf_counter(); import samrefine as sr; "
        "t1=time.perf_counter(); p=sr.Proposals.from_dense(np.ones((2,8,8),bool)); "
        "sr.refine(np.ones((8,8),bool), p.resize((9, 9)).resize((8, 8)), 'iom'); "
        "sr.refine(np.ones((8,8),bool), p, 'cpi'); "
        "print(t1-t, time.perf_counter()-t1)"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as cache:  # an empty Numba cache: a cold compile
        env = dict(os.environ, NUMBA_NUM_THREADS="1", NUMBA_CACHE_DIR=cache)
        runs = [
            [
                float(v)
                for v in subprocess.check_output(
                    [sys.executable, "-c", code], env=env, text=True
                ).split()
            ]
            for _ in range(2)
        ]
    (_, cold), (imp, warm) = runs
    print(
        f"`import samrefine`: {imp * 1e3:.0f} ms; first calls of encode/resize/match: "
        f"{cold * 1e3:.0f} ms compiling (empty cache), {warm * 1e3:.0f} ms from the cache"
    )

    rows = []
    resize_rows = []
    for name, props, small, pseudo in cases:
        n = len(props)
        ref_recs = to_reference_format(props)
        dense_small = torch.from_numpy(small.to_dense()).long()
        rles = small.to_rle()
        areas = small.area.astype(np.float64)
        batch = sr.ProposalBatch([small])
        pt = torch.from_numpy(pseudo).long()
        pseudo_t = torch.from_numpy(pseudo)
        tbatch = batch.to("cpu")
        for strategy in ("iom", "cpi-u", "cpi"):
            r = max(3, reps // 20)
            t_naive = median_time(lambda: naive_match(pt, naive_load(ref_recs), strategy), r, 1)
            t_pre = median_time(lambda: naive_match(pt, dense_small, strategy), r, 1)
            t_coco = median_time(lambda: coco_match(pseudo, rles, areas, strategy), reps)
            t_nb = median_time(lambda: sr.refine(pseudo, batch, strategy), reps * 5)
            t_one = median_time(lambda: sr.refine(pseudo, small, strategy), reps * 5)
            t_th = median_time(lambda: sr.refine(pseudo_t, tbatch, strategy, backend="torch"), reps)
            # same answer on every route
            want = naive_match(pt, dense_small, strategy).bool().numpy()
            assert np.array_equal(sr.refine(pseudo, batch, strategy).masks, want)
            assert np.array_equal(coco_match(pseudo, rles, areas, strategy), want)
            assert np.array_equal(sr.refine(pseudo, small, strategy).masks, want)
            rows.append((name, n, strategy, t_naive, t_pre, t_coco, t_nb, t_th, t_one))
        t_res = median_time(lambda: props.resize(SIZE), reps)
        dense_full = torch.from_numpy(props.to_dense())
        t_dec = median_time(
            lambda: torch.nn.functional.interpolate(
                torch.from_numpy(props.to_dense())[None].float(), size=SIZE, mode="nearest"
            ),
            max(3, reps // 10),
        )
        t_tn = median_time(
            lambda: torch.nn.functional.interpolate(
                dense_full[None].float(), size=SIZE, mode="nearest"
            ),
            max(3, reps // 10),
        )
        t_coco_dec = median_time(lambda: mu.decode(props.to_rle()), max(3, reps // 10))
        resize_rows.append((name, n, props.size, t_res, t_dec, t_tn, t_coco_dec))

    print(
        "\nMatching one 480x480 pseudo-label, per sample, median, one core "
        "(ms; ratio = naive / route)"
    )
    hdr = (
        f"{'photo':<15}{'N':>5} {'strategy':<7}{'naive':>9}{'naive-pre':>10}"
        f"{'pycoco':>9}{'numba':>8}{'torch':>8}{'x naive':>9}{'x pycoco':>9}"
        f"{'single':>8}{'single/batch':>13}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, n, strategy, a, b, c, d, e, f in rows:
        print(
            f"{name:<15}{n:>5} {strategy:<7}{a * 1e3:>9.2f}{b * 1e3:>10.2f}{c * 1e3:>9.3f}"
            f"{d * 1e3:>8.3f}{e * 1e3:>8.3f}{a / d:>9.0f}{c / d:>9.1f}{f * 1e3:>8.3f}"
            f"{f / d:>13.2f}"
        )
    med = lambda i: float(np.median([r[i] for r in rows]))  # noqa: E731
    print(
        f"{'median':<28}{med(3) * 1e3:>9.2f}{med(4) * 1e3:>10.2f}{med(5) * 1e3:>9.3f}"
        f"{med(6) * 1e3:>8.3f}{med(7) * 1e3:>8.3f}{med(3) / med(6):>9.0f}"
        f"{med(5) / med(6):>9.1f}{med(8) * 1e3:>8.3f}{med(8) / med(6):>13.2f}"
    )

    print("\nResizing one image's proposals to 480x480, median, one core (ms)")
    hdr = (
        f"{'photo':<15}{'N':>5} {'from':<10}{'samrefine':>10}{'decode+torch':>13}"
        f"{'torch only':>11}{'coco decode':>12}{'x dec+torch':>12}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, n, (h, w), a, b, c, d in resize_rows:
        print(
            f"{name:<15}{n:>5} {f'{h}x{w}':<10}{a * 1e3:>10.3f}{b * 1e3:>13.2f}"
            f"{c * 1e3:>11.2f}{d * 1e3:>12.2f}{b / a:>12.0f}"
        )

    if torch.cuda.is_available():
        bench_cuda(cases)


def bench_cuda(cases) -> None:
    """A batch of 16 on CUDA: median ms per batch per strategy, and bit-identity with numba."""
    import samrefine as sr

    print(
        f"\nCUDA ({torch.cuda.get_device_name()}): a batch of 16 samples (ms per batch, "
        "median; torch.cuda.synchronize)"
    )
    name, props, small, pseudo = cases[0]
    pseudos = np.stack([pseudo] * 16)
    batch = sr.ProposalBatch([small] * 16)
    cb = batch.to("cuda")
    cp = torch.from_numpy(pseudos).cuda()
    for strategy in ("iom", "cpi-u", "cpi"):

        def run():
            sr.refine(cp, cb, strategy)
            torch.cuda.synchronize()

        t = median_time(run, 200, 10)
        a = sr.refine(pseudos, batch, strategy)
        b = sr.refine(cp, cb, strategy)
        same = np.array_equal(a.masks, b.masks.cpu().numpy()) and np.array_equal(
            a.scores.iou, b.scores.iou.cpu().numpy()
        )
        print(f"  {strategy:<6} {t * 1e3:.3f} ms  bit-identical to numba: {same}")


if __name__ == "__main__":
    main()
