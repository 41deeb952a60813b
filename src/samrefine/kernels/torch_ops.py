"""Torch kernels for IOM / CPI matching on runs (private; see :mod:`samrefine.match`).

Vectorised over the whole batch and all runs: one column-major prefix sum per image
(``cumsum``), one gather per run endpoint, one segment sum per mask, and for the refined masks a
difference array over the selected runs followed by a ``cumsum``. No Python loop over images or
proposals; no host synchronisation. Same arithmetic as the Numba kernels (int64 counts, float64
scores), so results are bit-identical.
"""

from __future__ import annotations

import torch

IOM, CPI = 0, 1


def refine_batch(pseudo, batch, mode, t_iom, under, over, eps, write_masks=True):
    """Torch twin of :func:`samrefine.kernels.numba_cpu.refine_batch`.

    ``pseudo`` is a ``(B, H, W)`` bool/uint8 tensor on the device of ``batch`` (a
    ``ProposalBatch`` moved there with ``.to(device)``).
    """
    dev = pseudo.device
    n_img, h, w = pseudo.shape
    hw = h * w
    n_masks = batch.area.shape[0]
    # column-major prefix sums, one row per image: pref[b, i] = sum(P_b[:i]) (flat, F order)
    flat = pseudo.transpose(1, 2).reshape(n_img, hw)
    pref = torch.zeros(n_img, hw + 1, dtype=torch.int32, device=dev)
    torch.cumsum(flat, dim=1, dtype=torch.int32, out=pref[:, 1:])
    p_area = pref[:, -1].to(torch.float64)                                   # (B,)
    run_img = batch._mask_image[batch._run_mask]                              # (R,)
    base = run_img * (hw + 1) + batch.starts
    pf = pref.view(-1)
    run_inter = (pf[base + batch.lengths] - pf[base]).to(torch.int64)         # (R,)
    inter = torch.zeros(n_masks, dtype=torch.int64, device=dev)
    inter.index_add_(0, batch._run_mask, run_inter)                            # (M,)

    t = inter.to(torch.float64)
    a = batch.area.to(torch.float64)
    pa = p_area[batch._mask_image]
    union = pa + a - t
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    iou = torch.where(union > 0, t / union.clamp_min(1), zero)
    s1 = t / (pa + eps)
    s2 = torch.where(a > 0, t / a.clamp_min(1), zero)

    if mode == IOM:
        cand = iou > t_iom
        key = torch.where(cand, iou, torch.full_like(iou, -1.0))
        best = torch.full((n_img,), -1.0, dtype=torch.float64, device=dev)
        best.scatter_reduce_(0, batch._mask_image, key, reduce="amax", include_self=True)
        idx = torch.arange(n_masks, device=dev)
        is_best = cand & (key == best[batch._mask_image])
        chosen = torch.full((n_img,), n_masks, dtype=torch.int64, device=dev)
        chosen.scatter_reduce_(0, batch._mask_image, torch.where(is_best, idx, n_masks),
                               reduce="amin", include_self=True)
        matched = chosen < n_masks
        chosen = torch.where(matched, chosen, -1)
        selected = torch.zeros(n_masks, dtype=torch.bool, device=dev)
        selected[chosen[matched]] = True
    else:
        selected = torch.zeros(n_masks, dtype=torch.bool, device=dev)
        if under is not None:
            selected |= s1 > under
        if over is not None:
            selected |= s2 > over
        counts = torch.zeros(n_img, dtype=torch.int64, device=dev)
        counts.index_add_(0, batch._mask_image, selected.to(torch.int64))
        matched = counts > 0
        chosen = torch.full((n_img,), -1, dtype=torch.int64, device=dev)

    masks = None
    if write_masks:
        run_sel = selected[batch._run_mask]
        diff = torch.zeros(n_img * (hw + 1), dtype=torch.int32, device=dev)
        ones = run_sel.to(torch.int32)
        diff.index_add_(0, base, ones)
        diff.index_add_(0, base + batch.lengths, -ones)
        cover = diff.view(n_img, hw + 1)[:, :hw].cumsum(1, dtype=torch.int32) > 0
        cover = cover.view(n_img, w, h).transpose(1, 2)
        masks = torch.where(matched[:, None, None], cover, pseudo.bool())
    return dict(inter=inter, iou=iou, s1=s1, s2=s2, selected=selected, chosen=chosen,
                matched=matched, pseudo_area=pref[:, -1].to(torch.int64), masks=masks)
