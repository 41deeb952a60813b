"""Synthetic RefCOCO: coloured shapes on textured backgrounds, in the exact refer layout.

Each scene holds 2-5 objects (circle, square, triangle, cross) of eight colours, three size
classes (half-extent 7-10 %, 12-17 % or 20-28 % of the shorter side) and random positions on
a textured background (stripes, checkerboard or smooth noise, plus pixel noise, saved as JPEG).
About a third of the objects are placed against an earlier one, so objects touch and overlap
(the later one on top); the occluded object's annotation is its visible part, traced as
polygons. Crosses are annotated as two overlapping rectangles (two polygon parts), which
exercises the union-of-parts rule of :func:`.refer.decode_polygons`.

Referring expressions disambiguate within the scene: an object is named by the fewest attributes
that single it out among the objects of its image, e.g. "the circle" (only circle), "the red
square" (only red square), "the small blue triangle" (smaller than every other blue triangle by a
factor of 1.8 or more), "the yellow circle on the left" (leftmost yellow circle by at least 10 % of
the image width), "the green one". Each referent gets 1-3 different sentences.

Output (``dataset="refcoco"``, ``split_by="unc"``), identical in layout and fields to the
official files read by LAVT-RIS / refer.py::

    root/images/mscoco/images/train2014/COCO_train2014_000000000001.jpg   RGB JPEG, 160-320 px
    root/refcoco/instances.json      {"images", "annotations" (polygon segmentation), "categories"}
    root/refcoco/refs(unc).p         pickled list of refs: ref_id, ann_id, image_id, category_id,
                                     split, sentences[{raw, sent, tokens, sent_id}], sent_ids,
                                     file_name

Splits are by image: about 70 % train, 10 % val, 10 % testA, 10 % testB. As in RefCOCO, where
testA holds people and testB other objects, testA keeps only referents that are circles and testB
only the other shapes. With ``split_by="umd"`` (G-Ref layout) testA and testB become one ``test``.
Everything is a deterministic function of ``seed``.

Usage::

    python -m examples.semires_lavt.data.synthetic --out /tmp/synthetic_refcoco --n-images 200

Cost: about 30 ms per image on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage
from skimage import measure
from tqdm import tqdm

__all__ = ["COLOURS", "SHAPES", "main", "write_synthetic_refcoco"]

#: Object colours (name -> RGB uint8).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 210, 30),
    "purple": (135, 50, 175),
    "orange": (245, 135, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
#: Shapes; each is one COCO category (ids 1..4).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_NOUNS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
}
_GENERIC = ("one", "shape", "object", "thing")
_BIG, _SMALL = ("big", "large", "bigger"), ("small", "little", "smaller")
_SIZE_RATIO = 1.8  # area ratio for "big"/"small"
_POSITION_MARGIN = 0.10  # fraction of the image side for "left"/"right"/"top"/"bottom"
_MIN_VISIBLE = 0.6  # occluded objects keep at least this share of their area
# half-extent ranges as a share of the shorter image side: small, medium, large
_SIZE_CLASSES = ((0.07, 0.10), (0.12, 0.17), (0.20, 0.28))


@dataclass(eq=False)
class _Object:
    shape: str
    colour: str
    cx: float
    cy: float
    radius: float
    polygons: list[list[float]]  # full shape, COCO flat [x0, y0, x1, y1, ...]
    full: np.ndarray | None = None  # (H, W) bool
    visible: np.ndarray | None = None  # (H, W) bool


def _shape_polygons(shape: str, cx: float, cy: float, r: float, angle: float) -> list[list[float]]:
    """Polygon parts of a shape centred at (cx, cy) with half-extent r pixels."""

    def ring(n: int, radius: float, start: float) -> list[float]:
        points = []
        for k in range(n):
            a = start + 2 * math.pi * k / n
            points += [cx + radius * math.cos(a), cy + radius * math.sin(a)]
        return points

    if shape == "circle":
        return [ring(28, r, 0.0)]
    if shape == "square":
        return [ring(4, r * 1.15, angle + math.pi / 4)]
    if shape == "triangle":
        return [ring(3, r * 1.1, -math.pi / 2 + angle)]
    if shape == "cross":
        t = r * 0.36
        horizontal = [cx - r, cy - t, cx + r, cy - t, cx + r, cy + t, cx - r, cy + t]
        vertical = [cx - t, cy - r, cx + t, cy - r, cx + t, cy + r, cx - t, cy + r]
        return [horizontal, vertical]
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Union of polygon parts as an (H, W) bool mask (pycocotools rasterisation)."""

    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(rles).any(axis=2)


