"""Plain numpy reference for semantic refinement: a per-region loop over the binary references
of ``naive.py`` (one binary pseudo-label per class or per 8-connected component), composed by
the rules documented in :mod:`samrefine.semantic`. Dense masks, no shared code with samrefine.
"""

import naive
import numpy as np
from scipy import ndimage


def regions_of(labels, per, ignore_index, skip):
    """[(class, component, mask)] ordered by class, then component by first row-major pixel."""
    out = []
    for c in sorted(int(v) for v in np.unique(labels)):
        if (ignore_index is not None and c == ignore_index) or c in skip:
            continue
        m = labels == c
        if per == "class":
            out.append((c, 0, m))
            continue
        lab, n = ndimage.label(m, structure=np.ones((3, 3), int))
        firsts = [int(np.flatnonzero(lab.ravel() == i)[0]) for i in range(1, n + 1)]
        for ci, i in enumerate(np.argsort(firsts)):
            out.append((c, ci, lab == i + 1))
    return out


def refine_semantic(
    labels,
    props,
    strategy="cpi-u",
    per="class",
    ignore_index=255,
    skip=(),
    give_up="ignore",
    iom_thresh=0.5,
    under=0.7,
    over=None,
):
    """labels (H, W) int, props (N, H, W) bool -> (labels, matched map, regions, pairs).

    regions: list of dicts (cls, component, area, matched, score, chosen, selected);
    pairs: list of (region, proposal, inter, iou, s1, s2, selected) with inter > 0.
    """
    regs = regions_of(labels, per, ignore_index, skip)
    rows, pairs, refined = [], [], []
    for ri, (c, comp, m) in enumerate(regs):
        inter, iou, s1, s2 = naive.scores(m, props)
        if strategy == "iom":
            r, matched, chosen = naive.iom(m, props, iom_thresh)
            sel = [chosen] if matched else []
        elif strategy == "none":
            r, matched, chosen, sel = m, False, -1, []
        else:
            r, matched, sel = naive.cpi(m, props, under, over)
            chosen = -1
        score = max(iou[k] for k in sel) if matched else 0.0
        rows.append(
            dict(
                cls=c,
                component=comp,
                area=int(m.sum()),
                matched=matched,
                score=score,
                chosen=chosen,
                selected=sorted(sel),
            )
        )
        refined.append(r)
        for k in range(len(props)):
            if inter[k] > 0:
                pairs.append((ri, k, int(inter[k]), iou[k], s1[k], s2[k], k in sel))
    out = labels.copy()
    matched_map = np.zeros(labels.shape, bool)
    claimed = np.zeros(labels.shape, bool)
    prio = sorted(
        (ri for ri, row in enumerate(rows) if row["matched"]),
        key=lambda ri: (-rows[ri]["score"], ri),
    )
    for ri in prio:  # highest priority first; a pixel goes to the first region claiming it
        pix = refined[ri] & ~claimed
        out[pix] = rows[ri]["cls"]
        matched_map[pix] = True
        claimed |= refined[ri]
    if give_up == "ignore":
        for ri in prio:
            out[regs[ri][2] & ~claimed] = ignore_index
    pairs.sort(key=lambda p: (p[1], p[0]))
    return out, matched_map, rows, pairs
