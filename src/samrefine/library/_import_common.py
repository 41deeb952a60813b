"""Shared pieces of the importers and exporters: ImportReport, file listing, JSON, progress."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..proposals import Proposals
from .format import LibraryError

__all__ = ["ImportReport"]


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
