"""A synthetic multi-class segmentation dataset, written to disk in the Pascal VOC layout.

Five object classes (1 disc, 2 square, 3 triangle, 4 cross, 5 ring; 0 is background) told
apart by **shape**, with colour only a hint: class ``c`` is painted in palette colour ``c - 1``
or ``c`` (disc red or green, square green or blue, ...), so every colour is shared by two
classes. 2-4 objects per image (half-extent 8-17 px, some rotated), about a
third placed against an earlier one so that objects touch and overlap (the later on top; an
occluded object keeps at least 60 % of its area). Backgrounds are textured (stripes,
checkerboard or smooth noise, plus pixel noise); images are 72-104 px a side, JPEG quality 92.

Layout (what :mod:`.data` reads, and ``samrefine build`` builds a library of)::

    root/JPEGImages/000012.jpg
    root/SegmentationClass/000012.png          palette PNG, VOC colours, 0..5
    root/splits/{labeled,unlabeled,val}.txt    UniMatch: "JPEGImages/... SegmentationClass/..."
    root/ImageSets/Segmentation/{labeled,unlabeled,val}.txt   one key a line (VOC style)

Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import polygon as draw_polygon

__all__ = ["CLASSES", "write_synthetic_voc", "voc_palette"]

CLASSES = ("background", "disc", "square", "triangle", "cross", "ring")
_PALETTE_RGB = np.array(
    [
        [215, 35, 35],
        [35, 165, 55],
        [35, 75, 215],
        [240, 210, 30],
        [135, 50, 175],
        [245, 135, 20],
    ],
    np.float32,
)
_MIN_VISIBLE = 0.6


def voc_palette() -> list[int]:
    """Pascal VOC's 256-colour label palette (flat RGB list, as PIL's ``putpalette`` takes)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _shape_mask(cls: int, cx: float, cy: float, r: float, angle: float, h: int, w: int):
    """(H, W) bool mask of one object of class ``cls`` centred at (cx, cy), half-extent r."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if cls in (1, 5):  # disc, ring
        d = np.hypot(xx - cx, yy - cy)
        return (d <= r) & (d >= 0.55 * r) if cls == 5 else d <= r
    if cls == 4:  # cross: two bars, rotated
        c, s = math.cos(angle), math.sin(angle)
        u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
        t = 0.33 * r
        return ((abs(u) <= r) & (abs(v) <= t)) | ((abs(u) <= t) & (abs(v) <= r))
    n, scale = (4, 1.2) if cls == 2 else (3, 1.25)
    start = angle + (math.pi / 4 if cls == 2 else -math.pi / 2)
    a = start + 2 * math.pi * np.arange(n) / n
    rows, cols = draw_polygon(cy + scale * r * np.sin(a), cx + scale * r * np.cos(a), (h, w))
    mask = np.zeros((h, w), bool)
    mask[rows, cols] = True
    return mask


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 textured background in [0, 255]."""
    base = rng.uniform(70, 180) + rng.uniform(-25, 25, size=3)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
        pattern = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(6, 16))
        pattern = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
    else:  # smooth noise: a coarse random grid, bilinear
        coarse = rng.uniform(-1, 1, size=(5, 5)).astype(np.float32)
        pattern = np.asarray(
            Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR), np.float32
        )
    tint = rng.uniform(-1, 1, size=3) * rng.uniform(10, 30)
    return base + pattern[..., None] * tint + rng.normal(0, 6, size=(h, w, 3))


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 and its label (H, W) uint8."""
    h, w = (int(v) for v in rng.integers(72, 105, size=2))
    image = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    placed: list[tuple[float, float, float, np.ndarray]] = []  # cx, cy, r, full mask
    n_target = int(rng.integers(2, 5))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    for _ in range(50 * n_target):
        if len(placed) == n_target:
            break
        r = rng.uniform(8, 17)
        if placed and rng.random() < 0.35:  # against an earlier object
            ox, oy, orad, _ = placed[int(rng.integers(len(placed)))]
            a = rng.uniform(0, 2 * math.pi)
            dist = (orad + r) * rng.uniform(0.75, 1.0)
            cx, cy = ox + dist * math.cos(a), oy + dist * math.sin(a)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if not (r <= cx <= w - r and r <= cy <= h - r):
            continue
        if any(math.hypot(cx - px, cy - py) < 0.6 * (pr + r) for px, py, pr, _ in placed):
            continue
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(cls, cx, cy, r, rng.uniform(-0.4, 0.4), h, w)
        if any((m & ~mask).sum() < _MIN_VISIBLE * m.sum() for *_, m in placed):
            continue  # would hide too much of an earlier object
        colour = _PALETTE_RGB[cls - 1 + int(rng.integers(2))]
        shade = 1.0 + 0.12 * ((xx - cx) + (yy - cy)) / (2 * r)
        fill = colour * shade[..., None] + rng.normal(0, 5, size=(h, w, 3))
        image = np.where(mask[..., None], fill, image)
        label[mask] = cls
        placed.append((cx, cy, r, mask))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_synthetic_voc(
    root: str | Path, *, n_labelled: int, n_unlabelled: int, n_val: int, seed: int = 0
) -> dict[str, list[str]]:
    """Write the dataset (module notes) under ``root``; returns the keys of each split.

    Skips the work when ``root/synthetic.json`` records the same arguments.
    """
    root = Path(root)
    params = {"n_labelled": n_labelled, "n_unlabelled": n_unlabelled, "n_val": n_val, "seed": seed}
    marker = root / "synthetic.json"
    names = ("labeled", "unlabeled", "val")
    if marker.is_file() and json.loads(marker.read_text()).get("params") == params:
        return json.loads(marker.read_text())["splits"]
    for sub in ("JPEGImages", "SegmentationClass", "splits", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    splits: dict[str, list[str]] = {}
    index = 0
    for name, n in zip(names, (n_labelled, n_unlabelled, n_val), strict=True):
        keys = []
        for _ in range(n):
            key = f"{index:06d}"
            index += 1
            image, label = _scene(rng)
            Image.fromarray(image).save(root / "JPEGImages" / f"{key}.jpg", quality=92)
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            png.save(root / "SegmentationClass" / f"{key}.png")
            keys.append(key)
        splits[name] = keys
        (root / "splits" / f"{name}.txt").write_text(
            "".join(f"JPEGImages/{k}.jpg SegmentationClass/{k}.png\n" for k in keys)
        )
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(
            "".join(f"{k}\n" for k in keys)
        )
    marker.write_text(json.dumps({"params": params, "splits": splits}))
    return splits
