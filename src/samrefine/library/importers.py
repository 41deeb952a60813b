"""Importers and exporters: SA-1B JSON, SAM generator output, SemiRES reference files, COCO.

SA-1B and SAM generator output live here; SemiRES in :mod:`samrefine.library.semires_io`,
COCO in :mod:`samrefine.library.coco_io` (both re-exported here).

Formats
-------
SA-1B per-image JSON
    ``{"image": {"image_id", "height", "width", ...}, "annotations": [{"segmentation":
    {"size": [H, W], "counts": str}, "area", "bbox", "predicted_iou", "stability_score",
    "point_coords": [[x, y]], "crop_box"}, ...]}`` (the SA-1B release layout).
SAM generator output
    ``SamAutomaticMaskGenerator.generate`` records, any ``output_mode``; in files, as
    segment-anything's ``scripts/amg.py`` writes them: JSON lists of ``coco_rle`` records
    named ``<image stem>.json``, or (``binary_mask`` mode) a folder ``<image stem>/`` per image
    with ``<i>.png`` masks (0/255) and ``metadata.csv`` (``id, area, bbox_x0, bbox_y0, bbox_w,
    bbox_h, point_input_x, point_input_y, predicted_iou, stability_score, crop_box_x0,
    crop_box_y0, crop_box_w, crop_box_h``).
SemiRES reference
    One JSON per *referent* ``<ref_id>.json`` (SemiRES ``anns/<ds>/sam_rle_mask``): a list of
    ``{"counts": [start1, len1, start2, len2, ...], "size": [H, W]}`` where starts are
    **1-based** indices of the column-major flattened mask. Referents map to images through the
    refs file (``ref_id -> image_id``); an image's referents carry the same proposals, so they
    are folded into one library entry.
COCO RLE JSON
    A COCO results-style list ``[{"image_id", "segmentation": {"size", "counts": str},
    "area", "bbox", "category_id": 1, "score", ...metadata}, ...]``, readable by
    ``pycocotools`` (``COCO.loadRes``).
COCO instances
    ``instances_*.json``: ``{"images": [{"id", "height", "width"}], "annotations":
    [{"image_id", "segmentation": polygons | RLE | uncompressed RLE, "iscrowd",
    "category_id", "id", ...}]}``; segmentations are rasterised by ``pycocotools``.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Mapping

import numpy as np

from ..proposals import Proposals
from ._import_common import ImportReport, _files, _load_json, _records, _tqdm
from .coco_io import export_coco, import_coco
from .format import LibraryError
from .keys import json_image_key, parse_image_key
from .refs import load_refs
from .semires_io import export_semires, import_semires, load_instances, read_semires
from .semires_io import semires_counts as semires_counts  # its home before the split

__all__ = [
    "ImportReport",
    "export_coco",
    "export_sa1b",
    "export_semires",
    "import_amg",
    "import_coco",
    "import_sa1b",
    "import_semires",
    "load_instances",
    "load_refs",
    "read_amg_folder",
    "read_sa1b",
    "read_semires",
]

log = logging.getLogger("samrefine.library")


# --------------------------------------------------------------------------------------------
# SA-1B
# --------------------------------------------------------------------------------------------


def read_sa1b(path) -> tuple[int | str, Proposals]:
    """One SA-1B-style JSON file to ``(image_id, Proposals)`` (metadata kept)."""
    path = os.fspath(path)
    doc = _load_json(path)
    try:
        image = doc["image"]
        size = (int(image["height"]), int(image["width"]))
        anns = doc["annotations"]
        raw_key = image["image_id"]
    except (KeyError, TypeError, ValueError) as e:
        raise LibraryError(f"{path}: not an SA-1B file (missing {e})") from None
    try:
        key = json_image_key(raw_key, "image.image_id")
    except ValueError as e:
        raise LibraryError(f"{path}: {e}") from None
    try:
        return key, Proposals.from_sam(anns, size)
    except ValueError as e:
        raise LibraryError(f"{path}: {e}") from None


def import_sa1b(writer, source, *, progress: bool = True) -> ImportReport:
    """Append every SA-1B JSON file of ``source`` (a folder, a file or a list of files)."""
    report = ImportReport()
    for path in _tqdm(_files(source), progress, "import sa1b"):
        key, props = read_sa1b(path)
        if key in writer:
            report.skipped += 1
            continue
        writer.append(key, props)
        report.added += 1
    return report


def export_sa1b(lib, out_dir, *, progress: bool = True) -> int:
    """Write one SA-1B-style JSON per image (``<image_key>.json``; a name with ``/`` makes
    sub-folders); returns the file count."""
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    for key in _tqdm(lib.image_ids().tolist(), progress, "export sa1b"):
        props = lib[key]
        h, w = props.size
        doc = {"image": {"image_id": key, "height": h, "width": w}, "annotations": _records(props)}
        out = os.path.join(out_dir, f"{key}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(doc, f)
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# SamAutomaticMaskGenerator output
# --------------------------------------------------------------------------------------------


def import_amg(
    writer, source, *, sizes: Mapping | None = None, progress: bool = True
) -> ImportReport:
    """Append ``SamAutomaticMaskGenerator`` outputs.

    Parameters
    ----------
    writer : LibraryWriter
    source : mapping of key to list of dict, or folder / files
        ``{image_key: records}`` in any ``output_mode`` (binary masks included), or JSON files
        ``<image>.json`` holding a list of ``coco_rle`` / ``uncompressed_rle`` records, as
        segment-anything's ``scripts/amg.py`` writes them: named after the image file's stem,
        which is the key (:func:`~samrefine.library.keys.parse_image_key`: ``"42"`` is image
        42, ``"2007_000032"`` a name). For its ``binary_mask`` layout (a folder of PNG masks
        and ``metadata.csv`` per image) use :func:`import_amg_folders`.
    sizes : mapping of key to (H, W), optional
        Image sizes, needed for images with no masks.
    """
    report = ImportReport()
    sizes = dict(sizes or {})
    if isinstance(source, Mapping):
        items = (
            (
                parse_image_key(k) if isinstance(k, str) else json_image_key(k, "key"),
                v,
                f"image {k!r}",
            )
            for k, v in source.items()
        )
        total = len(source)
    elif _is_amg_folder_layout(source):
        folders = _amg_folders(source)
        total = len(folders)

        def gen():
            for d in folders:
                stem = os.path.basename(os.path.normpath(d))
                try:
                    key = parse_image_key(stem)
                except ValueError as e:
                    raise LibraryError(f"{d}: the folder name is not an image key ({e})") from None
                yield key, d, d

        items = gen()
    else:
        files = _files(source)
        total = len(files)

        def gen():
            for p in files:
                stem = os.path.splitext(os.path.basename(p))[0]
                try:
                    key = parse_image_key(stem)
                except ValueError as e:
                    raise LibraryError(f"{p}: the file name is not an image key ({e})") from None
                yield key, _load_json(p), p

        items = gen()
    for key, records, where in _tqdm(items, progress, "import amg", total=total):
        if key in writer:
            report.skipped += 1
            continue
        if not isinstance(records, str) and not records and key not in sizes:
            raise LibraryError(f"{where}: no masks and no image size; {NEED_SIZES}")
        try:
            if isinstance(records, str):  # a binary_mask folder
                props = read_amg_folder(records, sizes.get(key))
            else:
                props = Proposals.from_sam(records, sizes.get(key))
        except ValueError as e:
            raise LibraryError(f"{where}: {e}") from None
        writer.append(key, props)
        report.added += 1
    return report


#: How to give the size of an image without masks (the CLI names its --instances instead).
NEED_SIZES = "pass sizes={image_key: (H, W)}"

AMG_CSV_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
    "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)


def _is_amg_folder_layout(source) -> bool:
    if not isinstance(source, (str, os.PathLike)) or not os.path.isdir(source):
        return False
    s = os.fspath(source)
    if os.path.isfile(os.path.join(s, "metadata.csv")):
        return True
    return not glob.glob(os.path.join(s, "*.json")) and bool(
        glob.glob(os.path.join(s, "*", "metadata.csv"))
    )


def _amg_folders(source) -> list[str]:
    s = os.fspath(source)
    if os.path.isfile(os.path.join(s, "metadata.csv")):
        return [s]
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(s, "*", "metadata.csv")))


def read_amg_folder(folder, size=None) -> Proposals:
    """One image's ``scripts/amg.py`` ``binary_mask`` output folder to Proposals.

    Reads ``metadata.csv`` and the ``<id>.png`` mask it names for each row (0 = background,
    255 or 1 = foreground; any other value is refused), checks each mask's area against the
    CSV, and keeps ``predicted_iou``, ``stability_score``, ``point_coords`` and ``crop_box``.
    ``size = (H, W)`` is needed for a folder with no masks.
    """
    from PIL import Image

    folder = os.fspath(folder)
    path = os.path.join(folder, "metadata.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or ",".join(c.strip() for c in rows[0]) != AMG_CSV_HEADER:
        raise LibraryError(
            f"{path}: not an amg.py metadata.csv (expected the header {AMG_CSV_HEADER!r})"
        )
    rows = [r for r in rows[1:] if r]
    if not rows:
        if size is None:
            raise LibraryError(f"{folder}: no masks and no image size; {NEED_SIZES}")
        return Proposals.empty(size)
    try:
        table = np.array([[float(v) for v in r] for r in rows], np.float64)
    except ValueError as e:
        raise LibraryError(f"{path}: a value is not a number ({e})") from None
    if table.shape[1] != 14:
        raise LibraryError(f"{path}: rows have {table.shape[1]} columns, expected 14")
    masks = []
    for row in table:
        png = os.path.join(folder, f"{int(row[0])}.png")
        if not os.path.isfile(png):
            raise LibraryError(f"{png} is missing (named by {path})")
        with Image.open(png) as im:
            arr = np.asarray(im)
        if arr.ndim == 3:
            raise LibraryError(f"{png}: a mask PNG has one channel, got shape {arr.shape}")
        fg = arr == (255 if arr.max(initial=0) > 1 else 1)
        if not np.all(fg | (arr == 0)):
            raise LibraryError(f"{png}: holds values other than 0 and 255; not a binary mask")
        if int(fg.sum()) != int(row[1]):
            raise LibraryError(
                f"{png}: {int(fg.sum())} foreground pixels but metadata.csv "
                f"says {int(row[1])}; the folder mixes files of different runs"
            )
        masks.append(fg)
    try:
        props = Proposals.from_dense(np.stack(masks))
    except ValueError as e:
        raise LibraryError(f"{folder}: {e}") from None
    if size is not None and tuple(int(v) for v in size) != props.size:
        raise LibraryError(f"{folder}: masks are {props.size} but the image is {tuple(size)}")
    props.meta.update(
        predicted_iou=table[:, 8],
        stability_score=table[:, 9],
        point_coords=table[:, 6:8],
        crop_box=table[:, 10:14],
    )
    return props
