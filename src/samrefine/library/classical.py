"""Classical (non-SAM) class-agnostic proposals: a contrast hierarchy of image regions.

Not Segment Anything, and no learned objectness. The default method (``"hierarchy"``) mimics the
properties of SAM's "segment everything" output that SemiRES relies on: whole objects and their
parts as nested masks, boundaries on the image's edges, and *no mask that merges an object with
its background*. It over-segments the image along its colour edges (watershed of the Lab
gradient), merges neighbouring regions greedily, weakest boundary first (the classic
region-merging / ultrametric-contour hierarchy), and keeps a region of that tree only when

* it is **coherent**: no boundary inside it is stronger than ``max_contrast`` (so a region never
  spans a clear object contour), and
* it is **stable**: it survives a wide range of merge thresholds (its outer boundary is at least
  ``min_persistence`` times stronger than the strongest boundary inside it), the analogue of
  SAM's stability score,

then removes near-duplicates (IoU above ``dedup_iou``), preferring the more coherent region.
Limits: objects of one colour that touch, with no visible edge between them, come out as one
region; structures one or two pixels wide (at the working size) get no region of their own;
there is no learned objectness, so a region is "an object" only by its edges.

The older ``"multiscale"`` method (Felzenszwalb at several scales plus SLIC, majority-smoothed)
is kept for existing callers; it is selected by passing any of its parameters (``scales``,
``slic_segments``, ``smooth_radius``) or ``method="multiscale"``. Its coarse scales merge objects
with their surroundings, so CPI / CPI-U, which take the union of every proposal that covers most
of the pseudo-label, grow far beyond the object with it.

Needs ``scikit-image`` and ``scipy`` (``pip install samrefine[classical]``).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import rle as _rle
from ..proposals import Proposals

__all__ = ["classical_proposals", "resolve_method"]

#: Boundary strength (Lab gradient units) below which differences count as image noise; it
#: keeps the persistence ratio finite for regions with no inner boundary.
NOISE_FLOOR = 2.0

_MULTISCALE_DEFAULTS = {"scales": (64, 256, 1024, 4096), "slic_segments": (64,), "smooth_radius": 2}


def _smooth_labels(labels: np.ndarray, radius: int) -> np.ndarray:
    """Majority filter of a label map: each pixel takes the most frequent label in a box."""
    if radius <= 0:
        return labels
    from scipy import ndimage

    n = int(labels.max()) + 1
    best = np.full(labels.shape, -1.0)
    out = labels.copy()
    size = 2 * radius + 1
    for k in range(n):
        m = labels == k
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        y0, y1 = max(ys.min() - size, 0), min(ys.max() + size + 1, labels.shape[0])
        x0, x1 = max(xs.min() - size, 0), min(xs.max() + size + 1, labels.shape[1])
        vote = ndimage.uniform_filter(m[y0:y1, x0:x1].astype(np.float32), size=size)
        sub_best = best[y0:y1, x0:x1]
        win = vote > sub_best
        sub_best[win] = vote[win]
        out[y0:y1, x0:x1][win] = k
    return out


def resolve_method(
    method: str | None = None, scales=None, slic_segments=None, smooth_radius=None
) -> str:
    """The method :func:`classical_proposals` runs for these arguments.

    ``method=None`` means ``"hierarchy"`` unless a ``"multiscale"``-only parameter (``scales``,
    ``slic_segments``, ``smooth_radius``) is given, which keeps older calls working unchanged.
    """
    legacy = [
        k
        for k, v in (
            ("scales", scales),
            ("slic_segments", slic_segments),
            ("smooth_radius", smooth_radius),
        )
        if v is not None
    ]
    if method is None:
        return "multiscale" if legacy else "hierarchy"
    if method not in ("hierarchy", "multiscale"):
        raise ValueError(f"method must be 'hierarchy' or 'multiscale', got {method!r}")
    if method == "hierarchy" and legacy:
        raise ValueError(
            f"{', '.join(legacy)} only apply to method='multiscale'; drop them or "
            "pass method='multiscale'"
        )
    return method


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: object) -> bool:
    return _is_int(v) or (isinstance(v, (float, np.floating)) and bool(np.isfinite(v)))


def check_classical_params(**params: Any) -> None:
    """Refuse parameter values that would silently give no or wrong masks (``max_masks=-5``
    used to build a library of empty entries; ``"abc"`` failed every image one by one).

    Takes any keyword arguments of :func:`classical_proposals` (``image`` excluded); checks the
    ones given. Raises ValueError naming the parameter and what it expects.
    """

    def bad(name: str, want: str) -> None:
        raise ValueError(f"classical generator: {name}={params[name]!r}; expected {want}")

    def has(name: str) -> bool:
        return params.get(name) is not None

    if "max_masks" in params and (not _is_int(params["max_masks"]) or params["max_masks"] < 1):
        bad("max_masks", "an int >= 1")
    scales, slic_segments = params.get("scales"), params.get("slic_segments")
    if has("scales") and (
        not isinstance(scales, (list, tuple)) or not all(_is_number(v) and v > 0 for v in scales)
    ):
        bad("scales", "a list of positive numbers")
    if has("slic_segments") and (
        not isinstance(slic_segments, (list, tuple))
        or not all(_is_int(v) and v >= 1 for v in slic_segments)
    ):
        bad("slic_segments", "a list of ints >= 1")
    if has("scales") and has("slic_segments") and not scales and not slic_segments:
        bad("scales", "at least one label map (scales or slic_segments)")
    for name, lo, hi, want in (
        ("min_area_frac", 0, 1, "a number in [0, 1)"),
        ("significant_area_frac", 0, 1, "a number in [0, 1)"),
    ):
        v: Any = params.get(name)
        if name in params and (not _is_number(v) or not lo <= v < hi):
            bad(name, want)
    if has("smooth_radius") and (
        not _is_int(params["smooth_radius"]) or params["smooth_radius"] < 0
    ):
        bad("smooth_radius", "an int >= 0")
    if "dedup_iou" in params and (
        not _is_number(params["dedup_iou"]) or not 0 < params["dedup_iou"] <= 1
    ):
        bad("dedup_iou", "a number in (0, 1]")
    for name in ("max_contrast", "min_persistence", "edge_sigma"):
        if name in params and (not _is_number(params[name]) or params[name] <= 0):
            bad(name, "a positive number")
    if "work_size" in params and (not _is_int(params["work_size"]) or params["work_size"] < 16):
        bad("work_size", "an int >= 16")
    if "seed" in params and not _is_int(params["seed"]):
        bad("seed", "an int")


def classical_proposals(
    image: np.ndarray,
    scales: Sequence[float] | None = None,
    slic_segments: Sequence[int] | None = None,
    min_area_frac: float = 0.0005,
    max_masks: int = 300,
    smooth_radius: int | None = None,
    dedup_iou: float = 0.9,
    seed: int = 0,
    *,
    method: str | None = None,
    max_contrast: float = 8.0,
    min_persistence: float = 2.0,
    edge_sigma: float = 0.8,
    significant_area_frac: float = 0.005,
    work_size: int = 256,
) -> Proposals:
    """Class-agnostic region proposals of an RGB image, without SAM (see the module notes).

    Parameters
    ----------
    image : np.ndarray, (H, W, 3) uint8
        RGB image.
    scales, slic_segments, smooth_radius
        ``"multiscale"`` only: Felzenszwalb ``scale`` values (default ``(64, 256, 1024,
        4096)``), SLIC superpixel counts (default ``(64,)``) and the majority-filter radius in
        pixels (default 2). Giving any of them selects ``"multiscale"`` when ``method`` is None.
    min_area_frac : float
        Regions smaller than this share of the image are dropped.
    max_masks : int
        Keep at most this many masks (``"hierarchy"``: most coherent first;
        ``"multiscale"``: largest-first within each scale, scales interleaved).
    dedup_iou : float
        Drop a region whose IoU with an already kept region exceeds this.
    seed : int
        Unused (both methods are deterministic); kept for compatibility.
    method : {None, "hierarchy", "multiscale"}
        None: ``"hierarchy"`` unless a multiscale-only parameter is given.
    max_contrast : float
        ``"hierarchy"``: a region is kept only if no boundary merged inside it is stronger than
        this (mean Lab gradient magnitude along the boundary, less the weaker side's own texture;
        an edge between two clearly different colours is about 20-40).
    min_persistence : float
        ``"hierarchy"``: a region is kept only if ``(outer + f) / (inner + f) >=`` this, where
        ``outer`` is the boundary strength at which it merges into a larger region, ``inner``
        the strongest boundary inside it, and ``f`` = :data:`NOISE_FLOOR`.
    edge_sigma : float
        ``"hierarchy"``: Gaussian smoothing (pixels at the working size) before the gradient.
    significant_area_frac : float
        ``"hierarchy"``: merging a region smaller than this share of the image (edge pixels,
        noise specks) does not count as crossing a boundary.
    work_size : int
        ``"hierarchy"``: the tree is built at most this many pixels on the long side (like SAM's
        fixed input size); the regions are then re-fitted to the full-size image's edges.

    Returns
    -------
    Proposals
        At the image's size. ``meta["predicted_iou"]`` is 1.0 (there is no IoU predictor).
        ``"hierarchy"`` adds ``meta["contrast"]`` (strongest inner boundary) and
        ``meta["persistence"]`` (the ratio above); ``"multiscale"`` adds ``meta["scale"]``, the
        index of the label map each region came from.
    """
    check_classical_params(
        scales=scales,
        slic_segments=slic_segments,
        min_area_frac=min_area_frac,
        max_masks=max_masks,
        smooth_radius=smooth_radius,
        dedup_iou=dedup_iou,
        seed=seed,
        max_contrast=max_contrast,
        min_persistence=min_persistence,
        edge_sigma=edge_sigma,
        significant_area_frac=significant_area_frac,
        work_size=work_size,
    )
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    if not 0.0 < dedup_iou <= 1.0:
        raise ValueError(f"dedup_iou must be in (0, 1], got {dedup_iou}")
    if max_masks < 0:
        raise ValueError(f"max_masks must be >= 0, got {max_masks}")
    method = resolve_method(method, scales, slic_segments, smooth_radius)
    if method == "multiscale":
        d = _MULTISCALE_DEFAULTS
        return _multiscale(
            image,
            d["scales"] if scales is None else scales,
            d["slic_segments"] if slic_segments is None else slic_segments,
            min_area_frac,
            max_masks,
            d["smooth_radius"] if smooth_radius is None else smooth_radius,
            dedup_iou,
        )
    if min_persistence < 1.0 or max_contrast < 0 or edge_sigma < 0 or work_size < 16:
        raise ValueError(
            "need min_persistence >= 1, max_contrast >= 0, edge_sigma >= 0 and "
            f"work_size >= 16, got {min_persistence}, {max_contrast}, "
            f"{edge_sigma}, {work_size}"
        )
    return _hierarchy(
        image,
        min_area_frac,
        max_masks,
        dedup_iou,
        max_contrast,
        min_persistence,
        edge_sigma,
        significant_area_frac,
        work_size,
    )


# -------------------------------------------------------------------------- hierarchy


def _edge_strength(image: np.ndarray, sigma: float):
    """Colour gradient of the smoothed CIELAB image: magnitude, and its across-column and
    across-row parts, each (H, W) float64 (Sobel / 4, so a sharp step of height d in one channel
    reads about d)."""
    from scipy import ndimage
    from skimage.color import rgb2lab

    lab = rgb2lab(image)
    if sigma > 0:
        lab = ndimage.gaussian_filter(lab, (sigma, sigma, 0))
    gx2 = np.zeros(image.shape[:2])
    gy2 = np.zeros(image.shape[:2])
    for c in range(3):
        gx2 += ndimage.sobel(lab[..., c], 1) ** 2
        gy2 += ndimage.sobel(lab[..., c], 0) ** 2
    return np.sqrt(gx2 + gy2) / 4.0, np.sqrt(gx2) / 4.0, np.sqrt(gy2) / 4.0


def _boundary_pairs(leaves: np.ndarray, gx: np.ndarray, gy: np.ndarray):
    """Every pair of 4-adjacent pixels in different leaves: the two labels and the colour
    change across the pair (the gradient component along the pair's direction, the larger of
    the two pixels'), so a boundary running along a slope is not mistaken for an edge."""
    a = np.concatenate([leaves[:, :-1].ravel(), leaves[:-1, :].ravel()])
    b = np.concatenate([leaves[:, 1:].ravel(), leaves[1:, :].ravel()])
    s = np.concatenate(
        [np.maximum(gx[:, :-1], gx[:, 1:]).ravel(), np.maximum(gy[:-1, :], gy[1:, :]).ravel()]
    )
    cut = a != b
    return a[cut], b[cut], s[cut]


def _leaf_graph(leaves: np.ndarray, gx: np.ndarray, gy: np.ndarray):
    """Adjacent leaf pairs (a < b) with the sum and count of boundary strengths between them."""
    n = int(leaves.max()) + 1
    a, b, s = _boundary_pairs(leaves, gx, gy)
    key = np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)
    pairs, inv = np.unique(key, return_inverse=True)
    return pairs // n, pairs % n, np.bincount(inv, weights=s), np.bincount(inv).astype(float)


