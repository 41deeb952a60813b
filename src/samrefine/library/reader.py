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
import hashlib
import json
import os
import sqlite3
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

from ..proposals import Proposals
from .format import (
    FORMAT_NAME,
    READABLE_VERSIONS,
    LibraryCorruptError,
    LibraryError,
    crc32,
    decode_record,
    record_header,
)
from .keys import image_key, key_bytes

__all__ = ["SUFFIX", "ProposalLibrary"]

#: Conventional file suffix of a library (or of one shard).
SUFFIX = ".srlib"
#: Bytes of the file SQLite may memory-map (it maps no more than the file's size).
MMAP_SIZE = 1 << 40
#: Most shard files one thread of a reading process keeps open; the least recently used is
#: closed beyond it, so a library of many shards holds at most this many file descriptors per
#: reading thread. Reopening a shard costs about 0.1-0.25 ms, so random access over more
#: shards than this is several times slower than over a merged library (measured in
#: ``benchmarks/bench_shards.py``). Set ``SAMREFINE_MAX_OPEN_SHARDS`` to change it.
MAX_OPEN_SHARDS = int(os.environ.get("SAMREFINE_MAX_OPEN_SHARDS", "256"))
#: Meta keys that identify a build: shards of one build (and a resumed build) must agree.
IDENTITY_KEYS = (
    "generator",
    "model",
    "checkpoint_sha256",
    "params",
    "compression",
    "with_geometry",
)
#: SQL condition on ``failures AS f``: the failed image is not in the library after all.
ABSENT_FAILURE = "NOT EXISTS (SELECT 1 FROM images AS i WHERE i.image_id = f.image_id)"

_ORPHANS: list = []  # connections inherited across fork: never used nor closed in the child


def _image_id(image_id) -> int | str:
    """A validated image key (an int or a str name); see :mod:`samrefine.library.keys`."""
    return image_key(image_id)


def meta_digest(rows) -> str:
    """SHA-256 (hex) of ``meta`` rows ``(key, value text)`` other than ``meta_sha256``, in key
    order: ``key NUL value NUL`` each, UTF-8."""
    h = hashlib.sha256()
    for k, v in sorted(rows):
        if k != "meta_sha256":
            h.update(f"{k}\0{v}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def ids_digest(keys) -> str:
    """SHA-256 (hex) of every key's :func:`~samrefine.library.keys.key_bytes`, in key order
    (for int keys that is the keys as little-endian int64, hashed in one call)."""
    if not isinstance(keys, np.ndarray):
        keys = list(keys)
    if isinstance(keys, np.ndarray) or (keys and isinstance(keys[0], int)):
        return hashlib.sha256(np.asarray(keys, dtype="<i8").tobytes()).hexdigest()
    h = hashlib.sha256()
    for k in keys:
        h.update(key_bytes(k))
    return h.hexdigest()


class _Con:
    """A connection holder: weakly referenced by its shard (so ``close()`` reaches every
    thread's connection) and strongly only by its thread (so a finished thread's connection
    closes with the thread, without waiting for ``close()`` or the garbage collector)."""

    __slots__ = ("__weakref__", "con")

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __del__(self):
        try:
            self.con.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _sqlite_header(path: str) -> tuple[int, int | None]:
    """``(page_size, page_count or None)`` from a SQLite file's 100-byte header."""
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise LibraryCorruptError(
            f"{path}: not a samrefine library (no SQLite header; the file "
            f"is {os.path.getsize(path)} bytes)"
        )
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    valid = head[24:28] == head[92:96]
    return page_size, int.from_bytes(head[28:32], "big") if valid else None


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"proposal library {path} does not exist")
    if os.path.isdir(path):
        raise LibraryError(
            f"{path} is a directory; pass a library file, a list of shard files or a glob pattern"
        )
    page_size, pages = _sqlite_header(path)
    size = os.path.getsize(path)
    # with a journal or WAL beside it the file may be mid-transaction; SQLite recovers it
    recovering = os.path.exists(path + "-journal") or os.path.exists(path + "-wal")
    if pages is not None and size < page_size * pages and not recovering:
        raise LibraryCorruptError(
            f"{path}: truncated ({size} bytes, the header says "
            f"{page_size * pages}); rebuild or restore it"
        )


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
    raise TypeError(
        f"open() takes a path, a glob pattern or a non-empty list of shard paths, got {source!r}"
    )


