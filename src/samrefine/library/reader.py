"""Reading a proposal library: ``ProposalLibrary.open(path) [image_id] -> Proposals``.

A finished library is immutable, so it is opened read-only with SQLite's ``immutable=1`` URI
flag: no lock files, no locking calls (safe on NFS/Lustre), pages read through ``mmap`` (shared
by every process on the node through the page cache; nothing is copied per worker). Connections
are opened lazily, one per process and thread: a forked DataLoader worker never touches its
parent's connection (a PID check), and a spawned worker receives only the paths (pickling
drops connections). Opening reads the SQLite header and the ``meta`` table only: constant time
and memory whatever the library's size.

Every record is checked against its CRC32 before it is decoded, and decoding validates the
runs; a damaged file raises :class:`LibraryCorruptError` naming the file and the image id,
never a wrong mask.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from ..proposals import Proposals
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LibraryCorruptError,
    LibraryError,
    crc32,
    decode_record,
    record_header,
)

__all__ = ["SUFFIX", "ProposalLibrary"]

#: Conventional file suffix of a library (or of one shard).
SUFFIX = ".srlib"
#: Bytes of the file SQLite may memory-map (it maps no more than the file's size).
MMAP_SIZE = 1 << 40
#: Meta keys that identify a build: shards of one build (and a resumed build) must agree.
IDENTITY_KEYS = ("generator", "model", "checkpoint_sha256", "params", "compression",
                 "with_geometry")

_ORPHANS: list = []  # connections inherited across fork: never used nor closed in the child


def _image_id(image_id) -> int:
    if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
        raise TypeError(f"image ids are ints (COCO image ids), got {type(image_id).__name__} "
                        f"{image_id!r}")
    key = int(image_id)
    if not -2**63 <= key < 2**63:
        raise ValueError(f"image id {key} does not fit in a signed 64-bit integer")
    return key


def _sqlite_header(path: str) -> tuple[int, int | None]:
    """``(page_size, page_count or None)`` from a SQLite file's 100-byte header."""
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise LibraryCorruptError(f"{path}: not a samrefine library (no SQLite header; the file "
                                  f"is {os.path.getsize(path)} bytes)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    valid = head[24:28] == head[92:96]
    return page_size, int.from_bytes(head[28:32], "big") if valid else None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"proposal library {path} does not exist")
    if os.path.isdir(path):
        raise LibraryError(f"{path} is a directory; pass a library file, a list of shard "
                           "files or a glob pattern")
    page_size, pages = _sqlite_header(path)
    size = os.path.getsize(path)
    # with a journal or WAL beside it the file may be mid-transaction; SQLite recovers it
    recovering = os.path.exists(path + "-journal") or os.path.exists(path + "-wal")
    if pages is not None and size < page_size * pages and not recovering:
        raise LibraryCorruptError(f"{path}: truncated ({size} bytes, the header says "
                                  f"{page_size * pages}); rebuild or restore it")


def resolve_sources(source) -> list[str]:
    """Library files named by ``source``: a path, a glob pattern, a directory of ``*.srlib``
    shard files, or a sequence of paths."""
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if any(c in s for c in "*?[") and not os.path.exists(s):
            paths = sorted(glob.glob(s))
            if not paths:
                raise FileNotFoundError(f"no library file matches {s!r}")
            return paths
        if os.path.isdir(s):
            paths = sorted(glob.glob(os.path.join(s, "*" + SUFFIX)))
            if not paths:
                raise FileNotFoundError(f"directory {s} holds no *{SUFFIX} library files")
            return paths
        return [s]
    if isinstance(source, Sequence) and source:
        return [os.fspath(p) for p in source]
    raise TypeError(f"open() takes a path, a glob pattern or a non-empty list of shard paths, "
                    f"got {source!r}")


