"""Demonstration data: corrupted pseudo-labels of objects in real photographs.

Used by ``samrefine demo``, ``samrefine audit --demo``, ``samrefine viz ... --demo``, the docs
and the benchmarks. Proposals come from the classical multi-scale superpixel generator (not SAM:
no checkpoint is needed); an "object" is one of the coarse regions, and its pseudo-label is that
object eroded or dilated, holed and given a spurious blob, as a noisy teacher would predict it.

Needs the ``classical`` extra (scikit-image, SciPy, Pillow): ``pip install
"samrefine[classical]"``.

Contents: :func:`photo`, :func:`corrupt_mask`, :func:`pick_object`, :func:`demo_data`,
:func:`run_demo`, :data:`PHOTOS`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from .auditing import audit
from .library.classical import classical_proposals
from .match import STRATEGIES, KernelMode, refine
from .proposals import Proposals

__all__ = ["PHOTOS", "corrupt_mask", "demo_data", "photo", "pick_object", "run_demo"]

#: Photo names accepted by :func:`photo` (all shipped by ``skimage.data``).
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
    out = (
        ndimage.binary_dilation(mask, iterations=r)
        if rng.random() < 0.5
        else ndimage.binary_erosion(mask, iterations=r)
    )
    yy, xx = np.mgrid[:h, :w]
    ys, xs = np.nonzero(mask)
    if ys.size:
        k = rng.integers(ys.size)
        out &= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 > (2 * r) ** 2  # a hole
    by, bx = rng.integers(h), rng.integers(w)
    out |= (yy - by) ** 2 + (xx - bx) ** 2 < (3 * r) ** 2  # a spurious blob
    return out


def pick_object(
    props: Proposals, rng: np.random.Generator, lo: float = 0.03, hi: float = 0.3
) -> int:
    """Index of a proposal covering between ``lo`` and ``hi`` of the image (an "object")."""
    frac = props.area / (props.size[0] * props.size[1])
    cand = np.flatnonzero((frac > lo) & (frac < hi))
    if cand.size == 0:
        cand = np.arange(len(props))
    return int(rng.choice(cand))


def _resize_rgb(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``(H, W, 3)`` uint8 image to ``hw = (h, w)`` (Pillow)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))


@functools.lru_cache(maxsize=4)
def _small_photo_proposals(name: str) -> Proposals:
    """Classical proposals of a photo downscaled to <= 320 px (cached: ~1.5 s each)."""
    img = photo(name)
    h, w = img.shape[:2]
    s = min(1.0, 320 / max(h, w))
    return classical_proposals(_resize_rgb(img, (round(h * s), round(w * s))))


def _square_photo(name: str, size: int) -> np.ndarray:
    """The photo resized (bilinear) to ``(size, size, 3)`` uint8."""
    return _resize_rgb(photo(name), (size, size))


def demo_data(
    photo: str = "coffee",
    samples: int = 16,
    size: int = 256,
    seed: int = 0,
    strength: float = 0.6,
    hold_out_gt: bool = True,
    max_area: float = 0.5,
) -> dict:
    """Pseudo-labels, proposals and ground truth on a real photo, for trying the audit.

    The photo (``skimage.data``) is downscaled to at most 320 pixels on its longer side and
    given classical multi-scale proposals (:func:`samrefine.library.classical.
    classical_proposals`, not SAM); the proposals are resized to ``size x size`` as a training
    pipeline would. Each sample's ground truth is one proposal covering 3-30% of the image
    (:func:`pick_object`) and its pseudo-label that object corrupted as a noisy teacher would
    (:func:`corrupt_mask`). With ``hold_out_gt`` the object's own proposal is removed from that
    sample's proposals, so the library does not contain the exact answer (as with SAM on real
    data). Classical regions covering more than ``max_area`` of the image are dropped: the
    coarsest superpixel scale merges most of a photo into one region that contains every
    object, which SAM's "segment everything" output does not do.

    Parameters
    ----------
    photo : str
        A name from :data:`PHOTOS`.
    samples : int
        Number of samples (objects may repeat when the photo has few).
    size : int
        Side of the square model input, pixels.
    seed : int
        Seed of the object choice and the corruption.
    strength : float
        Corruption strength (boundary shift about ``strength x size / 40`` pixels).
    hold_out_gt : bool
        Remove each sample's ground-truth proposal from its proposals.
    max_area : float in (0, 1]
        Drop classical regions larger than this share of the image.

    Returns
    -------
    dict
        ``image`` (size, size, 3) uint8; ``pseudo`` and ``gt`` (samples, size, size) bool;
        ``proposals`` list of ``samples`` :class:`samrefine.Proposals` at (size, size);
        ``library`` the photo's full :class:`samrefine.Proposals` at (size, size).
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 (pixels), got {size!r}")
    if not 0.0 < max_area <= 1.0:
        raise ValueError(f"max_area must be in (0, 1], got {max_area!r}")
    rng = np.random.default_rng(seed)
    library = _small_photo_proposals(photo).resize((size, size))
    library = library[library.area <= max_area * size * size]
    image = _square_photo(photo, size)
    dense = library.to_dense()
    objs = [pick_object(library, rng) for _ in range(samples)]
    gt = dense[objs]
    pseudo = np.stack([corrupt_mask(g, rng, strength) for g in gt])
    keep = np.ones(len(library), bool)
    props = []
    for k in objs:
        if hold_out_gt:
            keep[:] = True
            keep[k] = False
            props.append(library[keep])
        else:
            props.append(library)
    return {"image": image, "pseudo": pseudo, "gt": gt, "proposals": props, "library": library}


