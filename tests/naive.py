"""Plain numpy references written from the paper's equations (SemiRES, Algorithm 1).

Dense masks, Python loops over proposals, no shared code with samrefine's kernels.
"""

import numpy as np

EPS = 1e-9


def scores(pseudo: np.ndarray, props: np.ndarray):
    """pseudo (H, W) bool, props (N, H, W) bool -> inter, iou, s1, s2 (each (N,))."""
    p = pseudo.astype(bool)
    inter, iou, s1, s2 = [], [], [], []
    for s in props.astype(bool):
        i = int(np.logical_and(p, s).sum())
        u = int(np.logical_or(p, s).sum())
        inter.append(i)
        iou.append(i / u if u > 0 else 0.0)  # Eq. 6; 0/0 -> 0
        s1.append(i / (p.sum() + EPS))  # Eq. 7
        s2.append(i / s.sum() if s.sum() > 0 else 0.0)  # Eq. 8; 0/0 -> 0
    return (np.array(inter, np.int64), np.array(iou), np.array(s1), np.array(s2))


def iom(pseudo, props, thresh=0.5):
    """Algorithm 1 lines 4-9: returns (refined mask, matched, chosen index or -1)."""
    _, iou, _, _ = scores(pseudo, props)
    top, chosen = 0.0, -1
    for k, s in enumerate(iou):
        if s > thresh and s > top:
            top, chosen = s, k
    if chosen < 0:
        return pseudo.astype(bool), False, -1
    return props[chosen].astype(bool), True, chosen


def cpi(pseudo, props, under=0.7, over=0.7):
    """Algorithm 1 lines 10-19: returns (refined mask, matched, selected indices)."""
    _, _, s1, s2 = scores(pseudo, props)
    out = np.zeros(pseudo.shape, bool)
    sel = []
    for k in range(len(props)):
        if (under is not None and s1[k] > under) or (over is not None and s2[k] > over):
            out |= props[k].astype(bool)
            sel.append(k)
    if not sel:
        return pseudo.astype(bool), False, sel
    return out, True, sel


def torch_nearest(dense: np.ndarray, size) -> np.ndarray:
    """The reference code's resize: torch nearest interpolation of dense masks (N, H, W)."""
    import torch

    t = torch.from_numpy(dense.astype(np.float32))[None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="nearest")[0].numpy() > 0.5