class _Shard:
    """One library file, with lazily opened per-process, per-thread connections."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        _check_file(self.path)
        self.finished = not (
            os.path.exists(self.path + "-wal") or os.path.exists(self.path + "-journal")
        )
        self._reset()
        try:
            meta = self.read_meta()
            if self.finished and meta.get("state") != "finished":
                # an unfinished library may still change: no immutable flag, normal read locks
                self.finished = False
                self.close()
                meta = self.read_meta()
        except BaseException:
            self.close()
            raise
        self.meta = meta
        self.version = int(meta["format_version"])
        self._keys: Any = None

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._cons: weakref.WeakSet = weakref.WeakSet()
        self._keys = None

    def __getstate__(self):
        return {
            "path": self.path,
            "finished": self.finished,
            "meta": self.meta,
            "version": self.version,
        }  # the SQL cache is rebuilt

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def close(self) -> None:
        """Close every connection this process opened to the file, in every thread (so a
        writer elsewhere can finish); the next read opens a new one. Do not call it while
        another thread is reading this library."""
        if self._pid == os.getpid():
            for holder in list(self._cons):
                holder.con.close()
        self._cons = weakref.WeakSet()
        self._local = threading.local()

    def close_thread(self) -> None:
        """Close this thread's connection only (the others stay usable)."""
        holder = getattr(self._local, "con", None)
        if holder is not None and self._pid == os.getpid():
            holder.con.close()
            self._cons.discard(holder)
        self._local.con = None

    def connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never reuse the parent's connection
            _ORPHANS.append((self._local, self._cons))
            self._reset()
        holder = getattr(self._local, "con", None)
        if holder is None:
            if self.finished:
                mode = "ro&immutable=1"
            else:
                # an unfinished library may need crash recovery (a hot journal), which SQLite
                # does on open when it may write; the connection is still query-only
                writable = os.access(self.path, os.W_OK) and os.access(
                    os.path.dirname(self.path), os.W_OK
                )
                mode = "rw" if writable else "ro"
            uri = Path(self.path).as_uri() + "?mode=" + mode
            try:
                con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                holder = _Con(con)
                con.execute(f"PRAGMA mmap_size={MMAP_SIZE}")
                if not self.finished:  # mode=ro&immutable=1 cannot write anyway
                    con.execute("PRAGMA query_only=1")
            except sqlite3.Error as e:
                raise self.error(f"cannot open ({e})") from None
            self._local.con = holder
            self._cons.add(holder)
        return holder.con

    def error(self, what: str) -> LibraryCorruptError:
        return LibraryCorruptError(f"{self.path}: {what}; run `samrefine verify {self.path}`")

    def query(self, sql: str, args=()) -> list:
        try:
            return self.connection().execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise LibraryError(
                    f"{self.path} is not a samrefine proposal library ({e})"
                ) from None
            raise self.error(f"read failed ({e})") from None
        except sqlite3.DatabaseError as e:
            raise self.error(f"damaged database ({e})") from None
        except (UnicodeDecodeError, OverflowError, MemoryError) as e:
            raise self.error(f"undecodable value ({type(e).__name__}: {e})") from None

    def read_meta(self) -> dict:
        rows = self.query("SELECT key, value FROM meta")
        try:
            meta = {k: json.loads(v) for k, v in rows}
        except (ValueError, TypeError) as e:
            raise self.error(f"undecodable meta table ({e})") from None
        if meta.get("format") != FORMAT_NAME:
            if "format_version" in meta or "state" in meta:
                raise self.error("damaged meta table (format marker)")
            raise LibraryError(
                f"{self.path} is a SQLite file but not a samrefine proposal "
                "library (no format marker)"
            )
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.error(f"damaged meta table (format_version {version!r})")
        if version not in READABLE_VERSIONS:
            raise LibraryError(
                f"{self.path} has format version {version}; this samrefine "
                f"reads versions {READABLE_VERSIONS}: upgrade samrefine"
            )
        if "meta_sha256" in meta or (version >= 2 and meta.get("state") == "finished"):
            # written with state = finished, over every other row: any damage shows
            if meta.get("meta_sha256") != meta_digest(rows):
                raise self.error("meta table checksum mismatch (damaged meta table)")
        if meta.get("state") not in ("building", "finished"):
            raise self.error(f"damaged meta table (state {meta.get('state')!r})")
        for k in ("n_images", "n_masks"):
            v = meta.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise self.error(f"damaged meta table ({k} = {v!r})")
        return meta

    @property
    def named(self) -> bool:
        """Whether the file can hold name keys (version 2 has the ``names`` table)."""
        return self.version >= 2

    # ---------------------------------------------------------------- keys

    def _list_keys(self) -> list:
        if not self.named:
            return [r[0] for r in self.query("SELECT image_id FROM images ORDER BY image_id")]
        ints = self.query(
            "SELECT image_id FROM images AS i WHERE NOT EXISTS (SELECT 1 FROM "
            "names AS n WHERE n.image_id = i.image_id) ORDER BY image_id"
        )
        names = self.query(
            "SELECT n.name FROM names AS n JOIN images AS i USING (image_id) ORDER BY n.name"
        )
        if ints and names:
            raise self.error("the index mixes int and name keys")
        out = [r[0] for r in (names or ints)]
        if any(not isinstance(k, (int, str)) for k in out):
            raise self.error("the index holds a key that is neither an int nor a name")
        return out

    def keys(self):
        """Every key, sorted: an int64 array (int keys) or a list of str. For a finished file
        the list is read once per process and checked against the count and (version 2) the
        id digest written at finish, so a damaged index raises :class:`LibraryCorruptError`
        instead of giving a wrong list."""
        keys: Any
        if not self.finished:
            keys = self._list_keys()
            return keys if keys and isinstance(keys[0], str) else np.array(keys, np.int64)
        if self._keys is None:
            keys = self._list_keys()
            if not keys or isinstance(keys[0], int):
                keys = np.array(keys, np.int64)
            n = self.meta.get("n_images")
            if n is not None and n != len(keys):
                raise self.error(
                    f"the index lists {len(keys)} images, the library was "
                    f"finished with {n} (damaged index)"
                )
            want = self.meta.get("ids_sha256")
            if want is not None and ids_digest(keys) != want:
                raise self.error("image id list checksum mismatch (damaged index)")
            if self.version >= 2 and want is None:
                raise self.error("finished library without its id digest (damaged meta)")
            if isinstance(keys, np.ndarray) and np.any(keys[1:] <= keys[:-1]):
                raise self.error("the index lists ids out of order or twice (damaged index)")
            self._keys = (keys, keys if isinstance(keys, np.ndarray) else frozenset(keys))
        return self._keys[0]

    def verified_has(self, key) -> bool | None:
        """Membership from the verified id list, or None when it is not loaded (yet)."""
        if self._keys is None:
            return None
        lookup = self._keys[1]
        if isinstance(lookup, np.ndarray):
            if not isinstance(key, int):
                return False
            i = int(np.searchsorted(lookup, key))
            return i < lookup.size and int(lookup[i]) == key
        return key in lookup

    def has(self, key) -> bool:
        """Whether ``key`` is in this file (checked against the verified id list when
        finished)."""
        if self.finished:
            self.keys()
            return bool(self.verified_has(key))
        return bool(self.query(*self._row_sql("1", key)))

    def _row_sql(self, columns: str, key) -> tuple[str, tuple]:
        """SQL selecting ``columns`` from ``images AS i`` (joined with ``records AS r``) for
        the image keyed ``key`` (cached per column list and key type: lookups are hot)."""
        cache = self.__dict__.setdefault("_sql", {})
        got = cache.get((columns, type(key)))
        if got is None:
            got = cache[(columns, type(key))] = self._make_row_sql(columns, key)[0]
        return got, (() if got.endswith("WHERE 0") else (key,))

    def _make_row_sql(self, columns: str, key) -> tuple[str, tuple]:
        base = f"SELECT {columns} FROM images AS i LEFT JOIN records AS r USING (image_id) "
        if isinstance(key, str):
            if not self.named:
                return base + "WHERE 0", ()
            return (
                f"SELECT {columns} FROM names AS n JOIN images AS i USING (image_id) "
                "LEFT JOIN records AS r USING (image_id) WHERE n.name = ?",
                (key,),
            )
        if not self.named or (self.finished and self.meta.get("key_type") == "int"):
            # no names (version 1; or a finished int-keyed file, meta checked by its digest)
            return base + "WHERE i.image_id = ?", (key,)
        return (
            base + "WHERE i.image_id = ? AND NOT EXISTS (SELECT 1 FROM names AS n WHERE "
            "n.image_id = i.image_id)",
            (key,),
        )

    def count(self) -> int:
        if self.finished and "n_images" in self.meta:
            return int(self.meta["n_images"])
        return (
            len(self._list_keys())
            if self.named
            else int(self.query("SELECT count(*) FROM images")[0][0])
        )

    def failures(self) -> dict:
        """``{image_key: error}`` of failed images that are not in the library (a failure row
        of an image that is there, left by two writers racing on one file before writers
        were locked, is not a failure)."""
        if not self.named:
            return {
                int(k): e
                for k, e in self.query(
                    "SELECT image_id, error FROM failures AS f WHERE " + ABSENT_FAILURE
                )
            }
        rows = self.query(
            "SELECT coalesce(n.name, f.image_id), f.error FROM failures AS f "
            "LEFT JOIN names AS n USING (image_id) WHERE " + ABSENT_FAILURE
        )
        return {k: e for k, e in rows}

    def raw(self, key):
        """``(height, width, n_masks, record bytes)`` after the checksum check, or None."""
        rows = self.query(
            *self._row_sql("i.height, i.width, i.n_masks, i.n_runs, i.nbytes, i.crc32, r.data", key)
        )
        if not rows:
            if self.finished and self.has(key):
                raise self.error(
                    f"image {key!r} is in the verified id list but the index "
                    "lookup misses it (damaged index)"
                )
            return None
        if len(rows) > 1:
            raise self.error(f"image {key!r} has {len(rows)} index rows (damaged index)")
        h, w, n, r, nbytes, crc, data = rows[0]
        if type(data) is not bytes:
            raise self.error(f"image {key!r}: record missing")
        if len(data) != nbytes or crc32(data) != crc:  # also fails for non-int index values
            raise self.error(
                f"image {key!r}: record checksum mismatch (stored {crc!r}, "
                f"computed {crc32(data):08x}, {len(data)} of {nbytes!r} bytes)"
            )
        try:
            head = record_header(data)
        except LibraryCorruptError as e:
            raise self.error(f"image {key!r}: {e}") from None
        if head[:4] != (h, w, n, r):
            raise self.error(f"image {key!r}: record header disagrees with the index")
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
        self._reset_routing()

    def _reset_routing(self) -> None:
        # a reader's view of a shard's state is fixed at open (reopen to see a finish)
        self._routed = len(self._shards) > 1 and all(s.finished for s in self._shards)
        self._route: Any = None  # (sorted keys, owning shard index) or {name: shard index}
        self._recent = threading.local()  # per thread: shard indices in use, LRU first

    def __getstate__(self):
        return {"_shards": self._shards}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_routing()

    def _owner(self, key) -> int | None:
        """Index of the shard holding ``key`` (None: absent), from the verified id lists of
        finished shards: one binary search (int keys) or dict lookup (names) instead of a
        query per shard. Built on the first lookup, once per process."""
        if self._route is None:
            lists = []
            for s in self._shards:
                lists.append(s.keys())
                s.close_thread()  # reading 256 id lists must not leave 256 files open
            if any(isinstance(k, list) and k for k in lists):
                route: dict = {}
                for i, ks in enumerate(lists):
                    for k in ks:
                        if isinstance(k, int) or k in route:
                            raise LibraryError(
                                f"image {k!r} is in two shards of {self.path} "
                                "(or the shards mix int and name keys)"
                            )
                        route[k] = i
                self._route = route
            else:
                flat = np.concatenate([np.asarray(k, np.int64) for k in lists])
                owner = np.repeat(np.arange(len(lists), dtype=np.int32), [len(k) for k in lists])
                order = np.argsort(flat, kind="stable")
                flat, owner = flat[order], owner[order]
                if flat.size > 1 and np.any(flat[1:] == flat[:-1]):
                    dup = int(flat[1:][flat[1:] == flat[:-1]][0])
                    raise LibraryError(
                        f"image {dup} is in two shards of {self.path}; shards of "
                        "one build hold disjoint ids"
                    )
                self._route = (flat, owner)
        route = self._route
        if isinstance(route, dict):
            return route.get(key)
        if not isinstance(key, int):
            return None
        flat, owner = route
        i = int(np.searchsorted(flat, key))
        return int(owner[i]) if i < flat.size and int(flat[i]) == key else None

    def _touch(self, index: int) -> None:
        """Keep at most :data:`MAX_OPEN_SHARDS` shard files open in this thread (LRU)."""
        recent = getattr(self._recent, "order", None)
        if recent is None:
            recent = self._recent.order = {}
        recent.pop(index, None)
        recent[index] = True
        while len(recent) > MAX_OPEN_SHARDS:
            old = next(iter(recent))
            del recent[old]
            self._shards[old].close_thread()

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
                raise LibraryError(
                    f"{s.path} and {shards[0].path} come from different builds "
                    f"(they differ in {', '.join(diff)}); open them separately"
                )
        return cls(shards)

    @staticmethod
    def create(path, **kwargs):
        """Create (or resume) a library for writing; see :func:`samrefine.library.writer.
        create_library` for the parameters. Returns a :class:`LibraryWriter`."""
        from .writer import create_library

        return create_library(path, **kwargs)

    @staticmethod
    def merge(shards, output, **kwargs) -> str:
        """Merge finished shards into one library; see :func:`samrefine.library.merge.
        merge_libraries`. Returns the output path."""
        from .merge import merge_libraries

        return merge_libraries(shards, output, **kwargs)

    # ------------------------------------------------------------------ lookups

    def _find(self, image_id):
        key = _image_id(image_id)
        if self._routed:
            index = self._owner(key)
            if index is None:
                return key, None, None
            shard = self._shards[index]
            self._touch(index)
            got = shard.raw(key)
            if got is None:  # pragma: no cover - raw() raises for a verified key it misses
                raise shard.error(f"image {key!r} is listed but not found")
            return key, shard, got
        for i, shard in enumerate(self._shards):
            if shard.verified_has(key) is False:
                continue  # a finished shard whose verified id list is loaded
            if len(self._shards) > 1:
                self._touch(i)
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
            raise KeyError(f"image id {key!r} is not in the proposal library {self.path}")
        try:
            return decode_record(got[3], where=f"{shard.path}: image {key!r}")
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
            raise KeyError(f"image id {key!r} is not in the proposal library {self.path}")
        return got[3]

    def image_size(self, image_id) -> tuple[int, int]:
        """``(H, W)`` in pixels of an image, from its checksum-verified record header (the
        record is not decoded)."""
        key, _, got = self._find(image_id)
        if got is None:
            raise KeyError(f"image id {key!r} is not in the proposal library {self.path}")
        return int(got[0]), int(got[1])

    def __contains__(self, image_id) -> bool:
        try:
            key = _image_id(image_id)
        except (TypeError, ValueError):
            return False
        if self._routed:
            return self._owner(key) is not None
        return any(s.has(key) for s in self._shards)

    def __len__(self) -> int:
        return sum(s.count() for s in self._shards)

    def image_ids(self) -> np.ndarray:
        """Every image key, sorted: ``(n_images,)`` int64 for int keys, an object array of
        str for name keys. For finished files the list is checked against the digest written
        at finish (a damaged index raises :class:`LibraryCorruptError`)."""
        keys = [s.keys() for s in self._shards]
        named = [isinstance(k, list) for k in keys if len(k)]
        if any(named) and not all(named):
            raise LibraryError(f"the shards of {self.path} mix int and name keys")
        if any(named):
            return np.array(sorted(k for ks in keys for k in ks), dtype=object)
        if len(keys) == 1:
            return keys[0].copy()
        return np.sort(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    def __iter__(self) -> Iterator:
        return iter(self.image_ids().tolist())

    def items(self) -> Iterator[tuple]:
        """``(image_key, Proposals)`` in key order."""
        for key in self.image_ids().tolist():
            yield key, self[key]

    def failures(self) -> dict:
        """Images whose generation failed during the build: ``{image_key: error}``."""
        out = {}
        for s in self._shards:
            out.update(s.failures())
        return {k: e for k, e in out.items() if k not in self}  # made in another shard

    # ------------------------------------------------------------------ description

    @property
    def path(self) -> str:
        """The library file (the first shard's, for a set of shards)."""
        return (
            self._shards[0].path
            if len(self._shards) == 1
            else f"{self._shards[0].path} (+{len(self._shards) - 1} shards)"
        )

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
            first["shards"] = [
                {"path": s.path, "n_images": s.count(), "state": s.meta.get("state")}
                for s in self._shards
            ]
            first["n_masks"] = sum(int(s.meta.get("n_masks", 0)) for s in self._shards)
        return first

    def verify(self, deep: bool = False, progress: bool = False):
        """Check every file; see :func:`samrefine.library.verify.verify_library`."""
        from .verify import verify_library

        return verify_library(self.paths, deep=deep, progress=progress)

    def __repr__(self) -> str:
        return (
            f"ProposalLibrary({self.path!r}, images={len(self)}, "
            f"state={'finished' if self.finished else 'building'})"
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close every connection this process holds to the library's files, in every thread
        (a writer resuming the build elsewhere can then finish). Reading again reopens them."""
        for s in self._shards:
            s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
