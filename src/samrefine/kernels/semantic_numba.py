"""Numba CPU kernels for semantic (multi-class) refinement (private; see
:mod:`samrefine.semantic`).

Per image, in one pass over the label map and one pass over the proposals' column segments:

1. regions: ``per="class"`` reads them off the column runs of the class map
   (``column_runs`` + ``class_regions``); ``per="component"`` labels 8-connected components
   first (``region_map_component``). Regions are numbered per batch, image by image, then by
   class, then by component (components ordered by their first pixel in row-major order);
   ignored and skipped pixels belong to none (-1).
2. ``score_pairs``: each proposal segment ``(x, [y0, y1))`` finds its first and last run of
   column ``x`` through the per-pixel run index ``loc`` and adds its overlap with every run it
   crosses to that run's region. Only (proposal, region) pairs with a non-zero intersection are
   emitted (a zero intersection scores 0 and never passes a strict threshold), sorted by (flat
   proposal index, region id).
3. ``select``: scores and IOM / CPI selection per region; ``paint``: each pixel goes to the
   covering refined region of highest priority (highest score, then lowest region id), given-up
   pixels to ``ignore_index``. ``refine_regions`` runs 2 and 3 in one call.

Cost: ``O(H W)`` for the runs, ``O(segments + crossings)`` for the scores, ``O(H W + k log k)``
for the output (``k`` selected segments and matched runs). Integer counts, float64 scores
computed in the same order as the torch twin, so both give identical results.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .._config import NJIT
from ._api import KernelMode

IOM, CPI = int(KernelMode.IOM), int(KernelMode.CPI)
_BIG = np.int32(2**31 - 1)
#: Up to this many regions in an image, score_pairs finds a mask's regions by scanning its
#: accumulator (cheaper than per-run bookkeeping); above, it lists them as it meets them.
_DENSE_REGIONS = 64


# ----------------------------------------------------------------------------- region maps


@nb.njit(**NJIT)
def label_range(labels, ignore_index, has_ignore):
    """(min, max, any) over the non-void pixels, one pass (validation)."""
    lo = np.int64(2**62)
    hi = np.int64(-(2**62))
    flat = labels.reshape(-1)
    for i in range(flat.shape[0]):
        v = np.int64(flat[i])
        if has_ignore and v == ignore_index:
            continue
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi, hi >= lo


@nb.njit(**NJIT)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@nb.njit(inline="always", **NJIT)
def _union(parent, i, j):
    ri = _find(parent, i)
    rj = _find(parent, j)
    if ri < rj:
        parent[rj] = ri
    elif rj < ri:
        parent[ri] = rj


@nb.njit(**NJIT)
def region_map_component(labels, ignore_index, has_ignore, skip, n_classes):
    """Region = (image, class, 8-connected component of that class)."""
    n_img, h, w = labels.shape
    region = np.empty((n_img, h, w), np.int32)
    parent = np.empty(h * w, np.int64)
    comp_of_root = np.empty(h * w, np.int64)
    valid = np.empty(h * w, np.bool_)
    cls = np.empty(h * w, np.int64)
    # per image: component index within its class, in order of first row-major pixel
    all_class = np.empty(0, np.int64)
    all_area = np.empty(0, np.int64)
    all_comp = np.empty(0, np.int64)
    offsets = np.zeros(n_img + 1, np.int64)
    for b in range(n_img):
        for y in range(h):
            for x in range(w):
                i = y * w + x
                v = np.int64(labels[b, y, x])
                ok = not (has_ignore and v == ignore_index)
                if ok and skip[v]:
                    ok = False
                valid[i] = ok
                cls[i] = v
                parent[i] = i
        # union with the already-visited 8-neighbours. If N is a match, NW and NE (both
        # adjacent to N) are already joined to it through row y - 1, so N alone suffices;
        # otherwise NW, NE and W. Roots are always the smallest index of their tree.
        for y in range(h):
            for x in range(w):
                i = y * w + x
                if not valid[i]:
                    continue
                c = cls[i]
                if y > 0 and valid[i - w] and cls[i - w] == c:
                    _union(parent, i, i - w)
                else:
                    if y > 0 and x > 0 and valid[i - w - 1] and cls[i - w - 1] == c:
                        _union(parent, i, i - w - 1)
                    if y > 0 and x + 1 < w and valid[i - w + 1] and cls[i - w + 1] == c:
                        _union(parent, i, i - w + 1)
                if x > 0 and valid[i - 1] and cls[i - 1] == c:
                    _union(parent, i, i - 1)
        # flatten: parents point to smaller indices, so one forward pass resolves every root
        for i in range(h * w):
            if valid[i]:
                parent[i] = parent[parent[i]]
        # number components per class in order of first pixel (the root is the first pixel)
        count = np.zeros(n_classes, np.int64)
        n_comp = 0
        for i in range(h * w):
            if valid[i] and parent[i] == i:
                comp_of_root[i] = count[cls[i]]
                count[cls[i]] += 1
                n_comp += 1
        start = np.zeros(n_classes + 1, np.int64)
        for c in range(n_classes):
            start[c + 1] = start[c] + count[c]
        base = offsets[b]
        offsets[b + 1] = base + n_comp
        r_class = np.empty(n_comp, np.int64)
        r_comp = np.empty(n_comp, np.int64)
        r_area = np.zeros(n_comp, np.int64)
        for i in range(h * w):
            y = i // w
            x = i - y * w
            if not valid[i]:
                region[b, y, x] = -1
                continue
            root = parent[i]
            c = cls[i]
            local = start[c] + comp_of_root[root]
            region[b, y, x] = base + local
            r_class[local] = c
            r_comp[local] = comp_of_root[root]
            r_area[local] += 1
        all_class = np.concatenate((all_class, r_class))
        all_comp = np.concatenate((all_comp, r_comp))
        all_area = np.concatenate((all_area, r_area))
    return region, offsets, all_class, all_comp, all_area


# ----------------------------------------------------------------------------- scores


@nb.njit(**NJIT)
def _run_index(keys, loc):
    """Pass 1 of :func:`column_runs`: fill ``loc`` (uint8 or int32; uint8 wraps past 255 and
    the caller then redoes it in int32) and return ``colptr`` and the most runs in a column.

    The running per-column count is kept in a small array of ``loc``'s dtype and stored into
    each row of ``loc``: the loop reads ``keys`` only and vectorises (reading the previous row
    of ``loc`` looks like a loop-carried dependence to LLVM and runs scalar, about 10x slower).
    Every 255 rows the count is folded into an exact int64 total (at most 255 increments
    per block, so a wrapped uint8 difference is still exact)."""
    n_img, h, w = keys.shape
    colptr = np.zeros((n_img, w + 1), np.int64)
    cnt = np.empty(w, loc.dtype)
    mark = np.empty(w, loc.dtype)
    total_w = np.empty(w, np.int64)
    total = np.int64(0)
    most = np.int64(0)
    one = loc.dtype.type(1)
    zero = loc.dtype.type(0)
    for b in range(n_img):
        kb = keys[b]
        lb = loc[b]
        cp = colptr[b]
        cp[0] = total
        if h == 0:  # no pixels, no runs
            cp[:] = total
            continue
        cnt[:] = 0
        mark[:] = 0
        total_w[:] = 0
        lb[0, :] = 0
        for y0 in range(1, h, 255):
            for y in range(y0, min(y0 + 255, h)):
                row = kb[y]
                prev = kb[y - 1]
                lr = lb[y]
                for x in range(w):
                    c = cnt[x] + (one if row[x] != prev[x] else zero)
                    cnt[x] = c
                    lr[x] = c
            for x in range(w):
                d = np.int64(cnt[x]) - np.int64(mark[x])
                total_w[x] += d if d >= 0 else d + 256  # < 0 only for a wrapped uint8
                mark[x] = cnt[x]
        for x in range(w):
            cp[x + 1] = cp[x] + total_w[x] + 1
            most = max(most, total_w[x] + 1)
        total = cp[w]
    return colptr, most


#: De Bruijn table: the index of the lowest set bit of a uint64 ``v`` is
#: ``_DEBRUIJN[((v & -v) * _DEBRUIJN_MUL) >> 58]``.
_DEBRUIJN_MUL = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN = np.zeros(64, np.int64)
for _i in range(64):
    _DEBRUIJN[(((1 << _i) * int(_DEBRUIJN_MUL)) % 2**64) >> 58] = _i


@nb.njit(**NJIT)
def _run_starts(keys, colptr, loc, debruijn):
    """Pass 2 of :func:`column_runs`: ``run_y0`` and ``run_key``. Each row's changes against
    the row above are flagged one byte per pixel (vectorised), then found 8 flags at a time
    (a uint64 word, lowest set bit by a De Bruijn multiply), so the scalar work is per
    change, not per pixel."""
    n_img, h, w = keys.shape
    total = colptr[n_img - 1, w] if n_img else np.int64(0)
    run_y0 = np.empty(total, np.int32)
    run_key = np.empty(total, np.int64)
    nw = (w + 7) // 8
    flags = np.zeros(nw * 8, np.uint8)  # the tail past w stays 0
    words = flags.view(np.uint64)
    one = np.uint64(1)
    for b in range(n_img):
        kb = keys[b]
        lb = loc[b]
        cp = colptr[b]
        if h == 0:
            continue
        for x in range(w):
            p = cp[x]
            run_y0[p] = 0
            run_key[p] = kb[0, x]
        for y in range(1, h):
            row = kb[y]
            prev = kb[y - 1]
            lr = lb[y]
            for x in range(w):
                flags[x] = row[x] != prev[x]
            for q in range(nw):
                v = words[q]
                while v != 0:
                    low = v & (~v + one)
                    x = q * 8 + (debruijn[np.int64((low * _DEBRUIJN_MUL) >> np.uint64(58))] >> 3)
                    j = cp[x] + np.int64(lr[x])
                    run_y0[j] = y
                    run_key[j] = row[x]
                    v ^= low
    return run_y0, run_key


def column_runs(keys: np.ndarray):
    """Per-column runs of every image of ``keys`` (B, H, W), C-contiguous, any integer dtype,
    scanned row by row (no transpose).

    Returns ``colptr`` (B, W + 1) int64 (runs of column ``x`` of image ``b`` are
    ``colptr[b, x]:colptr[b, x + 1]``, indices into the flat run arrays), ``run_y0`` (N,)
    int32 (first row; a run ends where the next one of its column starts, or at H),
    ``run_key`` (N,) int64 (the key value of the run) and ``loc`` (B, H, W), the index of
    each pixel's run within its column (``colptr[b, x] + loc[b, y, x]`` is its flat run), so a
    column segment finds its first and last run in O(1). ``loc`` is uint8 when no column has
    more than 256 runs (the usual case: a quarter of the memory of int32, so the scoring's
    random reads stay in cache), int32 otherwise.
    """
    loc = np.empty(keys.shape, np.uint8)
    colptr, most = _run_index(keys, loc)
    if most > 256:  # a uint8 index wrapped: redo it wide
        loc = np.empty(keys.shape, np.int32)
        colptr, most = _run_index(keys, loc)
    run_y0, run_key = _run_starts(keys, colptr, loc, _DEBRUIJN)
    return colptr, run_y0, run_key, loc


@nb.njit(**NJIT)
def key_range(run_key, ignore_index, has_ignore):
    """(min, max, any) of the run keys that are not ``ignore_index`` (validation from the runs,
    so the label map is read once)."""
    lo = np.int64(2**62)
    hi = np.int64(-(2**62))
    for i in range(run_key.shape[0]):
        v = run_key[i]
        if has_ignore and v == ignore_index:
            continue
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi, hi >= lo


@nb.njit(**NJIT)
def class_regions(colptr, run_y0, run_key, h, ignore_index, has_ignore, skip, n_classes):
    """Regions = (image, class), from the runs of the class map (areas summed over runs).

    Returns lut (B, n_classes) int32 (class -> region id, -1 for absent or skipped), offsets
    (B + 1,), class, component (zeros), area (R,) int64, and ``run_r`` (N,) int32, each run's
    region id (-1 for void or skipped pixels).
    """
    n_img, w1 = colptr.shape
    w = w1 - 1
    hist = np.zeros((n_img, n_classes), np.int64)
    for b in range(n_img):
        for x in range(w):
            hi = colptr[b, x + 1]
            for j in range(colptr[b, x], hi):
                v = run_key[j]
                if has_ignore and v == ignore_index:
                    continue
                end = run_y0[j + 1] if j + 1 < hi else h
                hist[b, v] += end - run_y0[j]
    n_reg = 0
    for b in range(n_img):
        for c in range(n_classes):
            if hist[b, c] > 0 and not skip[c]:
                n_reg += 1
    offsets = np.zeros(n_img + 1, np.int64)
    r_class = np.empty(n_reg, np.int64)
    r_comp = np.zeros(n_reg, np.int64)
    r_area = np.empty(n_reg, np.int64)
    lut = np.full((n_img, n_classes), -1, np.int32)
    r = 0
    for b in range(n_img):
        for c in range(n_classes):
            if hist[b, c] > 0 and not skip[c]:
                lut[b, c] = r
                r_class[r] = c
                r_area[r] = hist[b, c]
                r += 1
        offsets[b + 1] = r
    run_r = np.empty(run_key.shape[0], np.int32)
    for b in range(n_img):
        for j in range(colptr[b, 0], colptr[b, w]):
            v = run_key[j]
            run_r[j] = -1 if has_ignore and v == ignore_index else lut[b, v]
    return lut, offsets, r_class, r_comp, r_area, run_r


@nb.njit(inline="always", **NJIT)
def _add(acc, touched, nt, k, n, dense):
    """acc[k] += n; in sparse mode also list k in ``touched`` the first time. Returns nt."""
    if not dense and acc[k] == 0:
        touched[nt] = k
        nt += 1
    acc[k] += n
    return nt


@nb.njit(**NJIT)
def _mask_overlaps(
    m, cp, lb, run_y0, run_r, r0, seg_x, seg_y0, seg_y1, seg_offsets, acc, touched, dense
):
    """Add mask ``m``'s overlap with each region to ``acc`` (indexed by region - ``r0``);
    return how many regions it touched, listed in ascending order in ``touched[:n]``.
    ``dense`` (few regions): find them by one scan of ``acc`` after the mask instead of
    bookkeeping per run. (Its own function: the caller grows its output arrays, and numba
    keeps reference counting out of this loop only when no array is reassigned in it.)"""
    nb.literally(dense)  # one compiled copy per value: the ``dense`` branches fold away
    nt = 0
    for g in range(seg_offsets[m], seg_offsets[m + 1]):
        x = seg_x[g]
        y0 = np.int64(seg_y0[g])
        y1 = np.int64(seg_y1[g])
        base = cp[x]
        j = base + lb[y0, x]
        last = base + lb[y1 - 1, x]
        if j == last:  # most segments lie in one run
            rr = run_r[j]
            if rr >= 0:
                nt = _add(acc, touched, nt, rr - r0, y1 - y0, dense)
            continue
        start = y0
        while j <= last:
            end = np.int64(run_y0[j + 1]) if j < last else y1
            rr = run_r[j]
            if rr >= 0:
                nt = _add(acc, touched, nt, rr - r0, end - start, dense)
            start = end
            j += 1
    if dense:
        for k in range(acc.shape[0]):
            if acc[k] != 0:
                touched[nt] = k
                nt += 1
    else:
        touched[:nt].sort()
    return nt


@nb.njit(**NJIT)
def score_pairs(
    colptr,
    run_y0,
    run_r,
    loc,
    region_offsets,
    seg_x,
    seg_y0,
    seg_y1,
    seg_offsets,
    mask_offsets,
):
    """Intersections |P_r n S_m| > 0 as pairs sorted by (m, r): (pair_mask, pair_region,
    pair_inter), all int64 (m and r flat over the batch), from the column runs of the region
    ids (:func:`column_runs`, with ``run_r`` the region id of each run). A segment's first and
    last run come from ``loc`` in O(1); most segments lie in one run."""
    n_img = colptr.shape[0]
    cap = 1024
    p_m = np.empty(cap, np.int64)
    p_r = np.empty(cap, np.int64)
    p_t = np.empty(cap, np.int64)
    n = 0
    for b in range(n_img):
        r0 = region_offsets[b]
        n_reg = region_offsets[b + 1] - r0
        if n_reg == 0 or mask_offsets[b + 1] == mask_offsets[b]:
            continue
        cp = colptr[b]
        lb = loc[b]
        acc = np.zeros(n_reg, np.int64)
        touched = np.empty(n_reg, np.int64)
        dense = n_reg <= _DENSE_REGIONS
        for m in range(mask_offsets[b], mask_offsets[b + 1]):
            if dense:  # literal flags: two compiled copies, no test inside the loop
                nt = _mask_overlaps(
                    m, cp, lb, run_y0, run_r, r0, seg_x, seg_y0, seg_y1, seg_offsets, acc,
                    touched, True,
                )  # fmt: skip
            else:
                nt = _mask_overlaps(
                    m, cp, lb, run_y0, run_r, r0, seg_x, seg_y0, seg_y1, seg_offsets, acc,
                    touched, False,
                )  # fmt: skip
            if nt == 0:
                continue
            ts = touched[:nt]
            if n + nt > cap:
                while n + nt > cap:
                    cap *= 2
                q_m = np.empty(cap, np.int64)
                q_r = np.empty(cap, np.int64)
                q_t = np.empty(cap, np.int64)
                q_m[:n] = p_m[:n]
                q_r[:n] = p_r[:n]
                q_t[:n] = p_t[:n]
                p_m, p_r, p_t = q_m, q_r, q_t
            for i in range(nt):
                k = ts[i]
                p_m[n] = m
                p_r[n] = r0 + k
                p_t[n] = acc[k]
                acc[k] = 0
                n += 1
    return p_m[:n].copy(), p_r[:n].copy(), p_t[:n].copy()


# ----------------------------------------------------------------------------- selection


@nb.njit(**NJIT)
def select(
    p_m, p_r, p_t, r_area, m_area, n_reg, mode, t_iom, use_under, under, use_over, over, eps
):
    """Scores of every pair and the selection. Returns iou, s1, s2 (P,) float64, selected (P,)
    bool, chosen (R,) int64 (flat mask, -1), matched (R,) bool, score (R,) float64."""
    n = p_m.shape[0]
    iou = np.empty(n, np.float64)
    s1 = np.empty(n, np.float64)
    s2 = np.empty(n, np.float64)
    selected = np.zeros(n, np.bool_)
    chosen = np.full(n_reg, -1, np.int64)
    chosen_pair = np.full(n_reg, -1, np.int64)
    matched = np.zeros(n_reg, np.bool_)
    score = np.zeros(n_reg, np.float64)
    for i in range(n):
        r = p_r[i]
        t = np.float64(p_t[i])
        ar = np.float64(r_area[r])
        ak = np.float64(m_area[p_m[i]])
        v_iou = t / (ar + ak - t)
        v_s1 = t / (ar + eps)
        v_s2 = t / ak
        iou[i] = v_iou
        s1[i] = v_s1
        s2[i] = v_s2
        if mode == IOM:
            if v_iou > t_iom and v_iou > score[r]:
                score[r] = v_iou
                chosen[r] = p_m[i]
                chosen_pair[r] = i
        else:
            if (use_under and v_s1 > under) or (use_over and v_s2 > over):
                selected[i] = True
                matched[r] = True
                if v_iou > score[r]:
                    score[r] = v_iou
    if mode == IOM:
        for r in range(n_reg):
            if chosen_pair[r] >= 0:
                selected[chosen_pair[r]] = True
                matched[r] = True
    return iou, s1, s2, selected, chosen, matched, score


@nb.njit(**NJIT)
def _column_events(
    h, colstart, b_y0, b_y1, b_st, cp, run_y0, run_r, r_matched, give_up_ignore, give,
    e_y, e_x, e_c,
):  # fmt: skip
    """Resolve every column of one image and list its changes of state as events
    ``(e_y, e_x, e_c)``: from row ``e_y`` on, column ``e_x`` holds state ``e_c`` (0 teacher,
    ``1 + q`` claimed by rank ``q``, ``give`` given up; a lower state wins). A column's
    intervals (its selected segments, bucketed by column: ``colstart``, ``b_y0``, ``b_y1``,
    ``b_st``; and its matched regions' runs) are swept by their sorted end points with a count
    per state: ``O(k log k)`` for ``k`` intervals, whatever their length. Returns the number
    of events."""
    w = colstart.shape[0] - 1
    k_max = 0
    for x in range(w):
        k_max = max(k_max, colstart[x + 1] - colstart[x] + cp[x + 1] - cp[x])
    keys = np.empty(2 * k_max, np.int64)  # (row << 32) | (start << 31) | state
    count = np.zeros(give + 1, np.int64)
    n_ev = 0
    for x in range(w):
        n = 0
        for q in range(colstart[x], colstart[x + 1]):
            keys[n] = (np.int64(b_y0[q]) << 32) | (1 << 31) | b_st[q]
            keys[n + 1] = (np.int64(b_y1[q]) << 32) | b_st[q]
            n += 2
        c_hi = cp[x + 1]
        if give_up_ignore:
            for j in range(cp[x], c_hi):
                rr = run_r[j]
                if rr >= 0 and r_matched[rr]:
                    end = np.int64(run_y0[j + 1]) if j + 1 < c_hi else np.int64(h)
                    keys[n] = (np.int64(run_y0[j]) << 32) | (1 << 31) | give
                    keys[n + 1] = (end << 32) | give
                    n += 2
        if n == 0:
            continue
        ks = keys[:n]
        if n <= 32:  # the usual handful: insertion sort beats a general sort's set-up
            for i in range(1, n):
                v = ks[i]
                t = i - 1
                while t >= 0 and ks[t] > v:
                    ks[t + 1] = ks[t]
                    t -= 1
                ks[t + 1] = v
        else:
            ks.sort()
        best = 0  # the winning state (0: none active)
        prev = 0
        i = 0
        while i < n:
            y = ks[i] >> 32
            while i < n and (ks[i] >> 32) == y:  # every start and end at this row
                st = ks[i] & 0x7FFFFFFF
                if ks[i] & (1 << 31):
                    count[st] += 1
                    if best == 0 or st < best:
                        best = st
                else:
                    count[st] -= 1
                    if st == best and count[st] == 0:
                        best = 0
                        for t in range(st + 1, give + 1):
                            if count[t] > 0:
                                best = t
                                break
                i += 1
            if best != prev:
                e_y[n_ev] = y
                e_x[n_ev] = x
                e_c[n_ev] = best
                n_ev += 1
                prev = best
    return n_ev


@nb.njit(**NJIT)
def _apply_events(lab, out, out_matched, e_y, e_x, e_c, n_ev, val, give, keep, sv, sm):
    """One row-major pass over an (H, W) image: events sorted by row (a counting sort), the
    state of each column changes only at its events. Per column the state is held as a bit
    mask ``keep`` (all ones: the teacher's label; zero: replaced), the value ``sv`` and the
    matched flag ``sm``, so each row is ``out = (lab & keep) | sv``, ``matched = sm``:
    branch-free, vectorised."""
    h, w = lab.shape
    row_ptr = np.zeros(h + 2, np.int64)
    for i in range(n_ev):
        row_ptr[e_y[i] + 1] += 1
    for y in range(h + 1):
        row_ptr[y + 1] += row_ptr[y]
    order_ev = np.empty(n_ev, np.int64)
    put = row_ptr[: h + 1].copy()
    for i in range(n_ev):
        order_ev[put[e_y[i]]] = i
        put[e_y[i]] += 1
    ones = ~lab.dtype.type(0)
    keep[:] = ones
    sv[:] = 0
    sm[:] = False
    for y in range(h):
        for t in range(row_ptr[y], row_ptr[y + 1]):
            i = order_ev[t]
            c = e_c[i]
            x = e_x[i]
            keep[x] = ones if c == 0 else 0
            sv[x] = 0 if c == 0 else val[c]
            sm[x] = c != 0 and c != give
        orow = out[y]
        mrow = out_matched[y]
        lrow = lab[y]
        for x in range(w):
            orow[x] = (lrow[x] & keep[x]) | sv[x]
        for x in range(w):
            mrow[x] = sm[x]


@nb.njit(**NJIT)
def paint(
    labels,
    colptr,
    run_y0,
    run_r,
    region_offsets,
    r_class,
    r_matched,
    r_score,
    p_m,
    p_r,
    selected,
    seg_x,
    seg_y0,
    seg_y1,
    seg_offsets,
    give_up_ignore,
    ignore_value,
    out,
    out_matched,
):
    """Write refined labels ``out`` and the per-pixel ``out_matched`` (both (B, H, W)).
    ``colptr``/``run_y0``/``run_r`` are the column runs of the region ids (as scored).

    Per column, only the rows that a selected segment or a matched region touches are
    resolved (each pixel to the best-ranked covering segment, with "next unclaimed row" skip
    pointers: O(span + segments), whatever the overlap), and each change of state is written
    as an event; one row-major pass then turns the events into the output."""
    n_img, h, w = labels.shape
    n_pairs = p_m.shape[0]
    keep = np.empty(w, labels.dtype)
    sv = np.empty(w, labels.dtype)
    sm = np.empty(w, np.bool_)
    i0 = 0
    for b in range(n_img):
        r0 = region_offsets[b]
        r1 = region_offsets[b + 1]
        n_reg = r1 - r0
        i1 = i0
        while i1 < n_pairs and p_r[i1] < r1:
            i1 += 1
        n_match = 0
        for k in range(n_reg):
            if r_matched[r0 + k]:
                n_match += 1
        if n_match == 0:
            out[b] = labels[b]
            out_matched[b] = False
            i0 = i1
            continue
        # priority rank: higher score first, then lower region id
        cand = np.empty(n_match, np.int64)
        q = 0
        for k in range(n_reg):
            if r_matched[r0 + k]:
                cand[q] = k
                q += 1
        sort_key = np.empty(n_match, np.float64)
        for q in range(n_match):
            sort_key[q] = -r_score[r0 + cand[q]]
        order = cand[np.argsort(sort_key, kind="mergesort")]
        rank = np.full(n_reg, _BIG, np.int32)
        for q in range(n_match):
            rank[order[q]] = q
        # states: 0 teacher's label, 1 + q claimed by rank q, give = given up
        give = n_match + 1
        val = np.zeros(n_match + 2, labels.dtype)
        for q in range(n_match):
            val[1 + q] = r_class[r0 + order[q]]
        val[give] = ignore_value
        # the selected segments, bucketed by column in rank order
        sel_pairs = np.empty(i1 - i0, np.int64)
        sel_rank = np.empty(i1 - i0, np.int64)
        n_sel = 0
        for i in range(i0, i1):
            if selected[i]:
                sel_pairs[n_sel] = i
                sel_rank[n_sel] = rank[p_r[i] - r0]
                n_sel += 1
        by_rank = sel_pairs[:n_sel][np.argsort(sel_rank[:n_sel], kind="mergesort")]
        colstart = np.zeros(w + 1, np.int64)
        for i in by_rank:
            m = p_m[i]
            for g in range(seg_offsets[m], seg_offsets[m + 1]):
                colstart[seg_x[g] + 1] += 1
        for x in range(w):
            colstart[x + 1] += colstart[x]
        n_g = colstart[w]
        b_y0 = np.empty(n_g, np.int32)
        b_y1 = np.empty(n_g, np.int32)
        b_st = np.empty(n_g, np.int32)
        fill = colstart[:w].copy()
        for i in by_rank:
            m = p_m[i]
            code = rank[p_r[i] - r0] + 1
            for g in range(seg_offsets[m], seg_offsets[m + 1]):
                x = seg_x[g]
                q = fill[x]
                b_y0[q] = seg_y0[g]
                b_y1[q] = seg_y1[g]
                b_st[q] = code
                fill[x] = q + 1
        # events (row, column, new state), collected column by column: a sparse list, not an
        # (H, W) array, so no per-call allocation and zeroing of a pixel-sized buffer
        cp = colptr[b]
        # a column's state changes at most twice per claimed segment and per run (its start
        # and end), so this bounds the events (no growth inside the loop)
        cap = 2 * (n_g + cp[w] - cp[0]) + 2 * w
        e_y = np.empty(cap, np.int32)
        e_x = np.empty(cap, np.int32)
        e_c = np.empty(cap, np.int32)
        n_ev = _column_events(
            h, colstart, b_y0, b_y1, b_st, cp, run_y0, run_r, r_matched, give_up_ignore, give,
            e_y, e_x, e_c,
        )  # fmt: skip
        _apply_events(
            labels[b], out[b], out_matched[b], e_y, e_x, e_c, n_ev, val, give, keep, sv, sm
        )
        i0 = i1


@nb.njit(**NJIT)
def refine_regions(
    labels, colptr, run_y0, run_r, loc, region_offsets, r_class, r_area,
    seg_x, seg_y0, seg_y1, seg_offsets, mask_offsets, m_area,
    mode, t_iom, use_under, under, use_over, over, eps, give_up_ignore, ignore_value,
):  # fmt: skip
    """:func:`score_pairs`, :func:`select` and :func:`paint` in one call (one dispatch from
    Python), plus the per-image indices the result table reports.

    Returns ``out`` and ``out_matched`` (B, H, W), ``r_image`` (R,) int64, the pairs
    ``p_local`` (proposal index within its image), ``p_r``, ``p_t``, ``iou``, ``s1``, ``s2``,
    ``selected``, and per region ``chosen_local`` (-1: none), ``matched`` and ``score``."""
    n_img = labels.shape[0]
    n_reg = region_offsets[n_img]
    r_image = np.empty(n_reg, np.int64)
    for b in range(n_img):
        r_image[region_offsets[b] : region_offsets[b + 1]] = b
    p_m, p_r, p_t = score_pairs(
        colptr, run_y0, run_r, loc, region_offsets, seg_x, seg_y0, seg_y1, seg_offsets,
        mask_offsets,
    )  # fmt: skip
    iou, s1, s2, sel, chosen, matched, score = select(
        p_m, p_r, p_t, r_area, m_area, n_reg, mode, t_iom, use_under, under, use_over, over, eps
    )
    out = np.empty_like(labels)
    out_matched = np.empty(labels.shape, np.bool_)
    paint(
        labels, colptr, run_y0, run_r, region_offsets, r_class, matched, score, p_m, p_r, sel,
        seg_x, seg_y0, seg_y1, seg_offsets, give_up_ignore, ignore_value, out, out_matched,
    )  # fmt: skip
    p_local = np.empty(p_m.shape[0], np.int64)
    for i in range(p_m.shape[0]):
        p_local[i] = p_m[i] - mask_offsets[r_image[p_r[i]]]
    chosen_local = np.full(n_reg, -1, np.int64)
    for r in range(n_reg):
        if chosen[r] >= 0:
            chosen_local[r] = chosen[r] - mask_offsets[r_image[r]]
    return (
        out, out_matched, r_image, p_local, p_r, p_t, iou, s1, s2, sel, chosen_local, matched,
        score,
    )  # fmt: skip
