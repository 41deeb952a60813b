"""Torch kernels for semantic (multi-class) refinement (private; see :mod:`samrefine.semantic`).

The twin of :mod:`samrefine.kernels.semantic_numba`, vectorised over the whole batch: the region
map is cut into runs along the flat column-major pixel order (the order proposals' runs use), each
proposal run finds the region runs it crosses with two ``searchsorted`` calls, overlaps are summed
per (proposal, region) key with ``unique`` + ``index_add_``; selection and painting use
``scatter_reduce_``. No Python loop over images, regions or proposals. The sizes of the expanded
crossing and pixel lists are read to the host (two or three synchronisations per call).
Integer counts and float64 scores in the same order of operations as the Numba kernels, so the
results are identical.
"""

from __future__ import annotations

import torch

from ._api import KernelMode

IOM, CPI = int(KernelMode.IOM), int(KernelMode.CPI)
_BIG = 2**31 - 1


def region_map_class(labels, ignore_index, skip, n_classes):
    """``labels`` (B, H, W) integer tensor -> region (B, H, W) int32, offsets (B+1,), class,
    component, area (R,) int64; regions ordered by image then class."""
    dev = labels.device
    n_img = labels.shape[0]
    lab = labels.to(torch.int64)
    valid = torch.ones_like(lab, dtype=torch.bool) if ignore_index is None else lab != ignore_index
    safe = torch.where(valid, lab, 0)
    valid &= ~skip[safe]
    img = torch.arange(n_img, device=dev).view(-1, 1, 1)
    key = (img * n_classes + safe)[valid]
    hist = torch.bincount(key, minlength=n_img * n_classes)  # (B * C,)
    present = hist > 0
    lut = torch.cumsum(present.to(torch.int64), 0) - 1  # region id
    region = torch.where(valid, lut[img * n_classes + safe], -1).to(torch.int32)
    idx = torch.nonzero(present).view(-1)
    r_class = idx % n_classes
    r_area = hist[idx]
    counts = torch.bincount(idx // n_classes, minlength=n_img)
    offsets = torch.zeros(n_img + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(counts, 0)
    return region, offsets, r_class, torch.zeros_like(r_class), r_area


def score_pairs(region, n_reg_total, batch):
    """(pair_mask, pair_region, pair_inter), int64, sorted by (mask, region)."""
    dev = region.device
    n_img, h, w = region.shape
    hw = h * w
    flat = region.transpose(1, 2).reshape(-1)  # column-major
    n_pix = flat.numel()
    change = torch.ones(n_pix, dtype=torch.bool, device=dev)
    change[1:] = flat[1:] != flat[:-1]
    l_start = torch.nonzero(change).view(-1)
    l_end = torch.empty_like(l_start)
    l_end[:-1] = l_start[1:]
    l_end[-1:] = n_pix
    l_reg = flat[l_start].to(torch.int64)

    n_runs = batch.starts.shape[0]
    empty = torch.zeros(0, dtype=torch.int64, device=dev)
    if n_runs == 0 or n_reg_total == 0:
        return empty, empty, empty
    run_mask = torch.repeat_interleave(
        torch.arange(batch.area.shape[0], device=dev), batch.run_offsets.diff(), output_size=n_runs
    )
    g_start = batch._mask_image[run_mask] * hw + batch.starts
    g_end = g_start + batch.lengths
    j_lo = torch.searchsorted(l_start, g_start, right=True) - 1
    j_hi = torch.searchsorted(l_start, g_end - 1, right=True) - 1
    n_cross = j_hi - j_lo + 1
    total = int(n_cross.sum())
    rep = torch.repeat_interleave(torch.arange(n_runs, device=dev), n_cross, output_size=total)
    first = torch.cumsum(n_cross, 0) - n_cross
    j = j_lo[rep] + torch.arange(total, device=dev) - first[rep]
    ov = torch.minimum(g_end[rep], l_end[j]) - torch.maximum(g_start[rep], l_start[j])
    reg = l_reg[j]
    keep = reg >= 0
    key = run_mask[rep][keep] * n_reg_total + reg[keep]
    uk, inv = torch.unique(key, sorted=True, return_inverse=True)
    inter = torch.zeros(uk.shape[0], dtype=torch.int64, device=dev)
    inter.index_add_(0, inv, ov[keep])
    return uk // n_reg_total, uk % n_reg_total, inter


def select(p_m, p_r, p_t, r_area, m_area, n_reg, mode, t_iom, under, over, eps):
    """Twin of ``semantic_numba.select``."""
    dev = p_m.device
    t = p_t.to(torch.float64)
    ar = r_area[p_r].to(torch.float64)
    ak = m_area[p_m].to(torch.float64)
    iou = t / (ar + ak - t)
    s1 = t / (ar + eps)
    s2 = t / ak
    n = p_m.shape[0]
    score = torch.zeros(n_reg, dtype=torch.float64, device=dev)
    if mode == IOM:
        cand = iou > t_iom
        key = torch.where(cand, iou, torch.zeros_like(iou))
        score.scatter_reduce_(0, p_r, key, reduce="amax", include_self=True)
        is_best = cand & (iou == score[p_r])
        idx = torch.arange(n, device=dev)
        best_pair = torch.full((n_reg,), n, dtype=torch.int64, device=dev)
        best_pair.scatter_reduce_(
            0, p_r, torch.where(is_best, idx, n), reduce="amin", include_self=True
        )
        matched = best_pair < n
        selected = torch.zeros(n, dtype=torch.bool, device=dev)
        selected[best_pair[matched]] = True
        chosen = torch.full((n_reg,), -1, dtype=torch.int64, device=dev)
        chosen[matched] = p_m[best_pair[matched]]
    else:
        selected = torch.zeros(n, dtype=torch.bool, device=dev)
        if under is not None:
            selected |= s1 > under
        if over is not None:
            selected |= s2 > over
        counts = torch.zeros(n_reg, dtype=torch.int64, device=dev)
        counts.index_add_(0, p_r, selected.to(torch.int64))
        matched = counts > 0
        score.scatter_reduce_(
            0,
            p_r,
            torch.where(selected, iou, torch.zeros_like(iou)),
            reduce="amax",
            include_self=True,
        )
        chosen = torch.full((n_reg,), -1, dtype=torch.int64, device=dev)
    return iou, s1, s2, selected, chosen, matched, score


def paint(
    labels,
    region,
    region_image,
    r_class,
    r_matched,
    r_score,
    p_m,
    p_r,
    selected,
    batch,
    give_up_ignore,
    ignore_value,
):
    """Refined labels (dtype of ``labels``) and per-pixel matched map, (B, H, W) each."""
    dev = labels.device
    n_img, h, w = labels.shape
    hw = h * w
    n_reg = r_class.shape[0]
    if n_reg == 0:
        return labels.clone(), torch.zeros_like(labels, dtype=torch.bool)
    # global priority rank: image, then higher score, then lower region id (only the order
    # within an image matters: a pixel is only ever covered by regions of its own image)
    ids = torch.arange(n_reg, device=dev)
    o1 = torch.argsort(-r_score, stable=True)
    order = o1[torch.argsort(region_image[o1], stable=True)]
    rank = torch.empty(n_reg, dtype=torch.int64, device=dev)
    rank[order] = ids
    sel = torch.nonzero(selected).view(-1)
    winner = torch.full((n_img * hw,), _BIG, dtype=torch.int64, device=dev)
    if sel.numel():
        sm = p_m[sel]
        sr = rank[p_r[sel]]
        r0 = batch.run_offsets[sm]
        nr = batch.run_offsets[sm + 1] - r0
        tot_r = int(nr.sum())
        rep = torch.repeat_interleave(torch.arange(sel.numel(), device=dev), nr, output_size=tot_r)
        first = torch.cumsum(nr, 0) - nr
        run = r0[rep] + torch.arange(tot_r, device=dev) - first[rep]
        g_start = batch._mask_image[sm[rep]] * hw + batch.starts[run]
        ln = batch.lengths[run]
        tot_p = int(ln.sum())
        rep2 = torch.repeat_interleave(torch.arange(tot_r, device=dev), ln, output_size=tot_p)
        first2 = torch.cumsum(ln, 0) - ln
        pix = g_start[rep2] + torch.arange(tot_p, device=dev) - first2[rep2]
        winner.scatter_reduce_(0, pix, sr[rep[rep2]], reduce="amin", include_self=True)
    winner = winner.view(n_img, w, h).transpose(1, 2)  # row-major view
    has = winner != _BIG
    win_region = order[torch.where(has, winner, 0)]
    claimed = r_class[win_region].to(labels.dtype)
    out = torch.where(has, claimed, labels)
    if give_up_ignore:
        own = region.to(torch.int64)
        gave_up = (own >= 0) & r_matched[own.clamp_min(0)] & ~has
        out = torch.where(gave_up, torch.full_like(labels, ignore_value), out)
    return out, has