def _trace(mask: np.ndarray) -> list[list[float]]:
    """Polygons (COCO flat lists) whose pycocotools rasterisation is ``mask`` (hole-free)."""

    polygons = []
    for contour in measure.find_contours(np.pad(mask, 1).astype(np.float32), 0.5):
        contour = measure.approximate_polygon(contour - 1.0, tolerance=0.3)
        if len(contour) >= 3:
            # +0.5: find_contours works on pixel centres, pycocotools on pixel corners.
            polygons.append(
                [round(float(v), 2) for rc in contour for v in (rc[1] + 0.5, rc[0] + 0.5)]
            )
    return polygons


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 textured background, muted colours in [0, 255]."""
    base = rng.uniform(70, 180) + rng.uniform(-25, 25, size=3)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle
        angle, period = rng.uniform(0, math.pi), rng.uniform(8, 30)
        pattern = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(10, 32))
        pattern = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
    else:  # smooth noise: bilinear upsampling of a coarse random grid
        coarse = rng.uniform(-1, 1, size=(6, 6)).astype(np.float32)
        gy, gx = yy / (height - 1) * 5, xx / (width - 1) * 5
        y0, x0 = np.floor(gy).astype(int).clip(0, 4), np.floor(gx).astype(int).clip(0, 4)
        fy, fx = gy - y0, gx - x0
        pattern = (
            coarse[y0, x0] * (1 - fy) * (1 - fx)
            + coarse[y0 + 1, x0] * fy * (1 - fx)
            + coarse[y0, x0 + 1] * (1 - fy) * fx
            + coarse[y0 + 1, x0 + 1] * fy * fx
        )
    tint = rng.uniform(-1, 1, size=3) * rng.uniform(10, 30)
    image = base[None, None, :] + pattern[..., None] * tint[None, None, :]
    return image + rng.normal(0, 6, size=image.shape)


def _place_objects(rng: np.random.Generator, height: int, width: int) -> list[_Object]:
    """Sample 2-5 objects, back to front, with touching/overlapping placements."""
    n_target = int(rng.integers(2, 6))
    side = min(height, width)
    objects: list[_Object] = []
    for _ in range(60 * n_target):
        if len(objects) == n_target:
            break
        low, high = _SIZE_CLASSES[int(rng.choice(3, p=(0.25, 0.35, 0.4)))]
        radius = side * rng.uniform(low, high)
        if objects and rng.random() < 0.35:  # touch or overlap an earlier object
            other = objects[int(rng.integers(len(objects)))]
            angle = rng.uniform(0, 2 * math.pi)
            distance = (other.radius + radius) * rng.uniform(0.75, 1.0)
            cx, cy = other.cx + distance * math.cos(angle), other.cy + distance * math.sin(angle)
        else:
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if not (radius <= cx <= width - radius and radius <= cy <= height - radius):
            continue
        if any(math.hypot(cx - o.cx, cy - o.cy) < 0.55 * (o.radius + radius) for o in objects):
            continue  # too deep an overlap
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        polygons = _shape_polygons(shape, cx, cy, radius, rng.uniform(-0.3, 0.3))
        candidate = _Object(shape, colour, cx, cy, radius, polygons)
        candidate.full = _rasterise(polygons, height, width)
        if not _occlusion_ok(objects + [candidate]):
            continue
        objects.append(candidate)
    for k, obj in enumerate(objects):
        above = np.zeros_like(obj.full)
        for other in objects[k + 1 :]:
            above |= other.full
        obj.visible = obj.full & ~above
    return objects


def _occlusion_ok(objects: list[_Object]) -> bool:
    """Every object keeps >= 60 % of its area visible, without holes (polygons cannot hold them)."""

    for k, obj in enumerate(objects[:-1]):
        visible = obj.full.copy()
        for other in objects[k + 1 :]:
            visible &= ~other.full
        if visible.sum() < _MIN_VISIBLE * obj.full.sum():
            return False
        if ndimage.binary_fill_holes(visible).sum() != visible.sum():
            return False
    return True


def _describe(index: int, objects: list[_Object], width: int, height: int) -> list[tuple]:
    """All uniquely referring descriptions of ``objects[index]``.

    Returns tuples ``(size, colour, shape, position)``, each field a word or None; ``shape`` None
    means a generic noun. Uniqueness is checked against every other object in the scene.
    """
    target = objects[index]
    areas = [float(o.visible.sum()) for o in objects]
    found = []
    for use_colour in (False, True):
        for use_shape in (False, True):
            group = [
                k
                for k, o in enumerate(objects)
                if (not use_colour or o.colour == target.colour)
                and (not use_shape or o.shape == target.shape)
            ]
            colour = target.colour if use_colour else None
            shape = target.shape if use_shape else None
            if len(group) == 1 and (use_colour or use_shape):
                found.append((None, colour, shape, None))
                continue
            others = [k for k in group if k != index]
            if not others:
                continue
            if all(areas[index] >= _SIZE_RATIO * areas[k] for k in others):
                found.append(("big", colour, shape, None))
            if all(areas[index] * _SIZE_RATIO <= areas[k] for k in others):
                found.append(("small", colour, shape, None))
            for word, value, other_value, scale in (
                ("left", -target.cx, lambda o: -o.cx, width),
                ("right", target.cx, lambda o: o.cx, width),
                ("top", -target.cy, lambda o: -o.cy, height),
                ("bottom", target.cy, lambda o: o.cy, height),
            ):
                if all(value - other_value(objects[k]) > _POSITION_MARGIN * scale for k in others):
                    found.append((None, colour, shape, word))
    return found


def _render(description: tuple, rng: np.random.Generator) -> str:
    """Turn (size, colour, shape, position) into an English expression."""
    size, colour, shape, position = description
    noun = _NOUNS[shape][int(rng.integers(len(_NOUNS[shape])))] if shape else None
    if noun is None:
        noun = _GENERIC[int(rng.integers(len(_GENERIC)))]
    words = []
    if size:
        pool = _BIG if size == "big" else _SMALL
        words.append(pool[int(rng.integers(len(pool)))])
    if colour:
        words.append(colour)
    phrase = " ".join(words + [noun])
    if position:
        style = int(rng.integers(3))
        if style == 0:
            side = {"left": "on the left", "right": "on the right", "top": "at the top"}
            phrase = f"{phrase} {side.get(position, 'at the bottom')}"
        elif style == 1:
            adjective = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}
            phrase = f"{adjective[position]} {phrase}"
        else:
            adjective = {
                "left": "leftmost",
                "right": "rightmost",
                "top": "upper",
                "bottom": "lower",
            }
            phrase = f"{adjective[position]} {phrase}"
    article = ("the ", "the ", "")[int(rng.integers(3))]
    return article + phrase


def _paint(image: np.ndarray, objects: list[_Object], rng: np.random.Generator) -> np.ndarray:
    """Paint objects back to front with slight shading; returns (H, W, 3) uint8."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    for obj in objects:
        colour = np.array(COLOURS[obj.colour], dtype=np.float32)
        shade = 1.0 + 0.12 * ((xx - obj.cx) + (yy - obj.cy)) / (2 * obj.radius)
        fill = colour[None, None, :] * shade[..., None] + rng.normal(0, 4, size=image.shape)
        image = np.where(obj.full[..., None], fill, image)
    return np.clip(image, 0, 255).astype(np.uint8)


