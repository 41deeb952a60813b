"""Numba CPU kernels for IOM / CPI matching on runs (private; see :mod:`samrefine.match`).

Per image: per-column prefix sums of the pseudo-label, ``cum[y, x]`` = foreground pixels above
row ``y`` in column ``x`` (built row by row, so it vectorises), then for every proposal
``|P n S| = sum over its column segments (cum[y1, x] - cum[y0, x])``: ``O(H W + segments)``,
no proposal decoded. Images run in parallel (``prange``) when there are several.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numba as nb
import numpy as np

from .._config import NJIT, NJIT_PARALLEL
from ._api import KernelMode, KernelResult, Segments

IOM, CPI = int(KernelMode.IOM), int(KernelMode.CPI)


@nb.njit(**NJIT)
def _refine_one(
    b: int,
    pseudo: np.ndarray,
    seg_x: np.ndarray,
    seg_y0: np.ndarray,
    seg_y1: np.ndarray,
    seg_offsets: np.ndarray,
    mask_offsets: np.ndarray,
    area: np.ndarray,
    mode: int,
    t_iom: float,
    use_under: bool,
    under: float,
    use_over: bool,
    over: float,
    eps: float,
    inter: np.ndarray,
    iou: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    selected: np.ndarray,
    chosen: np.ndarray,
    matched: np.ndarray,
    out: np.ndarray,
) -> None:
    """Score image ``b``'s proposals and write its refined mask into ``out[b]`` (in place)."""
    _, h, w = pseudo.shape
    # per-column prefix sums, built row by row (vectorised, no transpose):
    # cum[y, x] = foreground pixels in rows [0, y) of column x
    cum = np.empty((h + 1, w), np.int32)
    cum[0, :] = 0
    for y in range(h):
        for x in range(w):
            cum[y + 1, x] = cum[y, x] + pseudo[b, y, x]
    acc = np.int64(0)
    for x in range(w):
        acc += cum[h, x]
    p_area = np.float64(acc)
    best = 0.0
    pick = -1
    any_sel = False
    for m in range(mask_offsets[b], mask_offsets[b + 1]):
        tot = np.int64(0)
        for g in range(seg_offsets[m], seg_offsets[m + 1]):
            x = seg_x[g]
            tot += cum[seg_y1[g], x] - cum[seg_y0[g], x]
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
    if mode == IOM and pick >= 0:
        chosen[b] = pick - mask_offsets[b]  # index within the image's own proposals
        selected[pick] = True
        any_sel = True
    matched[b] = any_sel
    if any_sel and mode == IOM:
        # one proposal: fill its column segments directly
        out[b] = 0
        for g in range(seg_offsets[pick], seg_offsets[pick + 1]):
            x = seg_x[g]
            for y in range(seg_y0[g], seg_y1[g]):
                out[b, y, x] = 1
    elif any_sel:
        # difference array down each column over the selected segments (reusing ``cum``),
        # then a running sum row by row: O(segments + H W), vectorised, whatever the union
        cum[:, :] = 0
        for m in range(mask_offsets[b], mask_offsets[b + 1]):
            if not selected[m]:
                continue
            for g in range(seg_offsets[m], seg_offsets[m + 1]):
                x = seg_x[g]
                cum[seg_y0[g], x] += 1
                cum[seg_y1[g], x] -= 1
        for x in range(w):
            out[b, 0, x] = cum[0, x] > 0
        for y in range(1, h):
            for x in range(w):
                cum[y, x] += cum[y - 1, x]
                out[b, y, x] = cum[y, x] > 0
    else:
        out[b] = pseudo[b]


@nb.njit(**NJIT)
def _refine_serial(*args: Any) -> None:
    for b in range(args[0].shape[0]):
        _refine_one(b, *args)


@nb.njit(**NJIT_PARALLEL)
def _refine_parallel(*args: Any) -> None:
    for b in nb.prange(args[0].shape[0]):
        _refine_one(b, *args)


_THREADS_STARTED = False


def _start_numba_threads() -> int:
    """Start numba's threading layer without changing OpenMP's global thread count.

    numba's ``omp`` layer calls ``omp_set_num_threads(NUMBA_NUM_THREADS)`` when it starts. torch
    uses the same ``libgomp.so.1`` (one soname, loaded once per process), so that call silently
    replaced a user's ``torch.set_num_threads(n)`` on samrefine's first parallel kernel. The
    OpenMP value is read before the layer starts and put back after, so the layer can be any of
    numba's. Returns numba's thread count.
    """
    global _THREADS_STARTED
    if _THREADS_STARTED:
        return nb.get_num_threads()
    get_max: Any = None
    set_num: Any = None
    try:
        from numba.np.ufunc import omppool  # type: ignore[attr-defined]  # OpenMP layer

        # the layer's calls bind to the first libgomp in the process's global scope (torch's,
        # when torch was imported first), else to the one it links: look them up in that order
        for lib in (ctypes.CDLL(None), ctypes.CDLL(omppool.__file__)):
            if hasattr(lib, "omp_get_max_threads") and hasattr(lib, "omp_set_num_threads"):
                get_max, set_num = lib.omp_get_max_threads, lib.omp_set_num_threads
                break
    except (ImportError, OSError):
        pass
    before = int(get_max()) if get_max is not None else None
    n = nb.get_num_threads()  # starts the threading layer
    if before is not None and int(get_max()) != before:
        set_num(before)
    _THREADS_STARTED = True
    return n


def refine_batch(
    pseudo_u8: np.ndarray,
    segments: Segments,
    mode: int,
    t_iom: float,
    under: float | None,
    over: float | None,
    eps: float,
) -> KernelResult:
    """Run IOM (``mode=KernelMode.IOM``) or CPI on ``pseudo_u8`` ``(B, H, W)`` uint8 {0, 1}.

    ``segments`` holds host arrays; ``under``/``over`` are floats or None (test off). Returns
    numpy arrays (see :class:`KernelResult`).
    """
    n_img, h, w = pseudo_u8.shape
    m = int(segments.mask_offsets[-1])
    inter = np.empty(m, np.int64)
    iou = np.empty(m, np.float64)
    s1 = np.empty(m, np.float64)
    s2 = np.empty(m, np.float64)
    selected = np.zeros(m, np.bool_)
    chosen = np.full(n_img, -1, np.int64)
    matched = np.zeros(n_img, np.bool_)
    out = np.empty((n_img, h, w), np.uint8)
    parallel = n_img > 1 and _start_numba_threads() > 1
    kernel = _refine_parallel if parallel else _refine_serial
    kernel(
        pseudo_u8,
        segments.x,
        segments.y0,
        segments.y1,
        segments.seg_offsets,
        segments.mask_offsets,
        segments.area,
        mode,
        float(t_iom),
        under is not None,
        float(under if under is not None else 0.0),
        over is not None,
        float(over if over is not None else 0.0),
        float(eps),
        inter,
        iou,
        s1,
        s2,
        selected,
        chosen,
        matched,
        out,
    )
    return KernelResult(inter, iou, s1, s2, selected, chosen, matched, out.view(np.bool_))
