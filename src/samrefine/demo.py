"""A self-contained demonstration: refine a corrupted pseudo-label on a real photograph.

Used by ``samrefine demo`` and by the benchmarks. Proposals come from the classical
multi-scale superpixel generator (not SAM: no checkpoint is needed); the "object" is one of
the coarse regions, and the pseudo-label is that object eroded, dilated, holed and given a
spurious blob, as a noisy teacher would predict it.
"""

from __future__ import annotations

import time

import numpy as np

from ._common import mask_iou

__all__ = ["corrupt_mask", "photo", "pick_object", "run_demo"]

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket", "motorcycle")


def photo(name: str) -> np.ndarray:
    """A real RGB photograph ``(H, W, 3)`` uint8 shipped by ``skimage.data``."""
    import skimage.data as d

    if name == "motorcycle":
        return d.stereo_motorcycle()[0]
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    return getattr(d, name)()


def corrupt_mask(mask: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A teacher-like noisy copy of ``mask`` ``(H, W)`` bool: eroded or dilated boundary, a
    hole, and a spurious blob elsewhere. ``strength`` scales the damage (pixels ~ size/40)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    h, w = mask.shape
    r = max(1, int(round(strength * min(h, w) / 40)))
    out = ndimage.binary_dilation(mask, iterations=r) if rng.random() < 0.5 else \
        ndimage.binary_erosion(mask, iterations=r)
    yy, xx = np.mgrid[:h, :w]
    ys, xs = np.nonzero(mask)
    if ys.size:
        k = rng.integers(ys.size)
        out &= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 > (2 * r) ** 2  # a hole
    by, bx = rng.integers(h), rng.integers(w)
    out |= (yy - by) ** 2 + (xx - bx) ** 2 < (3 * r) ** 2            # a spurious blob
    return out


def pick_object(props, rng: np.random.Generator, lo: float = 0.03, hi: float = 0.3) -> int:
    """Index of a proposal covering between ``lo`` and ``hi`` of the image (an "object")."""
    frac = props.area / (props.size[0] * props.size[1])
    cand = np.flatnonzero((frac > lo) & (frac < hi))
    if cand.size == 0:
        cand = np.arange(len(props))
    return int(rng.choice(cand))


def run_demo(photo_name: str = "coffee", size: int = 480, samples: int = 8, seed: int = 0,
             print_fn=print) -> dict:
    """Refine ``samples`` corrupted objects of a photo with every strategy; print a table.

    Returns a dict strategy -> {"matched": share, "iou_before": mean, "iou_after": mean,
    "ms_per_sample": median time}.
    """
    from . import refine
    from .library.classical import classical_proposals

    rng = np.random.default_rng(seed)
    img = photo(photo_name)
    t0 = time.perf_counter()
    props = classical_proposals(img)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    small = props.resize((size, size))
    t_resize = time.perf_counter() - t0
    dense = small.to_dense()
    objs = [pick_object(small, rng) for _ in range(samples)]
    gts = dense[objs]
    pseudo = np.stack([corrupt_mask(g, rng) for g in gts])
    print_fn(f"photo {photo_name!r} {img.shape[1]}x{img.shape[0]}: {len(props)} classical "
             f"proposals in {t_gen:.2f} s; resized to {size}x{size} on runs in "
             f"{t_resize * 1e3:.2f} ms")
    print_fn(f"{samples} corrupted pseudo-labels of proposal objects (eroded/dilated, holed, "
             "with a spurious blob)\n")
    print_fn(f"{'strategy':<8} {'matched':>8} {'IoU before':>11} {'IoU after':>10} "
             f"{'ms/sample':>10}")
    results = {}
    before = np.mean([mask_iou(p, g) for p, g in zip(pseudo, gts)])
    for strategy in ("iom", "cpi", "cpi-u", "cpi-o"):
        ref = refine(pseudo, [small] * samples, strategy)  # warm-up (JIT)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            ref = refine(pseudo, [small] * samples, strategy)
            times.append((time.perf_counter() - t0) / samples)
        after = np.mean([mask_iou(m, g) for m, g in zip(ref.masks, gts)])
        res = {"matched": float(np.mean(ref.matched)), "iou_before": float(before),
                   "iou_after": float(after), "ms_per_sample": float(np.median(times) * 1e3)}
        results[strategy] = res
        print_fn(f"{strategy:<8} {res['matched']:>8.2f} {before:>11.3f} {after:>10.3f} "
                 f"{res['ms_per_sample']:>10.3f}")
    return results
