"""Pictures of what refinement does: overlays, proposal grids, PWA maps, correction bars.

Format
------
Every function returns the picture as an ``(H_out, W_out, 3)`` uint8 RGB array and, given a
``path``, also writes it as a PNG (Pillow only: no matplotlib). Pictures are rows of *panels*
of one size: the input's ``(H, W)`` scaled so its longer side is ``panel`` pixels,
``(ph, pw) = (round(H s), round(W s))`` with ``s = panel / max(H, W)``. Each panel has a title
bar of :data:`TITLE_HEIGHT` pixels above it and :data:`GAP` pixels of margin around it, so a
row of ``n`` panels is ``n pw + (n + 1) GAP`` wide and ``TITLE_HEIGHT + ph + 2 GAP`` high.

Colours: pseudo-label red, refined mask green, ground truth yellow outline; each selected
proposal gets its own colour and its index (within the image's proposals) at its centre.

Example::

    sr.overlay_refinement(image, pseudo, props, "fig5.png", strategies=("iom", "cpi"), gt=gt)
    sr.proposal_grid(image, props, "proposals.png", max_masks=32)

Cost: ``O(panels x ph x pw)``; masks are decoded only for the proposals drawn.

Contents: :func:`overlay_refinement`, :func:`proposal_grid`, :func:`pwa_map`,
:func:`audit_bars`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _config
from ._common import mask_iou
from ._draw import (
    BG,
    BLUE,
    GAP,
    GREEN,
    GREY,
    PALETTE,
    RED,
    TITLE_HEIGHT,
    YELLOW,
    as_rgb,
    centre,
    compose,
    default_font,
    dim,
    grey_map,
    label,
    panel_size,
    ramp,
    resize_mask,
    resize_rgb,
    save,
    tint,
)
from .audit_report import AuditReport
from .match import STRATEGIES, refine
from .proposals import Proposals

__all__ = ["GAP", "TITLE_HEIGHT", "audit_bars", "overlay_refinement", "proposal_grid", "pwa_map"]


def _mask(x, name: str, hw=None) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be one (H, W) mask, got shape {a.shape}")
    if a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(
                f"{name} must hold only 0 and 1 (or be bool); threshold "
                "probabilities first (prob > 0.5)"
            )
        a = a.astype(bool)
    if hw is not None and a.shape != tuple(hw):
        raise ValueError(
            f"{name} is {a.shape[0]}x{a.shape[1]} but the pseudo-label is "
            f"{hw[0]}x{hw[1]}; resize it (nearest) first"
        )
    return a


# ------------------------------------------------------------------------------ public


def overlay_refinement(
    image,
    pseudo,
    proposals: Proposals,
    path=None,
    strategies: Sequence[str] = ("iom", "cpi"),
    *,
    gt=None,
    iom_thresh: float = _config.IOM_THRESH,
    under: float = _config.CPI_UNDER,
    over: float = _config.CPI_OVER,
    panel: int = 256,
    max_labels: int = 8,
    title: str | None = None,
) -> np.ndarray:
    """Image, pseudo-label, and per strategy the selected proposals and the refined mask.

    The picture of the paper's Fig. 5, from a real :func:`samrefine.refine` call. Panels, left
    to right: the image; the pseudo-label (red); for each strategy, the selected proposals
    (one colour each, labelled with their index) and the refined mask (green; the title gives
    its IoU with ``gt`` when given, or "unmatched -> PWA"); the ground truth (yellow) if given.

    Parameters
    ----------
    image : np.ndarray or None
        ``(h, w, 3)`` uint8 RGB (or float in [0, 1], or ``(h, w)`` grey) at any size; it is
        resized (bilinear) to the pseudo-label's size. None draws on grey.
    pseudo : np.ndarray or torch.Tensor, (H, W)
        The pseudo-label, bool or {0, 1}.
    proposals : Proposals
        The image's proposals at ``(H, W)`` (``Proposals.resize``).
    path : str or os.PathLike, optional
        Where to write the PNG.
    strategies : sequence of str
        Strategies to show, each as two panels; default IOM and CPI (as Fig. 5).
    gt : np.ndarray, (H, W), optional
        Ground truth: adds a panel and the IoUs in the titles.
    iom_thresh, under, over : float
        Thresholds (strict); each strategy reads those :data:`samrefine.STRATEGIES` lists for
        it (CPI-U ``under`` only, CPI-O ``over`` only).
    panel : int
        Longer side of every panel, pixels.
    max_labels : int
        At most this many proposal indices are written per panel (largest proposals first).
    title : str, optional
        Title of the image panel (e.g. the referring expression); default "image".

    Returns
    -------
    np.ndarray, (TITLE_HEIGHT + ph + 2 GAP, n pw + (n + 1) GAP, 3) uint8
        ``n = 2 + 2 len(strategies) + (gt is not None)`` panels.
    """
    if not isinstance(proposals, Proposals):
        raise TypeError(
            f"proposals must be a samrefine.Proposals (one image), got {type(proposals).__name__}"
        )
    p = _mask(pseudo, "pseudo")
    hw = p.shape
    if tuple(proposals.size) != hw:
        raise ValueError(
            f"proposals are {proposals.size[0]}x{proposals.size[1]} but pseudo is "
            f"{hw[0]}x{hw[1]}; pass proposals.resize({hw})"
        )
    g = None if gt is None else _mask(gt, "gt", hw)
    phw = panel_size(hw, panel)
    rgb = resize_rgb(as_rgb(image, hw), phw)
    base = dim(rgb)
    sp = resize_mask(p, phw)
    suffix = "" if g is None else f"  IoU {mask_iou(p, g):.3f}"
    panels = [(title or "image", rgb), ("pseudo-label" + suffix, tint(base, sp, RED))]
    given: dict[str, Any] = {"iom_thresh": iom_thresh, "under": under, "over": over}
    for s in strategies:
        reads = STRATEGIES[s].thresholds if s in STRATEGIES else ()  # refine rejects unknown s
        ref = refine(p, proposals, s, **{k: given[k] for k in reads})
        sel = ref.selected[0]
        matched = bool(np.asarray(ref.matched)[0])
        sel_panel = base.copy()
        if sel.size:
            dense = proposals[sel].to_dense()
            order = np.argsort(-dense.sum(axis=(1, 2)), kind="stable")
            points, texts = [], []
            for j in order:  # large first, so small parts stay visible on top
                m = resize_mask(dense[j], phw)
                sel_panel = tint(sel_panel, m, PALETTE[sel[j] % len(PALETTE)], 0.55)
            for j in order[:max_labels]:
                c = centre(resize_mask(dense[j], phw))
                if c is not None:
                    points.append(c)
                    texts.append(str(int(sel[j])))
            sel_panel = label(sel_panel, points, texts)
        panels.append((f"{s}: {sel.size} selected", sel_panel))
        r = _mask(np.asarray(ref.masks), "refined")
        if matched:
            t = f"{s} refined" + ("" if g is None else f"  IoU {mask_iou(r, g):.3f}")
            panels.append((t, tint(base, resize_mask(r, phw), GREEN)))
        else:
            panels.append((f"{s}: unmatched -> PWA", tint(base, sp, RED, 0.25)))
    if g is not None:
        panels.append(("ground truth", tint(base, resize_mask(g, phw), YELLOW, 0.45)))
    out = compose(panels)
    save(out, path)
    return out


def proposal_grid(
    image,
    proposals: Proposals,
    path=None,
    *,
    max_masks: int = 47,
    cols: int = 8,
    panel: int = 128,
    order: str = "area",
) -> np.ndarray:
    """A library's proposals for one image: all of them, then one panel per proposal.

    The first panel paints every proposal (largest first, so smaller ones lie on top: SAM's
    "segment everything" view); each following panel highlights one proposal on the dimmed
    image, titled with its index and its share of the image.

    Parameters
    ----------
    image : np.ndarray or None
        ``(h, w, 3)`` uint8 RGB at any size (resized to the proposals' size), or None (grey).
    proposals : Proposals
        The image's proposals.
    path : str or os.PathLike, optional
        Where to write the PNG.
    max_masks : int
        At most this many single-proposal panels.
    cols : int
        Panels per row.
    panel : int
        Longer side of every panel, pixels.
    order : {"area", "index"}
        Show the largest proposals first, or in library order.

    Returns
    -------
    np.ndarray, (rows (TITLE_HEIGHT + ph + 2 GAP), c pw + (c + 1) GAP, 3) uint8
        ``k = 1 + min(len(proposals), max_masks)`` panels, ``c = min(cols, k)`` per row,
        ``rows = ceil(k / c)``.
    """
    if not isinstance(proposals, Proposals):
        raise TypeError(f"proposals must be a samrefine.Proposals, got {type(proposals).__name__}")
    if order not in ("area", "index"):
        raise ValueError(f"order must be 'area' or 'index', got {order!r}")
    if not isinstance(max_masks, int) or max_masks < 0:
        raise ValueError(f"max_masks must be an int >= 0, got {max_masks!r}")
    if not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive int, got {cols!r}")
    hw = proposals.size
    phw = panel_size(hw, panel)
    rgb = resize_rgb(as_rgb(image, hw), phw)
    base = dim(rgb)
    area = proposals.area
    idx = np.argsort(-area, kind="stable") if order == "area" else np.arange(len(proposals))
    shown = idx[:max_masks]
    everything = rgb.copy()
    for k in np.argsort(-area, kind="stable"):
        m = resize_mask(proposals[int(k)].to_dense()[0], phw)
        everything = tint(everything, m, PALETTE[k % len(PALETTE)], 0.6)
    panels = [(f"all {len(proposals)} proposals", everything)]
    dense = proposals[shown].to_dense() if shown.size else np.zeros((0, *hw), bool)
    for k, m in zip(shown, dense):
        share = area[k] / (hw[0] * hw[1])
        panels.append(
            (f"#{k}  {share:.1%}", tint(base, resize_mask(m, phw), PALETTE[k % len(PALETTE)], 0.6))
        )
    out = compose(panels, cols)
    save(out, path)
    return out


def _curve_panel(phw, gamma, mu, var) -> np.ndarray:
    """Psi(p) for p in [0, 1] drawn as a line, with axes at 0 and gamma."""
    from PIL import Image, ImageDraw

    from .pwa import pwa_weight  # imports torch: on use, so ``import samrefine`` stays light

    h, w = phw
    im = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(im)
    m = max(6, min(h, w) // 10)
    p = np.linspace(0, 1, 201)
    psi = np.asarray(pwa_weight(p, gamma, mu, var))
    top = max(float(psi.max()), gamma, 1e-6)
    xs = m + p * (w - 2 * m)
    ys = (h - m) - np.clip(psi, 0, None) / top * (h - 2 * m)
    draw.line([(m, h - m), (w - m, h - m)], fill=GREY)
    draw.line([(m, m), (m, h - m)], fill=GREY)
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=BLUE, width=2)
    font = default_font()
    draw.text((m + 2, h - m - 12), "0", fill=(0, 0, 0), font=font)
    draw.text((w - m - 8, h - m - 12), "1", fill=(0, 0, 0), font=font)
    draw.text((m + 4, m), f"max {psi.max():.3f}", fill=(0, 0, 0), font=font)
    draw.text((w // 2 - 20, int(ys[100]) - 14), f"{psi[100]:.3f}", fill=(0, 0, 0), font=font)
    return np.asarray(im)


def pwa_map(
    prob,
    path=None,
    *,
    image=None,
    gamma: float = 1.3,
    mu: float = 0.5,
    var: float = 0.1,
    panel: int = 256,
) -> np.ndarray:
    """Teacher probability, pseudo-label, PWA weight map and the PWA curve, side by side.

    Parameters
    ----------
    prob : np.ndarray or torch.Tensor, (H, W) float in [0, 1]
        Teacher foreground probability.
    path : str or os.PathLike, optional
        Where to write the PNG.
    image : np.ndarray, optional
        ``(h, w, 3)`` uint8 RGB, shown first when given (resized to ``(H, W)``).
    gamma, mu, var : float
        PWA parameters, see :func:`samrefine.pwa_weight` (``var`` is a variance).
    panel : int
        Longer side of every panel, pixels.

    Returns
    -------
    np.ndarray, (TITLE_HEIGHT + ph + 2 GAP, n pw + (n + 1) GAP, 3) uint8
        ``n = 4 + (image is not None)`` panels.
    """
    from .pwa import pwa_weight  # imports torch: on use, so ``import samrefine`` stays light

    a = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob)
    if a.ndim != 2 or a.dtype.kind != "f":
        raise ValueError(f"prob must be one (H, W) float map in [0, 1], got {a.dtype} {a.shape}")
    psi = np.asarray(pwa_weight(a, gamma, mu, var))  # validates the values
    phw = panel_size(a.shape, panel)
    panels = []
    if image is not None:
        panels.append(("image", resize_rgb(as_rgb(image, a.shape), phw)))
    pseudo = a > 0.5
    panels += [
        ("teacher probability", ramp(resize_mask(a, phw), 0, 1)),
        (
            "pseudo-label (p > 0.5)",
            tint(np.full((*phw, 3), 235, np.uint8), resize_mask(pseudo, phw), RED, 0.7),
        ),
        (f"PWA weight (0 .. {gamma:g})", grey_map(resize_mask(psi, phw), 0, gamma)),
        (f"Psi(p), gamma {gamma:g} var {var:g}", _curve_panel(phw, gamma, mu, var)),
    ]
    out = compose(panels)
    save(out, path)
    return out


def audit_bars(
    report: AuditReport, path=None, *, width: int = 640, bar_height: int = 26
) -> np.ndarray:
    """Stacked bars of positive / negative / tie / no-correction counts per strategy (Fig. 6).

    Parameters
    ----------
    report : AuditReport
        From :func:`samrefine.audit`.
    path : str or os.PathLike, optional
        Where to write the PNG.
    width : int
        Picture width, pixels.
    bar_height : int
        Height of one strategy's bar, pixels.

    Returns
    -------
    np.ndarray, (TITLE_HEIGHT + (len(strategies) + 1) (bar_height + GAP) + GAP, width, 3) uint8
        One bar per audited strategy plus a legend row.
    """
    from PIL import Image, ImageDraw

    stats = list(getattr(report, "strategies", {}).values())
    if not stats:
        raise ValueError("report has no strategies; pass the AuditReport from samrefine.audit")
    if not isinstance(width, int) or width < 200:
        raise ValueError(f"width must be an int >= 200 (pixels), got {width!r}")
    rows = len(stats) + 1
    height = TITLE_HEIGHT + rows * (bar_height + GAP) + GAP
    im = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(im)
    font = default_font()
    draw.text(
        (GAP, 3), f"corrections per strategy, {report.n_samples} samples", fill=(0, 0, 0), font=font
    )
    colours = (GREEN, RED, GREY, BLUE)
    names = ("positive", "negative", "tie", "no correction (PWA)")
    label_w = 90
    x0, x1 = GAP + label_w, width - GAP
    for r, s in enumerate(stats):
        y = TITLE_HEIGHT + r * (bar_height + GAP) + GAP
        draw.text((GAP, y + bar_height // 2 - 6), s.strategy, fill=(0, 0, 0), font=font)
        x = float(x0)
        for c, v in zip(colours, (s.positive, s.negative, s.tie, s.no_correction)):
            w = (x1 - x0) * v / max(s.n, 1)
            if w > 0:
                draw.rectangle((round(x), y, round(x + w) - 1, y + bar_height - 1), fill=c)
                if w > 24:
                    draw.text(
                        (round(x) + 3, y + bar_height // 2 - 6),
                        str(v),
                        fill=(255, 255, 255),
                        font=font,
                    )
            x += w
    y = TITLE_HEIGHT + len(stats) * (bar_height + GAP) + GAP
    x = x0
    for c, name in zip(colours, names):
        draw.rectangle((x, y + 6, x + 12, y + 18), fill=c)
        draw.text((x + 16, y + 6), name, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(name, font=font))
    out = np.asarray(im)
    save(out, path)
    return out
