"""Checking library files for damage: integrity, record checksums, digests (verify_library)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from dataclasses import dataclass, field

import numpy as np

from .format import LibraryCorruptError, LibraryError, crc32, decode_record
from .keys import key_bytes, key_type
from .reader import _Shard, ids_digest, resolve_sources

__all__ = ["VerifyReport", "verify_library"]


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_library`: ``ok`` and one line per problem (naming the file)."""

    files: list[str]
    n_images: int = 0
    n_masks: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        head = (
            f"{'OK' if self.ok else 'FAILED'}: {len(self.files)} file(s), "
            f"{self.n_images} images, {self.n_masks} masks"
        )
        return "\n".join(
            [head]
            + [f"  {e}" for e in self.errors[:50]]
            + ([f"  ... {len(self.errors) - 50} more"] if len(self.errors) > 50 else [])
        )


def _verify_file(path: str, deep: bool, report: VerifyReport, progress: bool) -> None:
    try:
        shard = _Shard(path)
    except (OSError, LibraryError) as e:
        report.errors.append(str(e))
        return
    try:
        _verify_shard(shard, deep, report, progress)
    except LibraryError as e:
        report.errors.append(str(e))
    except (sqlite3.Error, ValueError, TypeError, KeyError, OverflowError) as e:
        # whatever a damaged file makes the checks trip on is damage, reported as such
        report.errors.append(f"{path}: damaged ({type(e).__name__}: {e})")
    finally:
        shard.close()  # a verify never keeps a building library's writer from finishing


def _verify_shard(shard, deep: bool, report: VerifyReport, progress: bool) -> None:
    from tqdm.auto import tqdm

    path = shard.path
    rows = shard.query("PRAGMA integrity_check")
    if [r[0] for r in rows] != ["ok"]:
        report.errors.append(
            f"{path}: SQLite integrity_check: " + "; ".join(str(r[0]) for r in rows[:5])
        )
        return
    meta = shard.meta
    cols = "i.image_id, i.height, i.width, i.n_masks, i.n_runs, i.nbytes, i.crc32"
    if shard.named:
        index = shard.query(
            f"SELECT coalesce(n.name, i.image_id), {cols} FROM images AS i "
            "LEFT JOIN names AS n USING (image_id)"
        )
    else:
        index = shard.query(f"SELECT i.image_id, {cols} FROM images AS i")
    try:
        key_type(k for k, *_ in index)
    except ValueError as e:
        report.errors.append(f"{path}: {e}")
        return
    index.sort(key=lambda row: row[0])
    orphans = shard.query(
        "SELECT count(*) FROM records WHERE image_id NOT IN (SELECT image_id FROM images)"
    )[0][0]
    if orphans:
        report.errors.append(f"{path}: {orphans} records have no index row")
    digest = hashlib.sha256()
    n_masks = 0
    for key, row, h, w, n, r, nbytes, crc in tqdm(
        index, desc=f"verify {os.path.basename(path)}", unit="img", disable=not progress
    ):
        where = f"{path}: image {key!r}"
        got = shard.query("SELECT data FROM records WHERE image_id = ?", (row,))
        if not got or not isinstance(got[0][0], bytes):
            report.errors.append(f"{where}: record missing")
            continue
        data = got[0][0]
        if len(data) != nbytes or crc32(data) != crc:
            report.errors.append(f"{where}: record checksum mismatch")
            continue
        digest.update(key_bytes(key) + struct.pack("<I", crc))
        digest.update(data)
        try:
            props = decode_record(data, where=where)
        except LibraryCorruptError as e:
            report.errors.append(str(e))
            continue
        if (props.size, len(props), props.starts.size) != ((h, w), n, r):
            report.errors.append(f"{where}: record disagrees with the index row")
            continue
        n_masks += n
        if deep:
            if "area" in props.meta and not np.array_equal(props.meta["area"], props.area):
                report.errors.append(f"{where}: stored areas differ from the runs")
            if "bbox" in props.meta and not np.array_equal(props.meta["bbox"], props.bbox):
                report.errors.append(f"{where}: stored boxes differ from the runs")
    report.n_images += len(index)
    report.n_masks += n_masks
    if meta.get("state") == "finished":
        if meta.get("n_images", -1) != len(index):
            report.errors.append(
                f"{path}: meta says {meta.get('n_images')} images, the index holds {len(index)}"
            )
        if meta.get("content_sha256") != digest.hexdigest():
            report.errors.append(
                f"{path}: content digest differs from the one written at "
                "finish (records added, removed or altered)"
            )
        if "ids_sha256" in meta and meta["ids_sha256"] != ids_digest(k for k, *_ in index):
            report.errors.append(
                f"{path}: image id digest differs from the one written at finish (damaged index)"
            )


def verify_library(source, *, deep: bool = False, progress: bool = False) -> VerifyReport:
    """Check library files: SQLite integrity, every record's CRC32 and decoding, index
    consistency and (finished files) the content digest.

    Parameters
    ----------
    source : path, glob pattern or sequence of paths
    deep : bool
        Also recompute each mask's area and box and compare them with the stored ones.
    progress : bool
        Show a progress bar per file.

    Returns
    -------
    VerifyReport
        ``report.ok`` is False when anything is wrong; ``report.errors`` names file and image.
    """
    try:
        paths = resolve_sources(source)
    except FileNotFoundError as e:
        return VerifyReport(files=[str(source)], errors=[str(e)])
    report = VerifyReport(files=[os.path.abspath(p) for p in paths])
    for p in report.files:
        _verify_file(p, deep, report, progress)
    return report
