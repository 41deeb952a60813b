"""Torch kernels for IOM / CPI matching on runs (private; see :mod:`samrefine.match`).

Vectorised over the whole batch and all column segments: one ``cumsum`` down the columns of
every pseudo-label, two gathers per segment, one segment sum per mask, and for the refined masks
a difference array over the selected segments followed by a ``cumsum``. No Python loop over
images or proposals; no host synchronisation. Same arithmetic as the Numba kernels (int64
counts, float64 scores), so results are bit-identical.
"""

from __future__ import annotations

import torch

from ._api import KernelMode, KernelResult, Segments

IOM, CPI = int(KernelMode.IOM), int(KernelMode.CPI)


def refine_batch(
    pseudo: torch.Tensor,
    segments: Segments,
    mode: int,
    t_iom: float,
    under: float | None,
    over: float | None,
    eps: float,
) -> KernelResult:
    """Torch twin of :func:`samrefine.kernels.numba_cpu.refine_batch`.

    ``pseudo`` is a ``(B, H, W)`` uint8 {0, 1} tensor on the device of ``segments`` (int64
    tensors with ``seg_mask`` and ``mask_image`` set, from ``ProposalBatch.segments(device)``).
    """
    seg_mask, mask_image = segments.seg_mask, segments.mask_image
    dev = pseudo.device
    n_img, h, w = pseudo.shape
    n_masks = segments.area.shape[0]
    # per-column prefix sums: cum[b, y, x] = foreground pixels in rows [0, y) of column x
    cum = torch.zeros(n_img, h + 1, w, dtype=torch.int32, device=dev)
    torch.cumsum(pseudo, dim=1, dtype=torch.int32, out=cum[:, 1:])
    p_area = cum[:, -1].sum(1, dtype=torch.int64)  # (B,)
    seg_img = mask_image[seg_mask]  # (G,)
    col = seg_img * ((h + 1) * w) + segments.x
    cf = cum.view(-1)
    seg_inter = (cf[col + segments.y1 * w] - cf[col + segments.y0 * w]).to(torch.int64)
    inter = torch.zeros(n_masks, dtype=torch.int64, device=dev)
    inter.index_add_(0, seg_mask, seg_inter)  # (M,)
    p_area_f = p_area.to(torch.float64)

    t = inter.to(torch.float64)
    a = segments.area.to(torch.float64)
    pa = p_area_f[mask_image]
    union = pa + a - t
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    iou = torch.where(union > 0, t / union.clamp_min(1), zero)
    s1 = t / (pa + eps)
    s2 = torch.where(a > 0, t / a.clamp_min(1), zero)

    if mode == IOM:
        cand = iou > t_iom
        key = torch.where(cand, iou, torch.full_like(iou, -1.0))
        best = torch.full((n_img,), -1.0, dtype=torch.float64, device=dev)
        best.scatter_reduce_(0, mask_image, key, reduce="amax", include_self=True)
        idx = torch.arange(n_masks, device=dev)
        is_best = cand & (key == best[mask_image])
        chosen = torch.full((n_img,), n_masks, dtype=torch.int64, device=dev)
        chosen.scatter_reduce_(
            0, mask_image, torch.where(is_best, idx, n_masks), reduce="amin", include_self=True
        )
        matched = chosen < n_masks
        chosen = torch.where(matched, chosen, -1)
        selected = torch.zeros(n_masks, dtype=torch.bool, device=dev)
        selected[chosen[matched]] = True
        # index within the image's own proposals
        chosen = torch.where(matched, chosen - segments.mask_offsets[:-1], chosen)
    else:
        selected = torch.zeros(n_masks, dtype=torch.bool, device=dev)
        if under is not None:
            selected |= s1 > under
        if over is not None:
            selected |= s2 > over
        counts = torch.zeros(n_img, dtype=torch.int64, device=dev)
        counts.index_add_(0, mask_image, selected.to(torch.int64))
        matched = counts > 0
        chosen = torch.full((n_img,), -1, dtype=torch.int64, device=dev)

    # difference array down each column over the selected segments, then a cumsum
    sel = selected[seg_mask].to(torch.int32)
    diff = torch.zeros(n_img * (h + 1) * w, dtype=torch.int32, device=dev)
    diff.index_add_(0, col + segments.y0 * w, sel)
    diff.index_add_(0, col + segments.y1 * w, -sel)
    cover = diff.view(n_img, h + 1, w)[:, :h].cumsum(1, dtype=torch.int32) > 0
    masks = torch.where(matched[:, None, None], cover, pseudo.bool())
    return KernelResult(inter, iou, s1, s2, selected, chosen, matched, masks)