def _split_names(split_by: str) -> tuple[str, ...]:
    return (
        ("train", "val", "test", "test")
        if split_by == "umd"
        else ("train", "val", "testA", "testB")
    )


def write_synthetic_refcoco(
    root: str | Path,
    n_images: int = 200,
    seed: int = 0,
    *,
    dataset: str = "refcoco",
    split_by: str = "unc",
    size_range: tuple[int, int] = (160, 320),
    jpeg_quality: int = 92,
    progress: bool = True,
) -> dict:
    """Write a synthetic referring-segmentation dataset in the RefCOCO/refer layout.

    Parameters
    ----------
    root : str or Path
        Data root; created if needed. Files already there are overwritten.
    n_images : int
        Number of images (>= 8, so that every split gets at least one image).
    seed : int
        Seed of everything (scenes, sentences, splits).
    dataset : str
        Folder name under root (``refcoco``, ``refcoco+`` or ``refcocog``).
    split_by : str
        ``unc`` (splits train/val/testA/testB) or ``umd`` (train/val/test).
    size_range : (int, int)
        Smallest and largest image side in pixels; width and height are drawn independently.
    jpeg_quality : int
        JPEG quality, 1-95.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``{"root", "instances", "refs", "n_images", "n_refs", "n_sentences", "splits"}`` where
        ``splits`` maps split name to its number of refs.
    """

    if n_images < 8:
        raise ValueError(f"n_images={n_images} is too small; use at least 8 so every split is used")
    if split_by not in ("unc", "umd"):
        raise ValueError(f"split_by={split_by!r} is not supported; use 'unc' or 'umd'")
    root = Path(root)
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    ann_dir = root / dataset
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split_names = _split_names(split_by)
    # Image-level split: 70 % train, 10 % each for val, testA, testB.
    order = rng.permutation(n_images)
    cut = [round(f * n_images) for f in (0.7, 0.8, 0.9)]
    image_split = np.empty(n_images, dtype=object)
    for rank, i in enumerate(order):
        image_split[i] = split_names[sum(rank >= c for c in cut)]

    images, annotations, refs = [], [], []
    ann_id, ref_id, sent_id = 1, 0, 0
    low, high = size_range
    for i in tqdm(range(n_images), desc="synthetic images", disable=not progress):
        image_id = i + 1
        while True:
            height, width = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
            objects = _place_objects(rng, height, width)
            described = [_describe(k, objects, width, height) for k in range(len(objects))]
            if len(objects) >= 2 and any(described):
                break
        pixels = _paint(_background(rng, height, width), objects, rng)
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(pixels).save(image_dir / file_name, quality=jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        split = str(image_split[i])
        for k, obj in enumerate(objects):
            occluded = not np.array_equal(obj.visible, obj.full)
            polygons = _trace(obj.visible) if occluded else obj.polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            annotation = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": SHAPES.index(obj.shape) + 1,
                "segmentation": polygons,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
            annotations.append(annotation)
            keep = described[k] and not (
                (split == "testA" and obj.shape != "circle")
                or (split == "testB" and obj.shape == "circle")
            )
            if keep:
                chosen = rng.permutation(len(described[k]))[: int(rng.integers(1, 4))]
                sentences, texts = [], set()
                for c in chosen:
                    text = _render(described[k][c], rng)
                    if text in texts:
                        continue
                    texts.add(text)
                    raw = text[0].upper() + text[1:] if rng.random() < 0.3 else text
                    sentences.append(
                        {"raw": raw, "sent": text, "tokens": text.split(), "sent_id": sent_id}
                    )
                    sent_id += 1
                refs.append(
                    {
                        "ref_id": ref_id,
                        "ann_id": ann_id,
                        "image_id": image_id,
                        "category_id": annotation["category_id"],
                        "split": split,
                        "sentences": sentences,
                        "sent_ids": [s["sent_id"] for s in sentences],
                        "file_name": f"COCO_train2014_{image_id:012d}_{ref_id}.jpg",
                    }
                )
                ref_id += 1
            ann_id += 1
    categories = [
        {"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)
    ]
    instances_path = ann_dir / "instances.json"
    refs_path = ann_dir / f"refs({split_by}).p"
    with open(instances_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    with open(refs_path, "wb") as f:
        pickle.dump(refs, f)
    splits: dict[str, int] = {}
    for ref in refs:
        splits[ref["split"]] = splits.get(ref["split"], 0) + 1
    return {
        "root": str(root),
        "instances": str(instances_path),
        "refs": str(refs_path),
        "n_images": n_images,
        "n_refs": len(refs),
        "n_sentences": sent_id,
        "splits": splits,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: write a synthetic RefCOCO-format dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="data root to write")
    parser.add_argument("--n-images", type=int, default=200, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="refcoco", help="folder name under --out")
    parser.add_argument("--split-by", default="unc", choices=("unc", "umd"))
    args = parser.parse_args(argv)
    summary = write_synthetic_refcoco(
        args.out, args.n_images, args.seed, dataset=args.dataset, split_by=args.split_by
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