def _dissolve_ridge_leaves(
    leaves: np.ndarray, g: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> np.ndarray:
    """Give the pixels of basins that lie on an edge's crest to the regions either side.

    Noise makes local minima along a blurred edge; their basins are bands of edge pixels that
    belong to neither side. A leaf is such a band when even its lowest gradient is at least half
    its mean boundary strength and that boundary is well above the image's noise (3x the median
    gradient); its pixels are re-flooded (watershed) from the other leaves.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    n = int(leaves.max()) + 1
    if n < 2:
        return leaves
    a, b, s = _boundary_pairs(leaves, gx, gy)
    ab = np.concatenate([a, b])
    bnd = np.bincount(ab, weights=np.concatenate([s, s]), minlength=n) / np.maximum(
        np.bincount(ab, minlength=n), 1
    )
    low = np.asarray(ndimage.minimum(g, leaves + 1, index=np.arange(1, n + 1)))
    ridge = (low >= 0.5 * bnd) & (bnd >= 3.0 * np.median(g))
    if not ridge.any() or ridge.all():
        return leaves
    keep = np.flatnonzero(~ridge)
    relabel = np.zeros(n, np.int64)
    relabel[keep] = np.arange(1, keep.size + 1)
    return watershed(g, relabel[leaves]) - 1


def _merge_tree(n, ea, eb, ssum, cnt, area, texture, sig_area):
    """Greedy region merging, weakest boundary first.

    The cost of merging two adjacent regions is their mean boundary strength less the smoother
    region's texture (area-weighted mean of its leaves' median gradient), Felzenszwalb's
    "minimum internal difference". Returns, for the ``2n - 1`` tree nodes (leaves first):
    ``children`` (n - 1, 2), node ``area``, ``inner`` (strongest merge inside the node, merges
    with regions under ``sig_area`` pixels not counted, so it never decreases towards the root)
    and ``outer`` (the parent's ``inner``: the level at which the node stops existing on its
    own; inf for the root).
    """
    ar = [float(x) for x in area]
    tx = [float(x) for x in texture * area]
    nbr: list[dict | None] = [{} for _ in range(n)]
    heap = []
    for a, b, s, c in zip(ea.tolist(), eb.tolist(), ssum.tolist(), cnt.tolist()):
        e = [s, c]
        nbr[a][b] = e
        nbr[b][a] = e
        heap.append((s / c - min(tx[a] / ar[a], tx[b] / ar[b]), a, b))
    heapq.heapify(heap)
    alive = [True] * n
    inner = [0.0] * n
    children = []
    outer = [np.inf] * n
    while heap:
        cost, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        new = len(alive)
        alive[a] = alive[b] = False
        alive.append(True)
        lev = max(cost, 0.0) if min(ar[a], ar[b]) >= sig_area else 0.0
        inner.append(max(lev, inner[a], inner[b]))
        outer[a] = outer[b] = inner[new]  # absorbing a speck does not end a region
        outer.append(np.inf)
        children.append((a, b))
        ar.append(ar[a] + ar[b])
        tx.append(tx[a] + tx[b])
        merged: dict = {}
        for x in (a, b):
            for y, e in nbr[x].items():
                if y == a or y == b:
                    continue
                if y in merged:
                    merged[y] = [merged[y][0] + e[0], merged[y][1] + e[1]]
                else:
                    merged[y] = e
                del nbr[y][x]
        nbr[a] = nbr[b] = None
        nbr.append(merged)
        t_new = tx[new] / ar[new]
        for y, e in merged.items():
            nbr[y][new] = e
            heapq.heappush(heap, (e[0] / e[1] - min(t_new, tx[y] / ar[y]), new, y))
    # the leaf graph of an image is connected, so this is one tree
    return (
        np.array(children, np.int64).reshape(-1, 2),
        np.array(ar),
        np.array(inner),
        np.array(outer),
    )


def _leaf_spans(n: int, children: np.ndarray):
    """Order the leaves so every node's leaves are one contiguous span; returns the order (n,)
    and each node's ``start`` and ``count`` (2n - 1,)."""
    m = n + len(children)
    count = np.ones(m, np.int64)
    for k, (a, b) in enumerate(children.tolist()):
        count[n + k] = count[a] + count[b]
    start = np.zeros(m, np.int64)
    for k in range(len(children) - 1, -1, -1):
        a, b = children[k]
        start[a] = start[n + k]
        start[b] = start[n + k] + count[a]
    order = np.empty(n, np.int64)
    order[start[:n]] = np.arange(n)
    return order, start, count


