"""Classical (non-SAM) class-agnostic proposals: multi-scale superpixel regions.

Not Segment Anything. Felzenszwalb graph segmentation at several scales (fine parts, objects,
and merged object groups) plus SLIC superpixels, each region smoothed by a majority vote over a
small disc, de-duplicated and capped. The result looks like SAM's "segment everything" output
(nested, multi-scale, smooth regions) closely enough for demos, tests and benchmarks that have
no SAM checkpoint. Needs ``scikit-image`` (``pip install samrefine[classical]``).
"""

from __future__ import annotations

import numpy as np

from .. import rle as _rle
from ..proposals import Proposals

__all__ = ["classical_proposals"]


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


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return _is_int(v) or (isinstance(v, (float, np.floating)) and np.isfinite(v))


def check_classical_params(*, scales, slic_segments, min_area_frac, max_masks, smooth_radius,
                           dedup_iou, seed) -> None:
    """Refuse parameter values that would silently give no or wrong masks (``max_masks=-5``
    used to build a library of empty entries; ``"abc"`` failed every image one by one)."""
    def bad(name, value, want):
        raise ValueError(f"classical generator: {name}={value!r}; expected {want}")

    if not _is_int(max_masks) or max_masks < 1:
        bad("max_masks", max_masks, "an int >= 1")
    if not isinstance(scales, (list, tuple)) or not all(_is_number(v) and v > 0 for v in scales):
        bad("scales", scales, "a list of positive numbers")
    if not isinstance(slic_segments, (list, tuple)) or not all(
            _is_int(v) and v >= 1 for v in slic_segments):
        bad("slic_segments", slic_segments, "a list of ints >= 1")
    if not scales and not slic_segments:
        bad("scales", scales, "at least one label map (scales or slic_segments)")
    if not _is_number(min_area_frac) or not 0 <= min_area_frac < 1:
        bad("min_area_frac", min_area_frac, "a number in [0, 1)")
    if not _is_int(smooth_radius) or smooth_radius < 0:
        bad("smooth_radius", smooth_radius, "an int >= 0")
    if not _is_number(dedup_iou) or not 0 < dedup_iou <= 1:
        bad("dedup_iou", dedup_iou, "a number in (0, 1]")
    if not _is_int(seed):
        bad("seed", seed, "an int")


def classical_proposals(image: np.ndarray, scales=(64, 256, 1024, 4096), slic_segments=(64,),
                        min_area_frac: float = 0.0005, max_masks: int = 300,
                        smooth_radius: int = 2, dedup_iou: float = 0.9,
                        seed: int = 0) -> Proposals:
    """Multi-scale superpixel proposals of an RGB image.

    Parameters
    ----------
    image : np.ndarray, (H, W, 3) uint8
    scales : sequence of float
        Felzenszwalb ``scale`` values, fine to coarse.
    slic_segments : sequence of int
        SLIC superpixel counts (one label map each).
    min_area_frac : float
        Regions smaller than this share of the image are dropped.
    max_masks : int
        Keep at most this many masks (largest-first within each scale, scales interleaved).
    smooth_radius : int
        Majority-filter radius (pixels) applied to each label map, for SAM-like smooth edges.
    dedup_iou : float
        Drop a region whose IoU with an already kept region exceeds this (same-size check).

    Returns
    -------
    Proposals
        At the image's size, with ``meta["predicted_iou"]`` set to 1.0 and ``meta["scale"]``
        the index of the label map each region came from.
    """
    from skimage.segmentation import felzenszwalb, slic

    check_classical_params(scales=scales, slic_segments=slic_segments,
                           min_area_frac=min_area_frac, max_masks=max_masks,
                           smooth_radius=smooth_radius, dedup_iou=dedup_iou, seed=seed)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    maps = [felzenszwalb(image, scale=s, sigma=0.8, min_size=max(16, int(s / 4)))
            for s in scales]
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
    while len(picked) < max_masks and any(pos[j] < len(per_scale[j][1])
                                          for j in range(len(per_scale))):
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