def run_demo(
    photo_name: str = "coffee",
    size: int = 256,
    samples: int = 16,
    seed: int = 0,
    strength: float = 0.5,
    print_fn: Callable[[str], object] = print,
) -> dict:
    """Refine teacher-like corrupted objects of a real photo with every strategy; print a table.

    Two honest scenarios, with the same pseudo-labels: the proposal library **holds** each
    object's own mask (as SAM's usually does for a whole object), and the object's mask is
    **held out** (only its parts, neighbours and groups remain). For each strategy the table
    counts, against the ground truth, positive / negative / no corrections (the paper's Fig. 6)
    and gives the mean IoU before and after, and the matching time per sample.

    Parameters
    ----------
    photo_name : str
        A name from :data:`PHOTOS`.
    size : int
        Side of the square model input, pixels.
    samples : int
        Objects per scenario.
    seed : int
        Seed of the object choice and the corruption.
    strength : float
        Corruption strength (see :func:`corrupt_mask`); 0.5 gives pseudo-labels with an IoU of
        about 0.65-0.8 with the object, like a fair teacher.
    print_fn : callable
        Where lines go.

    Returns
    -------
    dict
        ``{"holds": {strategy: stats}, "held_out": {strategy: stats}}``, stats a dict with
        ``positive``, ``negative``, ``no_correction``, ``miou_before``, ``miou_after`` and
        ``ms_per_sample``.
    """
    strategies = [n for n, st in STRATEGIES.items() if st.mode != KernelMode.NONE]
    t0 = time.perf_counter()
    _small_photo_proposals(photo_name)
    t_gen = time.perf_counter() - t0
    print_fn(
        f"photo {photo_name!r}: classical proposals (not SAM) in {t_gen:.2f} s; {samples} "
        f"objects at {size}x{size}, each given a teacher-like noisy pseudo-label (boundary "
        "shifted, a hole, a spurious blob)"
    )
    results: dict[str, dict] = {}
    for key, hold_out, title in (
        ("holds", False, "the library holds each object's own mask (as SAM's usually does)"),
        ("held_out", True, "each object's own mask held out (only parts, neighbours, groups)"),
    ):
        d = demo_data(photo_name, samples, size, seed, strength, hold_out_gt=hold_out)
        report = audit(d["pseudo"], d["proposals"], d["gt"], strategies, sweep=None, progress=False)
        print_fn(f"\n{title}:")
        print_fn(
            f"  {'strategy':<8} {'better':>7} {'worse':>6} {'no corr.':>9} {'IoU before':>11} "
            f"{'IoU after':>10} {'ms/sample':>10}"
        )
        results[key] = {}
        for strategy in strategies:
            refine(d["pseudo"], d["proposals"], strategy)  # warm-up (JIT)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                refine(d["pseudo"], d["proposals"], strategy)
                times.append((time.perf_counter() - t0) / samples)
            st = report.strategies[strategy]
            res = {
                "positive": st.positive,
                "negative": st.negative,
                "no_correction": st.no_correction,
                "miou_before": st.miou_before,
                "miou_after": st.miou_after,
                "ms_per_sample": float(np.median(times) * 1e3),
            }
            results[key][strategy] = res
            print_fn(
                f"  {strategy:<8} {st.positive:>7} {st.negative:>6} {st.no_correction:>9} "
                f"{st.miou_before:>11.3f} {st.miou_after:>10.3f} {res['ms_per_sample']:>10.3f}"
            )
    print_fn(
        "\nRefinement can only be as good as the library: it repairs a pseudo-label when some "
        "proposal (IOM) or union of proposals (CPI) matches the object, and CPI can also make a "
        "label worse. Before trusting a strategy on your data, measure it with `samrefine audit` "
        "on your teacher's pseudo-labels and a few labelled images."
    )
    return results
