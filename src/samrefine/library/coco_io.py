"""COCO JSON import and export: results-style RLE lists and instance annotation files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

import numpy as np

from ..proposals import Proposals
from ._import_common import ImportReport, _load_json, _records, _tqdm
from .format import LibraryError
from .keys import json_image_key

__all__ = ["export_coco", "import_coco"]


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
