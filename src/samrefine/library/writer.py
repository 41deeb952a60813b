"""Writing proposal libraries: create, append, resume, finish, shard, merge, verify.

Crash safety comes from SQLite, not from a protocol of ours. While building, the file is in
WAL mode with ``synchronous=FULL``: every commit is durable once ``append`` returns (with the
default ``commit_every=1``), and a process killed at any instant (SIGKILL, power loss) leaves a
database that SQLite recovers on the next open, holding every committed image. Re-running the
same build opens the file again, skips the committed ids and continues. ``finish`` writes the
counts and content digest, compacts the file (``VACUUM``), leaves WAL mode (one self-contained
file) and only then marks the library ``finished`` in one last transaction; a kill anywhere in
``finish`` leaves an unfinished library that the next run finishes again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sqlite3
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from ..proposals import Proposals
from .format import (
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    SCHEMA,
    DuplicateImageError,
    LibraryCorruptError,
    LibraryError,
    LibraryFinishedError,
    crc32,
    decode_record,
    dumps,
    encode_record,
    record_header,
)
from .reader import IDENTITY_KEYS, SUFFIX, ProposalLibrary, _check_file, _image_id, resolve_sources

__all__ = [
    "LibraryWriter",
    "VerifyReport",
    "create_library",
    "merge_libraries",
    "parse_shard",
    "sha256_file",
    "shard_from_env",
    "shard_ids",
    "shard_path",
    "verify_library",
]

log = logging.getLogger("samrefine.library")

_IF_EXISTS = ("resume", "error", "overwrite")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (e.g. a model checkpoint), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _remove_files(path: str) -> None:
    for p in (path, path + "-wal", path + "-shm", path + "-journal"):
        if os.path.exists(p):
            os.remove(p)


def _jsonable(value):
    """Parameters as JSON-safe values (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


class LibraryWriter:
    """Appends images to a library being built. Made by :func:`create_library`.

    Use as a context manager: leaving the block normally finishes the library; leaving it by an
    exception commits what was appended and leaves the library resumable.
    """

    def __init__(self, path: str, con: sqlite3.Connection, meta: dict, commit_every: int):
        self.path = path
        self._con = con
        self.meta = meta
        self._commit_every = commit_every
        self._pending = 0
        self._ids = {int(r[0]) for r in con.execute("SELECT image_id FROM images")}
        self._closed = False

    # ------------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`finish` has run (no more appends)."""
        return self._closed

    @property
    def compression(self) -> str:
        return self.meta.get("compression", "none")

    def __contains__(self, image_id) -> bool:
        return _image_id(image_id) in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def image_ids(self) -> set[int]:
        """Ids appended so far (committed, or pending in the open transaction)."""
        return set(self._ids)

    def _check_open(self) -> None:
        if self._closed:
            raise LibraryError(f"the writer of {self.path} is closed; open it again with "
                               "ProposalLibrary.create(path) to resume")

    def _begin(self) -> None:
        if not self._con.in_transaction:
            self._con.execute("BEGIN IMMEDIATE")

    # ------------------------------------------------------------------ writing

    def append(self, image_id, proposals: Proposals, *, image_size=None) -> None:
        """Add one image's proposals.

        Parameters
        ----------
        image_id : int
            COCO image id; must not be in the library yet.
        proposals : Proposals
            Masks at the image's original size ``(H, W)``.
        image_size : tuple of int, optional
            The image's ``(H, W)`` in pixels; when given, ``proposals.size`` must equal it.

        Raises
        ------
        DuplicateImageError
            If ``image_id`` was appended before.
        LibraryError
            If the sizes disagree or metadata cannot be stored.
        """
        self._check_open()
        key = _image_id(image_id)
        if not isinstance(proposals, Proposals):
            raise TypeError(f"append() takes samrefine.Proposals, got {type(proposals).__name__}"
                            "; convert SAM output with Proposals.from_sam(records)")
        if image_size is not None and tuple(int(v) for v in image_size) != proposals.size:
            raise LibraryError(f"image {key}: proposals are {proposals.size[0]}x"
                               f"{proposals.size[1]} but the image is {image_size[0]}x"
                               f"{image_size[1]}; store proposals at the image's original size")
        if key in self._ids:
            raise DuplicateImageError(f"image {key} is already in {self.path}; each image is "
                                      "stored once (skip ids already in the writer)")
        proposals._validate()
        record = encode_record(proposals, compression=self.compression,
                               with_geometry=bool(self.meta.get("with_geometry", True)))
        self._insert(key, record)

    def append_record(self, image_id, record: bytes) -> None:
        """Add an already encoded record (as :meth:`ProposalLibrary.raw` returns); used by
        merge. The record is decoded once to check it."""
        self._check_open()
        key = _image_id(image_id)
        if key in self._ids:
            raise DuplicateImageError(f"image {key} is already in {self.path}")
        decode_record(record, where=f"record for image {key}")
        self._insert(key, bytes(record))

    def _insert(self, key: int, record: bytes) -> None:
        h, w, n, r, _, _ = record_header(record)
        self._begin()
        try:
            self._con.execute("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (key, h, w, n, r, len(record), crc32(record)))
            self._con.execute("INSERT INTO records VALUES (?, ?)", (key, record))
            self._con.execute("DELETE FROM failures WHERE image_id = ?", (key,))
        except sqlite3.IntegrityError:
            raise DuplicateImageError(f"image {key} is already in {self.path}") from None
        self._ids.add(key)
        self._pending += 1
        if self._pending >= self._commit_every:
            self.commit()

    def record_failure(self, image_id, error: str, attempts: int = 1) -> None:
        """Note that an image could not be generated (kept until it is appended later)."""
        self._check_open()
        key = _image_id(image_id)
        self._begin()
        self._con.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?)",
                          (key, int(attempts), str(error)[:2000]))
        self.commit()

    def failures(self) -> dict[int, str]:
        """``{image_id: error}`` of images that failed and were not appended since."""
        return {int(k): e for k, e in self._con.execute("SELECT image_id, error FROM failures")}

    def commit(self) -> None:
        """Make every append so far durable."""
        if self._con.in_transaction:
            self._con.execute("COMMIT")
        self._pending = 0

    # ------------------------------------------------------------------ finishing

    def finish(self, *, vacuum: bool = True) -> str:
        """Seal the library: counts, content digest, compaction, then ``state = finished``.

        A finished library is immutable and opens lock-free. Returns the path.
        """
        self._check_open()
        self.commit()
        con = self._con
        digest = hashlib.sha256()
        n_masks = 0
        for key, crc, n, data in con.execute(
                "SELECT i.image_id, i.crc32, i.n_masks, r.data FROM images AS i "
                "JOIN records AS r USING (image_id) ORDER BY i.image_id"):
            if crc32(data) != crc:
                raise LibraryCorruptError(f"{self.path}: image {key}: record checksum mismatch "
                                          "while finishing; the file is damaged")
            digest.update(struct.pack("<qI", key, crc))
            digest.update(data)
            n_masks += n
        values = {"n_images": len(self._ids), "n_masks": n_masks,
                  "content_sha256": digest.hexdigest(),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [(k, dumps(v)) for k, v in values.items()])
        con.execute("COMMIT")
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode.lower() != "delete":
                raise sqlite3.OperationalError(f"journal mode stayed {mode}")
            if vacuum:
                con.execute("VACUUM")
        except sqlite3.OperationalError as e:
            raise LibraryError(f"{self.path}: cannot finish while another connection has the "
                               f"library open ({e}); close its readers and call finish() again "
                               "(the library stays resumable)") from None
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (dumps("finished"),))
        con.execute("COMMIT")
        self.meta.update(values, state="finished")
        self.close()
        return self.path

    def close(self) -> None:
        """Commit and close without finishing (the build can be resumed)."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._con.close()
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._closed:
            return
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def __repr__(self) -> str:
        return f"LibraryWriter({self.path!r}, images={len(self)})"


def _connect_rw(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, timeout=60)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    return con


def create_library(path, *, generator: str = "custom", model: str | None = None,
                   checkpoint: str | os.PathLike | None = None,
                   checkpoint_sha256: str | None = None, params: Mapping | None = None,
                   shard: tuple[int, int] | None = None, if_exists: str = "resume",
                   commit_every: int = 1, compression: str = "zlib",
                   with_geometry: bool = True, extra: Mapping | None = None) -> LibraryWriter:
    """Create a library for writing, or resume an unfinished one with the same provenance.

    Parameters
    ----------
    path : str or os.PathLike
        The library file (conventionally ``*.srlib``).
    generator : str
        Name of what made the masks (``"sam"``, ``"sam2"``, ``"classical"``, ...).
    model : str, optional
        Model name, e.g. ``"vit_h"``.
    checkpoint : path, optional
        Model checkpoint; its SHA-256 is computed and stored (or pass ``checkpoint_sha256``).
    params : mapping, optional
        Generator parameters (JSON-able); part of the build's identity.
    shard : (index, count), optional
        This file is shard ``index`` of ``count`` of one build.
    if_exists : {"resume", "error", "overwrite"}
        What to do when ``path`` exists. ``"resume"`` continues an unfinished library whose
        provenance matches and raises :class:`LibraryFinishedError` for a finished one.
    commit_every : int
        Appends per transaction (1: every append is durable when it returns).
    compression : {"zlib", "none"}
        Record compression. ``"zlib"`` (default) stores about 40% fewer bytes than raw
        varint records (and than pycocotools compressed-RLE JSON); ``"none"`` reads faster
        (no inflate). See ``docs/library-format.md`` for the measurements.
    with_geometry : bool
        Store per-mask ``area`` and ``bbox`` in the records.
    extra : mapping, optional
        More provenance (JSON-able), stored as ``meta['extra']``; not part of the identity.

    Returns
    -------
    LibraryWriter
    """
    path = os.path.abspath(os.fspath(path))
    if if_exists not in _IF_EXISTS:
        raise ValueError(f"if_exists={if_exists!r}; choose one of {_IF_EXISTS}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression={compression!r}; choose one of {COMPRESSIONS}")
    if int(commit_every) < 1:
        raise ValueError(f"commit_every must be >= 1, got {commit_every}")
    if shard is not None:
        shard = parse_shard(shard)
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        checkpoint_sha256 = sha256_file(checkpoint)
    from .. import __version__

    identity = {"generator": str(generator), "model": model,
                "checkpoint_sha256": checkpoint_sha256, "params": _jsonable(dict(params or {})),
                "compression": compression, "with_geometry": bool(with_geometry)}
    fresh = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "state": "building",
             **identity, "shard": list(shard) if shard else None,
             "samrefine_version": __version__,
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
             "extra": _jsonable(dict(extra or {}))}
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"directory {parent} does not exist; create it first")
    if os.path.exists(path):
        if if_exists == "error":
            raise LibraryError(f"{path} exists; pass if_exists='resume' to continue its build "
                               "or 'overwrite' to start again")
        if if_exists == "overwrite":
            _remove_files(path)
    exists = os.path.exists(path) and os.path.getsize(path) > 0
    if exists and not os.path.exists(path + "-wal"):
        _check_file(path)
    con = _connect_rw(path)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        con.close()
        raise LibraryCorruptError(f"{path}: cannot be opened as a library ({e})") from None
    if "meta" not in tables:
        # new file, or one killed before its schema committed: (re)initialise atomically
        con.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                con.execute(stmt)
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [(k, dumps(v)) for k, v in fresh.items()])
        con.execute("COMMIT")
        meta = dict(fresh)
    else:
        import json

        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
        if meta.get("format") != FORMAT_NAME:
            con.close()
            raise LibraryError(f"{path} exists and is not a samrefine library; choose another "
                               "path")
        if int(meta.get("format_version", 0)) != FORMAT_VERSION:
            con.close()
            raise LibraryError(f"{path} has format version {meta.get('format_version')}; "
                               f"this samrefine writes version {FORMAT_VERSION}")
        if meta.get("state") == "finished":
            con.close()
            raise LibraryFinishedError(f"{path} is a finished library; appends are not allowed "
                                       "(pass if_exists='overwrite' to rebuild it)")
        theirs = {k: meta.get(k) for k in IDENTITY_KEYS} | {"shard": meta.get("shard")}
        ours = dict(identity) | {"shard": list(shard) if shard else None}
        if theirs != ours:
            diff = sorted(k for k in ours if ours[k] != theirs[k])
            con.close()
            raise LibraryError(f"{path} is an unfinished build with different settings ("
                               + ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} now"
                                           for k in diff)
                               + "); resume it with the same settings or pass "
                               "if_exists='overwrite'")
        con.execute("PRAGMA journal_mode=WAL")
    return LibraryWriter(path, con, meta, int(commit_every))


# --------------------------------------------------------------------------------------------
# shards
# --------------------------------------------------------------------------------------------


def parse_shard(shard) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` to ``(i, n)`` with ``0 <= i < n``."""
    try:
        if isinstance(shard, str):
            i, n = (int(v) for v in shard.split("/"))
        else:
            i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be 'i/n' or (i, n) ints, got {shard!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: the index must satisfy 0 <= i < n")
    return i, n


def shard_from_env() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when ``torchrun`` (or a launcher setting both) started us."""
    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return None
    shard = parse_shard((rank, world))
    return shard if shard[1] > 1 else None


def shard_path(path, index: int, count: int) -> str:
    """``lib.srlib`` -> ``lib-shard-00001-of-00004.srlib`` (same directory)."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}-shard-{index:05d}-of-{count:05d}{ext or SUFFIX}"


def shard_ids(image_ids, index: int, count: int) -> list[int]:
    """The ids shard ``index`` of ``count`` builds: every ``count``-th of the sorted unique ids."""
    ids = sorted({_image_id(i) for i in image_ids})
    return ids[index::count]


def merge_libraries(shards, output, *, if_exists: str = "error", vacuum: bool = True,
                    progress: bool = True) -> str:
    """Merge finished shards of one build into one finished library.

    Parameters
    ----------
    shards : path, glob pattern or sequence of paths
        The shard files (all finished, from one build, with disjoint image ids).
    output : str or os.PathLike
        The merged library; must not be one of the shards.
    if_exists : {"error", "resume", "overwrite"}
        As in :func:`create_library` (``"resume"`` continues an interrupted merge).

    Returns
    -------
    str
        The output path.

    Raises
    ------
    DuplicateImageError
        If an image id is in two shards (the error names both files).
    """
    from tqdm.auto import tqdm

    src = ProposalLibrary.open(shards)
    out_abs = os.path.abspath(os.fspath(output))
    if out_abs in src.paths:
        raise LibraryError(f"merge output {out_abs} is one of its inputs; choose a new path")
    for s in src._shards:
        if not s.finished:
            raise LibraryError(f"shard {s.path} is not finished; finish (resume) its build "
                               "before merging")
    owner: dict[int, str] = {}
    for s in src._shards:
        for (key,) in s.query("SELECT image_id FROM images"):
            if key in owner:
                raise DuplicateImageError(f"image {key} is in both {owner[key]} and {s.path}; "
                                          "shards of one build must hold disjoint ids")
            owner[key] = s.path
    m = src._shards[0].meta
    writer = create_library(
        out_abs, generator=m.get("generator", "custom"), model=m.get("model"),
        checkpoint_sha256=m.get("checkpoint_sha256"), params=m.get("params"),
        if_exists=if_exists, commit_every=256, compression=m.get("compression", "none"),
        with_geometry=m.get("with_geometry", True),
        extra={**(m.get("extra") or {}),
               "merged_from": [os.path.basename(p) for p in src.paths]})
    by_path = {s.path: s for s in src._shards}
    todo = sorted(k for k in owner if k not in writer)
    for key in tqdm(todo, desc="merge", unit="img", disable=not progress):
        got = by_path[owner[key]].raw(key)
        writer.append_record(key, got[3])
    return writer.finish(vacuum=vacuum)


# --------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------


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
        head = (f"{'OK' if self.ok else 'FAILED'}: {len(self.files)} file(s), "
                f"{self.n_images} images, {self.n_masks} masks")
        return "\n".join([head] + [f"  {e}" for e in self.errors[:50]]
                         + ([f"  ... {len(self.errors) - 50} more"] if len(self.errors) > 50
                            else []))


def _verify_file(path: str, deep: bool, report: VerifyReport, progress: bool) -> None:
    from tqdm.auto import tqdm

    from .reader import _Shard

    try:
        shard = _Shard(path)
    except (OSError, LibraryError) as e:
        report.errors.append(str(e))
        return
    try:
        rows = shard.query("PRAGMA integrity_check")
        if [r[0] for r in rows] != ["ok"]:
            report.errors.append(f"{path}: SQLite integrity_check: "
                                 + "; ".join(str(r[0]) for r in rows[:5]))
            return
        meta = shard.meta
        index = shard.query("SELECT image_id, height, width, n_masks, n_runs, nbytes, crc32 "
                            "FROM images ORDER BY image_id")
        orphans = shard.query("SELECT count(*) FROM records WHERE image_id NOT IN "
                              "(SELECT image_id FROM images)")[0][0]
    except LibraryError as e:
        report.errors.append(str(e))
        return
    if orphans:
        report.errors.append(f"{path}: {orphans} records have no index row")
    digest = hashlib.sha256()
    n_masks = 0
    for key, h, w, n, r, nbytes, crc in tqdm(index, desc=f"verify {os.path.basename(path)}",
                                              unit="img", disable=not progress):
        where = f"{path}: image {key}"
        got = shard.query("SELECT data FROM records WHERE image_id = ?", (key,))
        if not got:
            report.errors.append(f"{where}: record missing")
            continue
        data = got[0][0]
        if len(data) != nbytes or crc32(data) != crc:
            report.errors.append(f"{where}: record checksum mismatch")
            continue
        digest.update(struct.pack("<qI", key, crc))
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
        if int(meta.get("n_images", -1)) != len(index):
            report.errors.append(f"{path}: meta says {meta.get('n_images')} images, the index "
                                 f"holds {len(index)}")
        if meta.get("content_sha256") != digest.hexdigest():
            report.errors.append(f"{path}: content digest differs from the one written at "
                                 "finish (records added, removed or altered)")


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
