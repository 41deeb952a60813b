"""Importers and exporters: SA-1B JSON, SAM generator output, SemiRES reference files, COCO.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..proposals import Proposals
from .format import LibraryError
from .keys import json_image_key, parse_image_key
from .refs import load_refs

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


@dataclass
class ImportReport:
    """What an importer did: images added, skipped (already present), and notes."""

    added: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(
            [f"{self.added} images added, {self.skipped} already present"] + self.notes
        )


def _files(source, pattern: str = "*.json") -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if os.path.isdir(s):
            out = sorted(glob.glob(os.path.join(s, pattern)))
            if not out:
                raise FileNotFoundError(f"{s} holds no {pattern} files")
            return out
        if not os.path.exists(s):
            raise FileNotFoundError(f"{s} does not exist")
        return [s]
    return [os.fspath(p) for p in source]


def _load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LibraryError(f"{path}: not valid JSON ({e})") from None


def _tqdm(it, progress: bool, desc: str, total=None):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit="file", disable=not progress, total=total)


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


def _records(props: Proposals, key: int | str | None = None) -> list[dict]:
    """SAM/SA-1B-style records (compressed RLE strings) of one image's proposals."""
    area, bbox = props.area, props.bbox
    out = []
    for k, rle in enumerate(props.to_rle(compressed=True)):
        rec = {
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            "area": int(area[k]),
            "bbox": [float(v) for v in bbox[k]],
        }
        if key is not None:
            rec = {"image_id": key, **rec}
        for name, val in props.meta.items():
            if name in ("area", "bbox"):
                continue
            v = np.asarray(val[k]).tolist()
            rec[name] = [v] if name == "point_coords" else v
        out.append(rec)
    return out


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
            raise LibraryError(f"{folder}: no masks and no image size; pass sizes=")
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


# --------------------------------------------------------------------------------------------
# RefCOCO annotation files
# --------------------------------------------------------------------------------------------


def load_instances(path) -> dict[int, dict]:
    """``{image_id: {"file_name", "height", "width"}}`` from a COCO/RefCOCO ``instances.json``."""
    doc = _load_json(os.fspath(path))
    try:
        return {
            int(im["id"]): {
                "file_name": im.get("file_name"),
                "height": int(im["height"]),
                "width": int(im["width"]),
            }
            for im in doc["images"]
        }
    except (KeyError, TypeError) as e:
        raise LibraryError(f"{path}: not an instances.json (missing {e})") from None


# --------------------------------------------------------------------------------------------
# SemiRES reference format
# --------------------------------------------------------------------------------------------


def _semires_runs(counts, h: int, w: int, where: str):
    arr = np.asarray(counts, dtype=np.int64)
    if arr.ndim != 1 or arr.size % 2:
        raise LibraryError(f"{where}: counts must be start/length pairs, got {arr.size} values")
    st = arr[0::2] - 1
    ln = arr[1::2]
    keep = ln > 0
    st, ln = st[keep], ln[keep]
    if np.any(st < 0) or np.any(st + ln > h * w):
        raise LibraryError(f"{where}: a run lies outside the {h}x{w} mask (starts are 1-based)")
    if st.size == 0:
        return st.astype(np.int32), ln.astype(np.int32)
    order = np.argsort(st, kind="stable")
    st, en = st[order], (st + ln)[order]
    # union of possibly overlapping or touching intervals (the reference decodes by painting)
    reach = np.maximum.accumulate(en)
    new = np.ones(st.size, bool)
    new[1:] = st[1:] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], st.size) - 1
    return st[first].astype(np.int32), (reach[last] - st[first]).astype(np.int32)


def read_semires(path, size=None) -> Proposals:
    """One SemiRES reference proposal file (``<ref_id>.json``) to Proposals.

    ``size = (H, W)`` is needed when the file holds no masks (the reference stores the size
    only inside each mask).
    """
    path = os.fspath(path)
    doc = _load_json(path)
    if not isinstance(doc, list):
        raise LibraryError(f"{path}: a SemiRES proposal file holds a JSON list")
    if not doc:
        if size is None:
            raise LibraryError(f"{path}: no masks and no image size; pass instances.json")
        return Proposals.empty(size)
    sizes = {tuple(int(v) for v in m["size"]) for m in doc}
    if len(sizes) != 1:
        raise LibraryError(f"{path}: masks of different sizes {sorted(sizes)}")
    h, w = sizes.pop()
    if size is not None and tuple(size) != (h, w):
        raise LibraryError(f"{path}: masks are {h}x{w} but the image is {size[0]}x{size[1]}")
    starts, lengths, off = [], [], [0]
    for i, m in enumerate(doc):
        s, ln = _semires_runs(m["counts"], h, w, f"{path} mask {i}")
        starts.append(s)
        lengths.append(ln)
        off.append(off[-1] + s.size)
    return Proposals(
        np.concatenate(starts),
        np.concatenate(lengths),
        np.array(off, np.int64),
        (h, w),
        validate=False,
    )


