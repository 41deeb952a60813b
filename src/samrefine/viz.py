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

import os
from collections.abc import Sequence

import numpy as np

from . import _config
from ._common import mask_iou
from .proposals import Proposals

__all__ = ["GAP", "TITLE_HEIGHT", "audit_bars", "overlay_refinement", "proposal_grid", "pwa_map"]

#: Margin around every panel, pixels.
GAP = 4
#: Height of the title bar above every panel, pixels.
TITLE_HEIGHT = 18

_BG = (255, 255, 255)
_RED = (230, 40, 40)
_GREEN = (30, 200, 60)
_YELLOW = (255, 220, 0)
_BLUE = (60, 110, 230)
_GREY = (150, 150, 150)
#: 20 distinguishable colours for proposals ("tab20" with its two greys replaced).
_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (0, 128, 128), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (128, 0, 64), (219, 219, 141), (158, 218, 229),
], np.uint8)


# ------------------------------------------------------------------------------ helpers


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _panel_size(hw, panel: int) -> tuple[int, int]:
    if not isinstance(panel, (int, np.integer)) or panel < 8:
        raise ValueError(f"panel must be an int >= 8 (pixels), got {panel!r}")
    h, w = hw
    s = panel / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _as_rgb(image, hw) -> np.ndarray:
    """``image`` as (H, W, 3) uint8 at ``hw``; None -> mid grey."""
    from PIL import Image

    if image is None:
        return np.full((*hw, 3), 128, np.uint8)
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be channels-last (H, W, 3), got {a.shape}; "
                         "pass image.permute(1, 2, 0) or np.moveaxis(image, 0, -1)")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if a.dtype.kind != "f" or (a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1)):
            raise ValueError(f"image must be uint8, or float in [0, 1]; got {a.dtype} "
                             "(un-normalise it first)")
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[:2] != tuple(hw):
        a = np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BILINEAR))
    return a


def _mask(x, name: str, hw=None) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be one (H, W) mask, got shape {a.shape}")
    if a.dtype != np.bool_:
        if a.size and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1 (or be bool); threshold "
                             "probabilities first (prob > 0.5)")
        a = a.astype(bool)
    if hw is not None and a.shape != tuple(hw):
        raise ValueError(f"{name} is {a.shape[0]}x{a.shape[1]} but the pseudo-label is "
                         f"{hw[0]}x{hw[1]}; resize it (nearest) first")
    return a