def _refit_leaves(leaves: np.ndarray, image: np.ndarray, sigma: float) -> np.ndarray:
    """Upsample a working-size leaf map to the image's size, re-drawing each boundary on the
    full-size image's gradient (watershed from the leaves' upsampled interiors)."""
    from skimage.segmentation import watershed

    h, w = image.shape[:2]
    rows = _rle.nearest_index(leaves.shape[0], h)
    cols = _rle.nearest_index(leaves.shape[1], w)
    up = leaves[rows][:, cols] + 1
    edge = np.zeros(up.shape, bool)
    edge[:, 1:] |= up[:, 1:] != up[:, :-1]
    edge[:, :-1] |= up[:, 1:] != up[:, :-1]
    edge[1:] |= up[1:] != up[:-1]
    edge[:-1] |= up[1:] != up[:-1]
    markers = np.where(edge, 0, up)
    scale = max(h, w) / max(leaves.shape)
    return watershed(_edge_strength(image, sigma * scale)[0], markers) - 1


def _hierarchy(
    image,
    min_area_frac,
    max_masks,
    dedup_iou,
    max_contrast,
    min_persistence,
    edge_sigma,
    significant_area_frac,
    work_size,
) -> Proposals:
    from scipy import ndimage
    from skimage.segmentation import watershed
    from skimage.transform import resize

    h, w = image.shape[:2]
    small = image
    if max(h, w) > work_size:
        f = work_size / max(h, w)
        small = (
            resize(
                image,
                (max(1, round(h * f)), max(1, round(w * f))),
                order=1,
                anti_aliasing=True,
                preserve_range=True,
            )
            .round()
            .astype(np.uint8)
        )
    g, gx, gy = _edge_strength(small, edge_sigma)
    leaves = watershed(g) - 1  # one leaf per local minimum of the gradient
    leaves = _dissolve_ridge_leaves(leaves, g, gx, gy)
    n = int(leaves.max()) + 1
    if n < 2:
        return _empty_hierarchy((h, w))
    hs, ws = small.shape[:2]
    leaf_area = np.bincount(leaves.ravel(), minlength=n).astype(float)
    texture = np.asarray(ndimage.median(g, leaves + 1, index=np.arange(1, n + 1)))
    ea, eb, ssum, cnt = _leaf_graph(leaves, gx, gy)
    children, area, inner, outer = _merge_tree(
        n, ea, eb, ssum, cnt, leaf_area, texture, significant_area_frac * hs * ws
    )
    persistence = (outer + NOISE_FLOOR) / (inner + NOISE_FLOOR)
    ok = (
        (inner <= max_contrast)
        & (persistence >= min_persistence)
        & (area >= max(1.0, min_area_frac * hs * ws))
        & (area < hs * ws)
    )
    cand = np.flatnonzero(ok)
    cand = cand[np.lexsort((-persistence[cand], inner[cand]))]  # most coherent first
    if cand.size == 0 or max_masks == 0:
        return _empty_hierarchy((h, w))
    order, start, count = _leaf_spans(n, children)
    member = np.zeros((cand.size, n), bool)
    for i, k in enumerate(cand.tolist()):
        member[i, order[start[k] : start[k] + count[k]]] = True
    # near-duplicate removal in leaf space (exact IoU: every region is a union of leaves)
    mf = member.astype(np.float64)
    inter = mf @ (mf * leaf_area).T
    iou = inter / (area[cand][:, None] + area[cand][None, :] - inter)
    kept: list[int] = []
    for i in range(cand.size):
        if kept and iou[i, kept].max() > dedup_iou:
            continue
        kept.append(i)
        if len(kept) == max_masks:
            break
    sel = np.array(kept)
    if small is not image:
        leaves = _refit_leaves(leaves, image, edge_sigma)
    props = Proposals.from_dense(member[sel][:, leaves])
    k = cand[sel]
    props.meta = {
        "predicted_iou": np.ones(len(props)),
        "contrast": inner[k],
        "persistence": persistence[k],
    }
    return props