def import_semires(
    writer, mask_dir, refs, *, instances=None, on_conflict: str = "first", progress: bool = True
) -> ImportReport:
    """Fold SemiRES per-referent proposal files into per-image library entries.

    Parameters
    ----------
    writer : LibraryWriter
    mask_dir : str or os.PathLike
        The ``sam_rle_mask`` folder of ``<ref_id>.json`` files.
    refs : path or list of dict
        ``refs(<splitBy>).p`` (all splits are used: a file belongs to whichever ref has its id)
        or already loaded refs.
    instances : path or mapping, optional
        ``instances.json`` (or :func:`load_instances` output), for sizes of mask-less images.
    on_conflict : {"first", "error"}
        Referents of one image should carry identical proposals; ``"first"`` keeps the lowest
        ref id's file and reports how many images differed, ``"error"`` raises.
    """
    if on_conflict not in ("first", "error"):
        raise ValueError(f"on_conflict={on_conflict!r}; choose 'first' or 'error'")
    if not isinstance(refs, list):
        refs = load_refs(refs, split=None)
    ref_image = {int(r["ref_id"]): int(r["image_id"]) for r in refs}
    if instances is not None and not isinstance(instances, Mapping):
        instances = load_instances(instances)
    instances = instances or {}
    by_image: dict[int, list[tuple[int, str]]] = {}
    unknown = 0
    for p in _files(mask_dir):
        stem = os.path.splitext(os.path.basename(p))[0]
        try:
            ref_id = int(stem)
        except ValueError:
            raise LibraryError(f"{p}: SemiRES files are named <ref_id>.json") from None
        if ref_id not in ref_image:
            unknown += 1
            continue
        by_image.setdefault(ref_image[ref_id], []).append((ref_id, p))
    report = ImportReport()
    conflicts = 0
    for key in _tqdm(sorted(by_image), progress, "import semires"):
        if key in writer:
            report.skipped += 1
            continue
        files = sorted(by_image[key])
        info = instances.get(key)
        size = (info["height"], info["width"]) if info else None
        props = read_semires(files[0][1], size)
        for _, other in files[1:]:
            if read_semires(other, props.size) != props:
                conflicts += 1
                if on_conflict == "error":
                    raise LibraryError(
                        f"{other} and {files[0][1]} are referents of image {key} "
                        "but hold different proposals"
                    )
                break
        writer.append(key, props)
        report.added += 1
    if unknown:
        report.notes.append(f"{unknown} files name no ref in the refs file (ignored)")
    if conflicts:
        report.notes.append(
            f"{conflicts} images had referents with differing proposals (kept the lowest ref id's)"
        )
    return report


def semires_counts(props: Proposals, k: int) -> list[int]:
    """Mask ``k`` in the SemiRES reference run format: 1-based start, length pairs."""
    a, b = props.offsets[k], props.offsets[k + 1]
    pairs = np.empty(2 * (b - a), np.int64)
    pairs[0::2] = props.starts[a:b].astype(np.int64) + 1
    pairs[1::2] = props.lengths[a:b]
    return pairs.tolist()


def export_semires(lib, out_dir, refs, *, progress: bool = True) -> int:
    """Write the SemiRES reference layout: one ``<ref_id>.json`` per referent of ``refs``
    whose image is in the library (so the reference training code can read our proposals).
    Returns the file count."""
    if not isinstance(refs, list):
        refs = load_refs(refs, split=None)
    os.makedirs(out_dir, exist_ok=True)
    by_image: dict[int, list[int]] = {}
    for r in refs:
        by_image.setdefault(int(r["image_id"]), []).append(int(r["ref_id"]))
    n = 0
    for key in _tqdm(sorted(by_image), progress, "export semires"):
        props = lib.get(key)
        if props is None:
            continue
        h, w = props.size
        text = json.dumps(
            [{"counts": semires_counts(props, k), "size": [h, w]} for k in range(len(props))]
        )
        for ref_id in by_image[key]:
            with open(os.path.join(out_dir, f"{ref_id}.json"), "w") as f:
                f.write(text)
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# COCO RLE JSON
# --------------------------------------------------------------------------------------------


def export_coco(lib, path, *, image_ids: Iterable[int] | None = None, progress: bool = True) -> int:
    """Write a COCO results-style JSON list of every mask (compressed RLE strings).

    Each entry has ``image_id``, ``segmentation`` (``{"size": [H, W], "counts": str}``),
    ``area``, ``bbox`` (XYWH), the stored metadata, ``category_id = 1`` (proposals are
    class-agnostic) and ``score`` (``predicted_iou`` when stored, else 1), so
    ``pycocotools.coco.COCO.loadRes`` accepts the file.

    Returns the number of masks written. Images with no masks contribute nothing (COCO has no
    per-image record in a results list).
    """
    ids = lib.image_ids().tolist() if image_ids is None else list(image_ids)
    n = 0
    with open(path, "w") as f:
        f.write("[")
        for key in _tqdm(ids, progress, "export coco"):
            props = lib[key]
            scores = props.meta.get("predicted_iou", np.ones(len(props)))
            for k, rec in enumerate(_records(props, key)):
                rec.update(category_id=1, score=float(scores[k]))
                f.write(("," if n else "") + json.dumps(rec))
                n += 1
        f.write("]")
    return n