class _Shard:
    """One library file, with lazily opened per-process, per-thread connections."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        _check_file(self.path)
        self.finished = not (os.path.exists(self.path + "-wal")
                             or os.path.exists(self.path + "-journal"))
        self._reset()
        meta = self.read_meta()
        if self.finished and meta.get("state") != "finished":
            # an unfinished library may still change: no immutable flag, normal read locks
            self.finished = False
            self.close()
            meta = self.read_meta()
        self.meta = meta
        if meta.get("format") != FORMAT_NAME:
            raise LibraryError(f"{self.path} is a SQLite file but not a samrefine proposal "
                               "library (no format marker)")
        version = int(meta.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise LibraryError(f"{self.path} has format version {version}; this samrefine "
                               f"reads up to {FORMAT_VERSION}: upgrade samrefine")

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()

    def __getstate__(self):
        return {"path": self.path, "finished": self.finished, "meta": self.meta}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        """Close this thread's connection (if this process opened it)."""
        con = getattr(self._local, "con", None)
        if con is not None and self._pid == os.getpid():
            con.close()
        self._local.con = None

    def connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never reuse the parent's connection
            _ORPHANS.append(self._local)
            self._reset()
        con = getattr(self._local, "con", None)
        if con is None:
            if self.finished:
                mode = "ro&immutable=1"
            else:
                # an unfinished library may need crash recovery (a hot journal), which SQLite
                # does on open when it may write; the connection is still query-only
                writable = os.access(self.path, os.W_OK) and os.access(
                    os.path.dirname(self.path), os.W_OK)
                mode = "rw" if writable else "ro"
            uri = Path(self.path).as_uri() + "?mode=" + mode
            try:
                con = sqlite3.connect(uri, uri=True, isolation_level=None,
                                      check_same_thread=False)
                con.execute(f"PRAGMA mmap_size={MMAP_SIZE}")
                con.execute("PRAGMA query_only=1")
            except sqlite3.Error as e:
                raise self.error(f"cannot open ({e})") from None
            self._local.con = con
        return con

    def error(self, what: str) -> LibraryCorruptError:
        return LibraryCorruptError(f"{self.path}: {what}; run `samrefine verify {self.path}`")

    def query(self, sql: str, args=()) -> list:
        try:
            return self.connection().execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise LibraryError(f"{self.path} is not a samrefine proposal library "
                                   f"({e})") from None
            raise self.error(f"read failed ({e})") from None
        except sqlite3.DatabaseError as e:
            raise self.error(f"damaged database ({e})") from None

    def read_meta(self) -> dict:
        rows = self.query("SELECT key, value FROM meta")
        try:
            return {k: json.loads(v) for k, v in rows}
        except ValueError as e:
            raise self.error(f"undecodable meta table ({e})") from None

    def count(self) -> int:
        if self.finished and "n_images" in self.meta:
            return int(self.meta["n_images"])
        return int(self.query("SELECT count(*) FROM images")[0][0])

    def raw(self, key: int):
        """``(height, width, n_masks, record bytes)`` after the checksum check, or None."""
        rows = self.query("SELECT i.height, i.width, i.n_masks, i.n_runs, i.nbytes, i.crc32, "
                          "r.data FROM images AS i LEFT JOIN records AS r USING (image_id) "
                          "WHERE i.image_id = ?", (key,))
        if not rows:
            return None
        h, w, n, r, nbytes, crc, data = rows[0]
        where = f"image {key}"
        if not isinstance(data, bytes):
            raise self.error(f"{where}: record missing")
        if len(data) != nbytes or crc32(data) != crc:
            raise self.error(f"{where}: record checksum mismatch (stored {crc:08x}, computed "
                             f"{crc32(data):08x}, {len(data)} of {nbytes} bytes)")
        try:
            if record_header(data)[:4] != (h, w, n, r):
                raise self.error(f"{where}: record header disagrees with the index")
        except LibraryCorruptError as e:
            raise self.error(f"{where}: {e}") from None
        return h, w, n, data


