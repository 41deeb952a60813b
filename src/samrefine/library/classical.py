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