def _resize_mask(m: np.ndarray, phw) -> np.ndarray:
    """Nearest (floor) resize of a 2-D array to ``phw``."""
    ys = (np.arange(phw[0]) * m.shape[0] // phw[0])
    xs = (np.arange(phw[1]) * m.shape[1] // phw[1])
    return m[ys][:, xs]


def _resize_rgb(a: np.ndarray, phw) -> np.ndarray:
    from PIL import Image

    if a.shape[:2] == tuple(phw):
        return a
    return np.asarray(Image.fromarray(a).resize((phw[1], phw[0]), Image.BILINEAR))


def _edge(m: np.ndarray) -> np.ndarray:
    """Inner boundary of a bool mask (pixels with a 4-neighbour outside)."""
    p = np.pad(m, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def _tint(base: np.ndarray, m: np.ndarray, colour, alpha: float = 0.5,
          outline: bool = True) -> np.ndarray:
    out = base.astype(np.float32)
    c = np.asarray(colour, np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * c
    if outline:
        out[_edge(m)] = c
    return out.astype(np.uint8)


def _dim(rgb: np.ndarray, f: float = 0.55) -> np.ndarray:
    return (rgb.astype(np.float32) * f + 255 * (1 - f) * 0.35).astype(np.uint8)


def _compose(panels: Sequence[tuple[str, np.ndarray]], cols: int | None = None) -> np.ndarray:
    """Grid of equally sized titled panels, row-major, ``cols`` per row (all in one row)."""
    from PIL import Image, ImageDraw

    n = len(panels)
    cols = n if cols is None else max(1, min(cols, n))
    rows = -(-n // cols)
    ph, pw = panels[0][1].shape[:2]
    cell_h = TITLE_HEIGHT + ph + 2 * GAP
    canvas = Image.new("RGB", (cols * pw + (cols + 1) * GAP, rows * cell_h), _BG)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for k, (title, arr) in enumerate(panels):
        r, c = divmod(k, cols)
        x = GAP + c * (pw + GAP)
        y = r * cell_h + GAP
        canvas.paste(Image.fromarray(arr), (x, y + TITLE_HEIGHT))
        draw.text((x + 1, y + 2), _fit(draw, title, font, pw), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _fit(draw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-2] + "~" if len(text) > 2 else ""
    return text


def _label(arr: np.ndarray, points, texts) -> np.ndarray:
    """Write small labels (white on black boxes) centred at (y, x) points."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    font = _font()
    drawn: list[tuple[int, int, int, int]] = []
    for (y, x), t in zip(points, texts):
        w = draw.textlength(t, font=font)
        x0, y0 = int(x - w / 2) - 1, int(y) - 6
        box = (x0, y0, int(x0 + w + 2), y0 + 12)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
               for b in drawn):
            continue  # would hide another label
        drawn.append(box)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x0 + 1, y0), t, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def _save(arr: np.ndarray, path) -> None:
    from PIL import Image

    if path is None:
        return
    d = os.path.dirname(os.fspath(path))
    if d:
        os.makedirs(d, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", optimize=True)


def _centre(m: np.ndarray):
    """A point inside the mask near its centroid (y, x), or None for an empty mask."""
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    cy, cx = ys.mean(), xs.mean()
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(ys[k]), float(xs[k])


# ------------------------------------------------------------------------------ public


def overlay_refinement(image, pseudo, proposals: Proposals, path=None,
                       strategies: Sequence[str] = ("iom", "cpi"), *, gt=None,
                       iom_thresh: float = _config.IOM_THRESH, under: float = _config.CPI_UNDER,
                       over: float = _config.CPI_OVER, panel: int = 256, max_labels: int = 8,
                       title: str | None = None) -> np.ndarray:
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
        Thresholds (strict); CPI-U uses ``under`` only, CPI-O ``over`` only.
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
    from .match import refine

    if not isinstance(proposals, Proposals):
        raise TypeError(f"proposals must be a samrefine.Proposals (one image), got "
                        f"{type(proposals).__name__}")
    p = _mask(pseudo, "pseudo")
    hw = p.shape
    if tuple(proposals.size) != hw:
        raise ValueError(f"proposals are {proposals.size[0]}x{proposals.size[1]} but pseudo is "
                         f"{hw[0]}x{hw[1]}; pass proposals.resize({hw})")
    g = None if gt is None else _mask(gt, "gt", hw)
    phw = _panel_size(hw, panel)
    rgb = _resize_rgb(_as_rgb(image, hw), phw)
    base = _dim(rgb)
    sp = _resize_mask(p, phw)
    suffix = "" if g is None else f"  IoU {mask_iou(p, g):.3f}"
    panels = [(title or "image", rgb),
              ("pseudo-label" + suffix, _tint(base, sp, _RED))]
    for s in strategies:
        if s == "iom":
            kw = {"iom_thresh": iom_thresh}
        elif s in ("cpi", "cpi-u", "cpi-o"):
            kw = {"under": None if s == "cpi-o" else under, "over": None if s == "cpi-u" else over}
        else:
            raise ValueError(f"unknown strategy {s!r}; valid: iom, cpi, cpi-u, cpi-o")
        ref = refine(p, proposals, s, **kw)
        sel = ref.selected[0]
        matched = bool(np.asarray(ref.matched)[0])
        sel_panel = base.copy()
        if sel.size:
            dense = proposals[sel].to_dense()
            order = np.argsort(-dense.sum(axis=(1, 2)), kind="stable")
            points, texts = [], []
            for j in order:  # large first, so small parts stay visible on top
                m = _resize_mask(dense[j], phw)
                sel_panel = _tint(sel_panel, m, _PALETTE[sel[j] % len(_PALETTE)], 0.55)
            for j in order[:max_labels]:
                c = _centre(_resize_mask(dense[j], phw))
                if c is not None:
                    points.append(c)
                    texts.append(str(int(sel[j])))
            sel_panel = _label(sel_panel, points, texts)
        panels.append((f"{s}: {sel.size} selected", sel_panel))
        r = _mask(np.asarray(ref.masks), "refined")
        if matched:
            t = f"{s} refined" + ("" if g is None else f"  IoU {mask_iou(r, g):.3f}")
            panels.append((t, _tint(base, _resize_mask(r, phw), _GREEN)))
        else:
            panels.append((f"{s}: unmatched -> PWA", _tint(base, sp, _RED, 0.25)))
    if g is not None:
        panels.append(("ground truth", _tint(base, _resize_mask(g, phw), _YELLOW, 0.45)))
    out = _compose(panels)
    _save(out, path)
    return out


def proposal_grid(image, proposals: Proposals, path=None, *, max_masks: int = 47,
                  cols: int = 8, panel: int = 128, order: str = "area") -> np.ndarray:
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
        raise TypeError(f"proposals must be a samrefine.Proposals, got "
                        f"{type(proposals).__name__}")
    if order not in ("area", "index"):
        raise ValueError(f"order must be 'area' or 'index', got {order!r}")
    if not isinstance(max_masks, int) or max_masks < 0:
        raise ValueError(f"max_masks must be an int >= 0, got {max_masks!r}")
    if not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive int, got {cols!r}")
    hw = proposals.size
    phw = _panel_size(hw, panel)
    rgb = _resize_rgb(_as_rgb(image, hw), phw)
    base = _dim(rgb)
    area = proposals.area
    idx = np.argsort(-area, kind="stable") if order == "area" else np.arange(len(proposals))
    shown = idx[:max_masks]
    everything = rgb.copy()
    for k in np.argsort(-area, kind="stable"):
        m = _resize_mask(proposals[int(k)].to_dense()[0], phw)
        everything = _tint(everything, m, _PALETTE[k % len(_PALETTE)], 0.6)
    panels = [(f"all {len(proposals)} proposals", everything)]
    dense = proposals[shown].to_dense() if shown.size else np.zeros((0, *hw), bool)
    for k, m in zip(shown, dense):
        share = area[k] / (hw[0] * hw[1])
        panels.append((f"#{k}  {share:.1%}",
                       _tint(base, _resize_mask(m, phw), _PALETTE[k % len(_PALETTE)], 0.6)))
    out = _compose(panels, cols)
    _save(out, path)
    return out


def _ramp(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Blue (lo) -> white -> red (hi) colour map of an array, (..., 3) uint8."""
    t = np.clip((np.asarray(v, np.float64) - lo) / (hi - lo), 0, 1)[..., None]
    blue, white, red = (np.array(c, np.float64) for c in ((40, 70, 200), (250, 250, 250),
                                                          (200, 30, 30)))
    out = np.where(t < 0.5, blue + (white - blue) * (t * 2), white + (red - white) * (t * 2 - 1))
    return out.astype(np.uint8)


def _curve_panel(phw, gamma, mu, var) -> np.ndarray:
    """Psi(p) for p in [0, 1] drawn as a line, with axes at 0 and gamma."""
    from PIL import Image, ImageDraw

    from .pwa import pwa_weight

    h, w = phw
    im = Image.new("RGB", (w, h), _BG)
    draw = ImageDraw.Draw(im)
    m = max(6, min(h, w) // 10)
    p = np.linspace(0, 1, 201)
    psi = np.asarray(pwa_weight(p, gamma, mu, var))
    top = max(float(psi.max()), gamma, 1e-6)
    xs = m + p * (w - 2 * m)
    ys = (h - m) - np.clip(psi, 0, None) / top * (h - 2 * m)
    draw.line([(m, h - m), (w - m, h - m)], fill=_GREY)
    draw.line([(m, m), (m, h - m)], fill=_GREY)
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_BLUE, width=2)
    font = _font()
    draw.text((m + 2, h - m - 12), "0", fill=(0, 0, 0), font=font)
    draw.text((w - m - 8, h - m - 12), "1", fill=(0, 0, 0), font=font)
    draw.text((m + 4, m), f"max {psi.max():.3f}", fill=(0, 0, 0), font=font)
    draw.text((w // 2 - 20, int(ys[100]) - 14), f"{psi[100]:.3f}", fill=(0, 0, 0), font=font)
    return np.asarray(im)


def pwa_map(prob, path=None, *, image=None, gamma: float = 1.3, mu: float = 0.5,
            var: float = 0.1, panel: int = 256) -> np.ndarray:
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
    from .pwa import pwa_weight

    a = np.asarray(prob.detach().cpu() if hasattr(prob, "detach") else prob)
    if a.ndim != 2 or a.dtype.kind != "f":
        raise ValueError(f"prob must be one (H, W) float map in [0, 1], got {a.dtype} "
                         f"{a.shape}")
    psi = np.asarray(pwa_weight(a, gamma, mu, var))  # validates the values
    phw = _panel_size(a.shape, panel)
    panels = []
    if image is not None:
        panels.append(("image", _resize_rgb(_as_rgb(image, a.shape), phw)))
    pseudo = a > 0.5
    panels += [
        ("teacher probability", _ramp(_resize_mask(a, phw), 0, 1)),
        ("pseudo-label (p > 0.5)", _tint(np.full((*phw, 3), 235, np.uint8),
                                        _resize_mask(pseudo, phw), _RED, 0.7)),
        (f"PWA weight (0 .. {gamma:g})", _grey(_resize_mask(psi, phw), 0, gamma)),
        (f"Psi(p), gamma {gamma:g} var {var:g}", _curve_panel(phw, gamma, mu, var)),
    ]
    out = _compose(panels)
    _save(out, path)
    return out


def _grey(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((v - lo) / (hi - lo), 0, 1)
    g = (t * 255 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def audit_bars(report, path=None, *, width: int = 640, bar_height: int = 26) -> np.ndarray:
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
    im = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(im)
    font = _font()
    draw.text((GAP, 3), f"corrections per strategy, {report.n_samples} samples", fill=(0, 0, 0),
              font=font)
    colours = (_GREEN, _RED, _GREY, _BLUE)
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
                    draw.text((round(x) + 3, y + bar_height // 2 - 6), str(v),
                              fill=(255, 255, 255), font=font)
            x += w
    y = TITLE_HEIGHT + len(stats) * (bar_height + GAP) + GAP
    x = x0
    for c, name in zip(colours, names):
        draw.rectangle((x, y + 6, x + 12, y + 18), fill=c)
        draw.text((x + 16, y + 6), name, fill=(0, 0, 0), font=font)
        x += 24 + int(draw.textlength(name, font=font))
    out = np.asarray(im)
    _save(out, path)
    return out


# ------------------------------------------------------------------------------ CLI


def _cmd_overlay(args) -> int:
    from .audit import _load_inputs, _parse_list

    inp = _load_inputs(args)
    n = len(inp["pseudo"])
    idx = _parse_list(args.index, int) if args.index else tuple(range(min(n, 4)))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"--index {bad} out of range: the data has {n} samples (0..{n - 1})")
    strategies = _parse_list(args.strategies)
    for i in idx:
        p = inp["pseudo"][i]
        if args.prob_thresh is not None:
            p = p > args.prob_thresh
        image = None if inp["image"] is None else inp["image"][i]
        path = os.path.join(args.out, f"overlay_{i:05d}.png")
        overlay_refinement(image, p, inp["proposals"][i], path, strategies, gt=inp["gt"][i],
                           iom_thresh=args.iom_thresh, under=args.under, over=args.over,
                           panel=args.panel, title=f"sample {i}")
        print(path)
    return 0


def _cmd_grid(args) -> int:
    from .audit import _load_proposals, demo_data

    if args.demo:
        d = demo_data(args.photo, samples=1, size=args.size, seed=args.seed)
        image, props = d["image"], d["library"]
    else:
        if not args.proposals and not args.library:
            raise ValueError("give --proposals FILE (.npz or .json), --library PATH with "
                             "--image-id, or --demo")
        image = None
        if args.image:
            from PIL import Image

            image = np.asarray(Image.open(args.image).convert("RGB"))
        hw = None if image is None else image.shape[:2]
        if args.library:
            from .library import ProposalLibrary

            if args.image_id is None:
                raise ValueError("--library needs --image-id ID")
            with ProposalLibrary.open(args.library) as lib:
                props = lib[args.image_id]
        else:
            props = _load_single(args.proposals, args.index, hw, _load_proposals)
    path = os.path.join(args.out, "proposals.png")
    proposal_grid(image, props, path, max_masks=args.max_masks, cols=args.cols,
                  panel=args.panel, order=args.order)
    print(path)
    return 0


def _load_single(path: str, index: int, hw, loader) -> Proposals:
    """One image's proposals from a .json list of RLE dicts or an .npz ``proposals`` stack."""
    import json

    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw and isinstance(raw[0], list):  # a list per sample: take --index
            raw = raw[index]
        if not raw and hw is None:
            raise ValueError(f"{path}: no proposals and no --image to take the size from")
        return Proposals.from_rle(raw, size=None if raw else hw)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    if "proposals" not in data:
        raise ValueError(f"{path}: needs an array 'proposals' (N, h, w) bool")
    if "proposal_offsets" in data:
        off = data["proposal_offsets"]
        return loader(path, data, len(off) - 1, data["proposals"].shape[1:])[index]
    return Proposals.from_dense(data["proposals"])


def add_cli(sub) -> None:
    """Register ``samrefine viz overlay|grid`` on an ``argparse`` sub-parser collection."""
    v = sub.add_parser("viz", help="pictures: refinement overlays (Fig. 5) and proposal grids",
                       description="Write PNG pictures of refinement and of proposals.")
    vs = v.add_subparsers(dest="viz_command", required=True, metavar="PICTURE")
    o = vs.add_parser(
        "overlay", help="image | pseudo-label | selected proposals and refined mask per strategy",
        description="DATA is the .npz of 'samrefine audit' ('pseudo', 'gt', optional 'image', "
        "'proposals' + 'proposal_offsets' unless --proposals). Writes OUT/overlay_<i>.png.")
    o.add_argument("data", nargs="?", metavar="DATA")
    o.add_argument("--proposals", metavar="FILE", help="as in 'samrefine audit'")
    o.add_argument("--library", metavar="PATH", help="as in 'samrefine audit'")
    o.add_argument("--demo", action="store_true", help="use generated demo data")
    o.add_argument("--photo", default="coffee")
    o.add_argument("--samples", type=int, default=4)
    o.add_argument("--size", type=int, default=256)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--index", default=None, help="comma-separated sample indices (default the "
                   "first four)")
    o.add_argument("--strategies", default="iom,cpi")
    o.add_argument("--iom-thresh", type=float, default=_config.IOM_THRESH)
    o.add_argument("--under", type=float, default=_config.CPI_UNDER)
    o.add_argument("--over", type=float, default=_config.CPI_OVER)
    o.add_argument("--prob-thresh", type=float, default=None)
    o.add_argument("--panel", type=int, default=256, help="panel size, pixels")
    o.add_argument("--out", default="samrefine-viz", help="output directory")
    o.set_defaults(func=_cmd_overlay)
    g = vs.add_parser(
        "grid", help="every proposal of one image",
        description="Write OUT/proposals.png: all proposals, then one panel per proposal.")
    g.add_argument("--proposals", metavar="FILE",
                   help=".json (a list of COCO RLE dicts, or one list per sample) or .npz "
                   "('proposals' (N, h, w), optionally 'proposal_offsets')")
    g.add_argument("--library", metavar="PATH", help="a ProposalLibrary; with --image-id")
    g.add_argument("--image-id", type=int, help="the library image to show")
    g.add_argument("--index", type=int, default=0, help="sample, when FILE holds several")
    g.add_argument("--image", metavar="FILE", help="the image (PNG/JPEG), any size")
    g.add_argument("--demo", action="store_true", help="a demo photo's classical proposals")
    g.add_argument("--photo", default="coffee")
    g.add_argument("--size", type=int, default=256)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-masks", type=int, default=47)
    g.add_argument("--cols", type=int, default=8)
    g.add_argument("--panel", type=int, default=128)
    g.add_argument("--order", choices=("area", "index"), default="area")
    g.add_argument("--out", default="samrefine-viz", help="output directory")
    g.set_defaults(func=_cmd_grid)
