"""Drawing primitives of :mod:`samrefine.viz`: titled panel grids, mask tints, labels, PNGs.

A picture is a row (or grid) of equally sized *panels*, each with a title bar of
:data:`TITLE_HEIGHT` pixels above it and :data:`GAP` pixels of margin around it. All arrays are
``(h, w, 3)`` uint8 RGB; masks are ``(h, w)`` bool. Pillow (an optional extra) is imported on
use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "GAP",
    "TITLE_HEIGHT",
    "as_rgb",
    "centre",
    "compose",
    "default_font",
    "dim",
    "grey_map",
    "label",
    "panel_size",
    "ramp",
    "resize_mask",
    "resize_rgb",
    "save",
    "tint",
]

#: Margin around every panel, pixels.
GAP = 4
#: Height of the title bar above every panel, pixels.
TITLE_HEIGHT = 18

BG = (255, 255, 255)
RED = (230, 40, 40)
GREEN = (30, 200, 60)
YELLOW = (255, 220, 0)
BLUE = (60, 110, 230)
GREY = (150, 150, 150)
#: 20 distinguishable colours for proposals ("tab20" with its two greys replaced).
PALETTE = np.array(
    [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (0, 128, 128),
        (188, 189, 34),
        (23, 190, 207),
        (174, 199, 232),
        (255, 187, 120),
        (152, 223, 138),
        (255, 152, 150),
        (197, 176, 213),
        (196, 156, 148),
        (247, 182, 210),
        (128, 0, 64),
        (219, 219, 141),
        (158, 218, 229),
    ],
    np.uint8,
)


def default_font() -> Any:
    """Pillow's built-in bitmap font (no font file needed)."""
    from PIL import ImageFont

    return ImageFont.load_default()


def panel_size(hw: tuple[int, int], panel: int) -> tuple[int, int]:
    """``(ph, pw)``: ``hw`` scaled so its longer side is ``panel`` pixels."""
    if not isinstance(panel, (int, np.integer)) or panel < 8:
        raise ValueError(f"panel must be an int >= 8 (pixels), got {panel!r}")
    h, w = hw
    s = panel / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def as_rgb(image: Any, hw: tuple[int, int]) -> np.ndarray:
    """``image`` as (H, W, 3) uint8 at ``hw``; None -> mid grey."""
    from PIL import Image

    if image is None:
        return np.full((*hw, 3), 128, np.uint8)
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image must be channels-last (H, W, 3), got {a.shape}; "
            "pass image.permute(1, 2, 0) or np.moveaxis(image, 0, -1)"
        )
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if a.dtype.kind != "f" or (a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1)):
            raise ValueError(
                f"image must be uint8, or float in [0, 1]; got {a.dtype} (un-normalise it first)"
            )
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[:2] != tuple(hw):
        a = np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
    return a


def resize_mask(m: np.ndarray, phw: tuple[int, int]) -> np.ndarray:
    """Nearest (floor) resize of a 2-D array to ``phw``."""
    ys = np.arange(phw[0]) * m.shape[0] // phw[0]
    xs = np.arange(phw[1]) * m.shape[1] // phw[1]
    return m[ys][:, xs]


def resize_rgb(a: np.ndarray, phw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``(h, w, 3)`` uint8 image to ``phw`` (a no-op at that size)."""
    from PIL import Image

    if a.shape[:2] == tuple(phw):
        return a
    return np.asarray(Image.fromarray(a).resize((phw[1], phw[0]), Image.Resampling.BILINEAR))


def _edge(m: np.ndarray) -> np.ndarray:
    """Inner boundary of a bool mask (pixels with a 4-neighbour outside)."""
    p = np.pad(m, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def tint(
    base: np.ndarray, m: np.ndarray, colour: Any, alpha: float = 0.5, outline: bool = True
) -> np.ndarray:
    """``base`` with mask ``m`` blended towards ``colour`` (RGB) by ``alpha``, edge in full."""
    out = base.astype(np.float32)
    c = np.asarray(colour, np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * c
    if outline:
        out[_edge(m)] = c
    return out.astype(np.uint8)


def dim(rgb: np.ndarray, f: float = 0.55) -> np.ndarray:
    """A faded copy of an image, the background of mask panels."""
    return (rgb.astype(np.float32) * f + 255 * (1 - f) * 0.35).astype(np.uint8)


def compose(panels: Sequence[tuple[str, np.ndarray]], cols: int | None = None) -> np.ndarray:
    """Grid of equally sized titled panels, row-major, ``cols`` per row (all in one row)."""
    from PIL import Image, ImageDraw

    n = len(panels)
    cols = n if cols is None else max(1, min(cols, n))
    rows = -(-n // cols)
    ph, pw = panels[0][1].shape[:2]
    cell_h = TITLE_HEIGHT + ph + 2 * GAP
    canvas = Image.new("RGB", (cols * pw + (cols + 1) * GAP, rows * cell_h), BG)
    draw = ImageDraw.Draw(canvas)
    font = default_font()
    for k, (title, arr) in enumerate(panels):
        r, c = divmod(k, cols)
        x = GAP + c * (pw + GAP)
        y = r * cell_h + GAP
        canvas.paste(Image.fromarray(arr), (x, y + TITLE_HEIGHT))
        draw.text((x + 1, y + 2), _fit(draw, title, font, pw), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` shortened (ending in ``~``) to fit ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-2] + "~" if len(text) > 2 else ""
    return text


def label(
    arr: np.ndarray, points: Sequence[tuple[float, float]], texts: Sequence[str]
) -> np.ndarray:
    """Write small labels (white on black boxes) centred at (y, x) points."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    font = default_font()
    drawn: list[tuple[int, int, int, int]] = []
    for (y, x), t in zip(points, texts):
        w = draw.textlength(t, font=font)
        x0, y0 = int(x - w / 2) - 1, int(y) - 6
        box = (x0, y0, int(x0 + w + 2), y0 + 12)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in drawn):
            continue  # would hide another label
        drawn.append(box)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x0 + 1, y0), t, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def save(arr: np.ndarray, path: str | os.PathLike | None) -> None:
    """Write ``arr`` as a PNG at ``path`` (creating its folder); nothing when ``path`` is None."""
    from PIL import Image

    if path is None:
        return
    d = os.path.dirname(os.fspath(path))
    if d:
        os.makedirs(d, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", optimize=True)


def centre(m: np.ndarray) -> tuple[float, float] | None:
    """A point inside the mask near its centroid (y, x), or None for an empty mask."""
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return None
    cy, cx = ys.mean(), xs.mean()
    k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(ys[k]), float(xs[k])


def ramp(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Blue (lo) -> white -> red (hi) colour map of an array, (..., 3) uint8."""
    t = np.clip((np.asarray(v, np.float64) - lo) / (hi - lo), 0, 1)[..., None]
    blue, white, red = (
        np.array(c, np.float64) for c in ((40, 70, 200), (250, 250, 250), (200, 30, 30))
    )
    out = np.where(t < 0.5, blue + (white - blue) * (t * 2), white + (red - white) * (t * 2 - 1))
    return out.astype(np.uint8)


def grey_map(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Black (lo) -> white (hi) map of a 2-D array, (h, w, 3) uint8."""
    t = np.clip((v - lo) / (hi - lo), 0, 1)
    g = (t * 255 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)