class ProposalLibrary:
    """A read-only proposal library: one image's SAM (or other) masks per image id.

    Open with :meth:`open`; build with :meth:`create`; combine shards with :meth:`merge`.

    Examples
    --------
    >>> lib = ProposalLibrary.open("refcoco_sam_vit_h.srlib")   # doctest: +SKIP
    >>> props = lib[9].resize((480, 480))                      # doctest: +SKIP
    """

    def __init__(self, shards: list[_Shard]):
        self._shards = shards

    # ------------------------------------------------------------------ constructors

    @classmethod
    def open(cls, source) -> ProposalLibrary:
        """Open a library, or a set of shards as one library, for reading.

        Parameters
        ----------
        source : str, os.PathLike or sequence of them
            A library file; a glob pattern (``"lib-shard-*.srlib"``); a directory holding
            ``*.srlib`` shard files; or a list of shard files. Shards must come from one build
            (same generator, model, checkpoint and parameters) and hold disjoint image ids.

        Returns
        -------
        ProposalLibrary

        Raises
        ------
        FileNotFoundError
            If a file is missing (the error names it).
        LibraryCorruptError
            If a file is truncated or not a readable database.
        LibraryError
            If a file is not a samrefine library, is from a newer format, or the shards do not
            belong to one build.
        """
        shards = [_Shard(p) for p in resolve_sources(source)]
        ident = [{k: s.meta.get(k) for k in IDENTITY_KEYS} for s in shards]
        for s, i in zip(shards[1:], ident[1:]):
            if i != ident[0]:
                diff = sorted(k for k in IDENTITY_KEYS if i[k] != ident[0][k])
                raise LibraryError(f"{s.path} and {shards[0].path} come from different builds "
                                   f"(they differ in {', '.join(diff)}); open them separately")
        return cls(shards)

    @staticmethod
    def create(path, **kwargs):
        """Create (or resume) a library for writing; see :func:`samrefine.library.writer.
        create_library` for the parameters. Returns a :class:`LibraryWriter`."""
        from .writer import create_library

        return create_library(path, **kwargs)

    @staticmethod
    def merge(shards, output, **kwargs) -> str:
        """Merge finished shards into one library; see :func:`samrefine.library.writer.
        merge_libraries`. Returns the output path."""
        from .writer import merge_libraries

        return merge_libraries(shards, output, **kwargs)

    # ------------------------------------------------------------------ lookups

    def _find(self, image_id):
        key = _image_id(image_id)
        for shard in self._shards:
            got = shard.raw(key)
            if got is not None:
                return key, shard, got
        return key, None, None

    def __getitem__(self, image_id) -> Proposals:
        """Proposals of one image, at its original size.

        Raises ``KeyError`` if the image is not in the library and
        :class:`LibraryCorruptError` (naming the file and image) if its record is damaged.
        """
        key, shard, got = self._find(image_id)
        if got is None:
            raise KeyError(f"image id {key} is not in the proposal library {self.path}")
        try:
            return decode_record(got[3], where=f"{shard.path}: image {key}")
        except LibraryCorruptError as e:
            raise LibraryCorruptError(f"{e}; run `samrefine verify {shard.path}`") from None

    def get(self, image_id, default=None):
        """``self[image_id]``, or ``default`` when the image is not in the library."""
        try:
            return self[image_id]
        except KeyError:
            return default

    def raw(self, image_id) -> bytes:
        """The checksum-verified record bytes of one image (format: ``docs/library-format.md``)."""
        key, _, got = self._find(image_id)
        if got is None:
            raise KeyError(f"image id {key} is not in the proposal library {self.path}")
        return got[3]

    def image_size(self, image_id) -> tuple[int, int]:
        """``(H, W)`` in pixels of an image, read from the index (no record is decoded)."""
        key = _image_id(image_id)
        for shard in self._shards:
            rows = shard.query("SELECT height, width FROM images WHERE image_id = ?", (key,))
            if rows:
                return int(rows[0][0]), int(rows[0][1])
        raise KeyError(f"image id {key} is not in the proposal library {self.path}")

    def __contains__(self, image_id) -> bool:
        try:
            key = _image_id(image_id)
        except (TypeError, ValueError):
            return False
        return any(s.query("SELECT 1 FROM images WHERE image_id = ?", (key,))
                   for s in self._shards)

    def __len__(self) -> int:
        return sum(s.count() for s in self._shards)

    def image_ids(self) -> np.ndarray:
        """Every image id, sorted, ``(n_images,)`` int64 (reads the small index table)."""
        ids = [np.array([r[0] for r in s.query("SELECT image_id FROM images ORDER BY image_id")],
                        np.int64) for s in self._shards]
        return np.sort(np.concatenate(ids)) if ids else np.zeros(0, np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.image_ids().tolist())

    def items(self) -> Iterator[tuple[int, Proposals]]:
        """``(image_id, Proposals)`` in id order."""
        for key in self.image_ids().tolist():
            yield key, self[key]

    def failures(self) -> dict[int, str]:
        """Images whose generation failed during the build: ``{image_id: error}``."""
        out = {}
        for s in self._shards:
            out.update({int(k): e for k, e in s.query("SELECT image_id, error FROM failures")})
        return out

    # ------------------------------------------------------------------ description

    @property
    def path(self) -> str:
        """The library file (the first shard's, for a set of shards)."""
        return self._shards[0].path if len(self._shards) == 1 else \
            f"{self._shards[0].path} (+{len(self._shards) - 1} shards)"

    @property
    def paths(self) -> list[str]:
        """Every file of the library (one per shard)."""
        return [s.path for s in self._shards]

    @property
    def finished(self) -> bool:
        """Whether every shard is finished (immutable, opened lock-free)."""
        return all(s.finished for s in self._shards)

    @property
    def info(self) -> dict:
        """Format version, state, provenance and counts (from the ``meta`` tables)."""
        first = dict(self._shards[0].meta)
        first["n_images"] = len(self)
        first["files"] = self.paths
        first["bytes"] = sum(os.path.getsize(p) for p in self.paths)
        first["state"] = "finished" if self.finished else "building"
        if len(self._shards) > 1:
            first["shards"] = [{"path": s.path, "n_images": s.count(),
                                "state": s.meta.get("state")} for s in self._shards]
            first["n_masks"] = sum(int(s.meta.get("n_masks", 0)) for s in self._shards)
        return first

    def verify(self, deep: bool = False, progress: bool = False):
        """Check every file; see :func:`samrefine.library.writer.verify_library`."""
        from .writer import verify_library

        return verify_library(self.paths, deep=deep, progress=progress)

    def __repr__(self) -> str:
        return (f"ProposalLibrary({self.path!r}, images={len(self)}, "
                f"state={'finished' if self.finished else 'building'})")

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close this thread's connections (others close when their thread or process ends)."""
        for s in self._shards:
            s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