def _empty_hierarchy(size) -> Proposals:
    props = Proposals.empty(size)
    props.meta = {"predicted_iou": np.zeros(0), "contrast": np.zeros(0), "persistence": np.zeros(0)}
    return props


# ------------------------------------------------------------------------- multiscale


def _multiscale(
    image, scales, slic_segments, min_area_frac, max_masks, smooth_radius, dedup_iou
) -> Proposals:
    """Felzenszwalb at several scales plus SLIC, majority-smoothed, interleaved and capped."""
    from skimage.segmentation import felzenszwalb, slic

    h, w = image.shape[:2]
    maps = [felzenszwalb(image, scale=s, sigma=0.8, min_size=max(16, int(s / 4))) for s in scales]
    maps += [slic(image, n_segments=n, compactness=10, start_label=0) for n in slic_segments]
    min_area = max(1, int(min_area_frac * h * w))
    per_scale = []
    for i, lab in enumerate(maps):
        lab = _smooth_labels(lab.astype(np.int64), smooth_radius)
        s, ln, off = _rle.encode_labels(lab)
        p = Proposals(s, ln, off, (h, w), validate=False)
        area = p.area
        keep = np.flatnonzero((area >= min_area) & (area < h * w))
        keep = keep[np.argsort(-area[keep], kind="stable")]
        per_scale.append((p, keep, i))
    # interleave scales so a cap keeps every scale represented
    picked: list[tuple[int, int]] = []
    pos = [0] * len(per_scale)
    while len(picked) < max_masks and any(
        pos[j] < len(per_scale[j][1]) for j in range(len(per_scale))
    ):
        for j, (_, keep, _) in enumerate(per_scale):
            if pos[j] < len(keep) and len(picked) < max_masks:
                picked.append((j, keep[pos[j]]))
                pos[j] += 1
    parts = [per_scale[j][0][np.array([k])] for j, k in picked]
    if not parts:
        return Proposals.empty((h, w))
    starts = np.concatenate([q.starts for q in parts])
    lengths = np.concatenate([q.lengths for q in parts])
    off = np.concatenate([[0], np.cumsum([q.starts.size for q in parts])]).astype(np.int64)
    scale_idx = np.array([per_scale[j][2] for j, _ in picked], np.int64)
    props = Proposals(starts, lengths, off, (h, w), validate=False)
    if dedup_iou < 1.0 and len(props) > 1:
        props, scale_idx = _dedup(props, scale_idx, dedup_iou)
    props.meta = {"predicted_iou": np.ones(len(props)), "scale": scale_idx}
    return props


def _dedup(props: Proposals, scale_idx: np.ndarray, thresh: float):
    from ..match import refine

    dense = props.to_dense()
    keep: list[int] = []
    for k in range(len(props)):
        if keep:
            r = refine(dense[k], props[np.array(keep)], "iom", iom_thresh=thresh)
            if bool(r.matched[0]):
                continue
        keep.append(k)
    idx = np.array(keep)
    return props[idx], scale_idx[idx]