def _instances_proposals(anns: list, size: tuple[int, int], where: str) -> Proposals:
    """One image's COCO instance annotations (polygons, RLE or uncompressed RLE) rasterised
    by pycocotools, with ``category_id``, ``iscrowd`` and ``annotation_id`` kept."""
    from pycocotools import mask as mask_utils

    h, w = size
    rles = []
    for ann in anns:
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list):  # polygons: one RLE per part, merged
                if not seg or not all(isinstance(p, list) and len(p) >= 6 for p in seg):
                    raise ValueError("a polygon needs at least 3 points")
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg, Mapping) and isinstance(seg.get("counts"), list):
                if [int(v) for v in seg.get("size", [])] != [h, w]:
                    raise ValueError(f"RLE size {seg.get('size')} differs from the image's")
                rle = mask_utils.frPyObjects(seg, h, w)
            elif isinstance(seg, Mapping):
                rle = dict(seg)
            else:
                raise ValueError(f"segmentation is {type(seg).__name__}")
        except (ValueError, TypeError, KeyError) as e:
            raise LibraryError(f"{where}: annotation {ann.get('id')}: {e}") from None
        counts = rle["counts"]
        rles.append(
            {
                "size": [h, w],
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
            }
        )
    if not rles:
        return Proposals.empty(size)
    props = Proposals.from_rle(rles, size)
    for name, field_name in (
        ("category_id", "category_id"),
        ("iscrowd", "iscrowd"),
        ("id", "annotation_id"),
    ):
        if all(name in a for a in anns):
            props.meta[field_name] = np.array([a[name] for a in anns], np.int64)
    return props


def import_coco(
    writer, path, *, sizes: Mapping | None = None, progress: bool = True
) -> ImportReport:
    """Append COCO annotations: a results-style JSON list (as :func:`export_coco` writes), or
    an ``instances_*.json`` (``images`` + ``annotations``; polygons, RLE and uncompressed RLE).

    Masks are grouped by ``image_id`` in file order. For an instances file every listed image
    is added, with no masks when it has no annotations; for a results list ``sizes`` gives
    ``(H, W)`` for images with no masks to add.
    """
    doc = _load_json(os.fspath(path))
    if isinstance(doc, Mapping) and "annotations" in doc and "images" in doc:
        return _import_instances(writer, doc, os.fspath(path), progress)
    if not isinstance(doc, list):
        raise LibraryError(
            f"{path}: expected a JSON list of annotations (results) or an "
            "instances file with 'images' and 'annotations'"
        )
    groups: dict = {}
    for i, ann in enumerate(doc):
        try:
            groups.setdefault(
                json_image_key(ann["image_id"], f"annotation {i}: image_id"), []
            ).append(ann)
        except (KeyError, TypeError):
            raise LibraryError(f"{path}: annotation {i} has no image_id") from None
        except ValueError as e:
            raise LibraryError(f"{path}: {e}") from None
    for key in sizes or {}:
        groups.setdefault(json_image_key(key, "sizes key"), [])
    report = ImportReport()
    for key in _tqdm(groups, progress, "import coco", total=len(groups)):
        if key in writer:
            report.skipped += 1
            continue
        try:
            props = Proposals.from_sam(groups[key], (sizes or {}).get(key))
        except ValueError as e:
            raise LibraryError(f"{path}: image {key!r}: {e}") from None
        writer.append(key, props)
        report.added += 1
    return report


def _import_instances(writer, doc: Mapping, path: str, progress: bool) -> ImportReport:
    try:
        images = {
            json_image_key(im["id"], "images[].id"): (int(im["height"]), int(im["width"]))
            for im in doc["images"]
        }
    except (KeyError, TypeError) as e:
        raise LibraryError(f"{path}: an image entry lacks id/height/width ({e})") from None
    except ValueError as e:
        raise LibraryError(f"{path}: {e}") from None
    groups: dict = {k: [] for k in images}
    for i, ann in enumerate(doc["annotations"]):
        try:
            key = json_image_key(ann["image_id"], f"annotation {i}: image_id")
        except (KeyError, TypeError):
            raise LibraryError(f"{path}: annotation {i} has no image_id") from None
        except ValueError as e:
            raise LibraryError(f"{path}: {e}") from None
        if key not in groups:
            raise LibraryError(
                f"{path}: annotation {ann.get('id', i)} names image {key!r}, "
                "which is not in 'images'"
            )
        groups[key].append(ann)
    report = ImportReport()
    for key in _tqdm(groups, progress, "import coco instances", total=len(groups)):
        if key in writer:
            report.skipped += 1
            continue
        writer.append(key, _instances_proposals(groups[key], images[key], f"{path}: image {key!r}"))
        report.added += 1
    return report
