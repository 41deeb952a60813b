"""Numba CPU kernels for IOM / CPI matching on runs (private; see :mod:`samrefine.match`).

Per image: one column-major prefix sum ``C`` of the pseudo-label (``C[i]`` = foreground pixels
before flat index ``i``), then ``|P n S| = sum over runs (C[s + l] - C[s])`` for every proposal:
``O(H W + runs)``, no proposal decoded. Images run in parallel (``prange``).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._config import NJIT, NJIT_PARALLEL

IOM, CPI = 0, 1


@nb.njit(**NJIT)
def _refine_one(b, pseudo, starts, lengths, run_offsets, mask_offsets, area, mode, t_iom,
                use_under, under, use_over, over, eps, write_masks,
                inter, iou, s1, s2, selected, chosen, matched, parea, out):
    _, h, w = pseudo.shape
    hw = h * w
    # column-major prefix sum of the pseudo-label
    pref = np.empty(hw + 1, np.int32)
    acc = np.int32(0)
    pref[0] = 0
    i = 1
    for x in range(w):
        for y in range(h):
            acc += pseudo[b, y, x]
            pref[i] = acc
            i += 1
    parea[b] = acc
    p_area = np.float64(acc)
    best = 0.0
    pick = -1
    any_sel = False
    for m in range(mask_offsets[b], mask_offsets[b + 1]):
        tot = np.int64(0)
        for r in range(run_offsets[m], run_offsets[m + 1]):
            s = starts[r]
            tot += pref[s + lengths[r]] - pref[s]
        inter[m] = tot
        a = np.float64(area[m])
        t = np.float64(tot)
        union = p_area + a - t
        v_iou = t / union if union > 0 else 0.0
        v_s1 = t / (p_area + eps)
        v_s2 = t / a if a > 0 else 0.0
        iou[m] = v_iou
        s1[m] = v_s1
        s2[m] = v_s2
        if mode == IOM:
            if v_iou > t_iom and v_iou > best:
                best = v_iou
                pick = m
        else:
            sel = (use_under and v_s1 > under) or (use_over and v_s2 > over)
            selected[m] = sel
            any_sel = any_sel or sel
    if mode == IOM:
        chosen[b] = pick
        if pick >= 0:
            selected[pick] = True
            any_sel = True
    matched[b] = any_sel
    if not write_masks:
        return
    if any_sel:
        out[b] = 0
        for m in range(mask_offsets[b], mask_offsets[b + 1]):
            if not selected[m]:
                continue
            for r in range(run_offsets[m], run_offsets[m + 1]):
                j = np.int64(starts[r])
                end = j + lengths[r]
                while j < end:
                    x = j // h
                    y0 = j - x * h
                    y1 = min(end - x * h, h)
                    for y in range(y0, y1):
                        out[b, y, x] = 1
                    j = x * h + y1
    else:
        out[b] = pseudo[b]


@nb.njit(**NJIT)
def _refine_serial(*args):
    for b in range(args[0].shape[0]):
        _refine_one(b, *args)


@nb.njit(**NJIT_PARALLEL)
def _refine_parallel(*args):
    for b in nb.prange(args[0].shape[0]):
        _refine_one(b, *args)


def refine_batch(pseudo_u8, batch, mode, t_iom, under, over, eps, write_masks=True):
    """Run IOM (``mode=0``) or CPI (``mode=1``) on ``pseudo_u8`` ``(B, H, W)`` uint8 {0, 1}.

    ``batch`` is a host ``ProposalBatch``. ``under``/``over`` are floats or None (disabled).
    Returns a dict of numpy arrays: inter (M,) int64, iou/s1/s2 (M,) float64, selected (M,)
    bool, chosen (B,) int64 (IOM pick, -1 none), matched (B,) bool, pseudo_area (B,) int64, masks (B, H, W) uint8.
    """
    n_img, h, w = pseudo_u8.shape
    m = int(batch.mask_offsets[-1])
    inter = np.empty(m, np.int64)
    iou = np.empty(m, np.float64)
    s1 = np.empty(m, np.float64)
    s2 = np.empty(m, np.float64)
    selected = np.zeros(m, np.bool_)
    chosen = np.full(n_img, -1, np.int64)
    matched = np.zeros(n_img, np.bool_)
    parea = np.zeros(n_img, np.int64)
    out = np.empty((n_img, h, w) if write_masks else (0, 1, 1), np.uint8)
    kernel = _refine_parallel if n_img > 1 and nb.get_num_threads() > 1 else _refine_serial
    kernel(pseudo_u8, batch.starts, batch.lengths, batch.run_offsets, batch.mask_offsets,
                  batch.area, mode, float(t_iom), under is not None,
                  float(under if under is not None else 0.0), over is not None,
                  float(over if over is not None else 0.0), float(eps), write_masks,
                  inter, iou, s1, s2, selected, chosen, matched, parea, out)
    return dict(inter=inter, iou=iou, s1=s1, s2=s2, selected=selected, chosen=chosen,
                matched=matched, pseudo_area=parea, masks=out)
