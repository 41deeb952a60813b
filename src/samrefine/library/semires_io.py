"""SemiRES reference proposal files (one JSON per referent) and RefCOCO instances files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from ..proposals import Proposals
from ._import_common import ImportReport, _files, _load_json, _tqdm
from .format import LibraryError
from .refs import load_refs

__all__ = ["export_semires", "import_semires", "load_instances", "read_semires", "semires_counts"]


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
