"""Writing proposal libraries: create, append, resume, finish, shard.

Merging shards lives in :mod:`samrefine.library.merge`, checking files in
:mod:`samrefine.library.verify`.

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
import json
import logging
import os
import platform
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Mapping
from typing import Any

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
from .keys import key_bytes, key_type
from .reader import (
    ABSENT_FAILURE,
    IDENTITY_KEYS,
    SUFFIX,
    _check_file,
    _image_id,
    ids_digest,
    meta_digest,
)

fcntl: Any
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = [
    "LibraryWriter",
    "create_library",
    "parse_shard",
    "sha256_file",
    "shard_from_env",
    "shard_ids",
    "shard_path",
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


class _WriterLock:
    """An exclusive ``flock`` on ``<library>.lock``, held by the one writer of a library file.

    A second writer (another process, or another writer in this one) is refused at once, with
    the holder's pid, host and start time in the message. The lock file records the holder and
    is removed when the writer closes. On filesystems without ``flock`` support the library is
    written unlocked (logged).
    """

    def __init__(self, path: str):
        self.lib = path
        self.path = path + ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 500).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise LibraryError(
                    f"{self.lib} is being written by another writer ({holder}); "
                    "one file takes one writer: give each process its own shard "
                    "(shard='i/n', RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS)"
                    f" or wait for it (stale? delete {self.path} only if that "
                    "process is gone)"
                ) from None
            except OSError as e:
                os.close(fd)
                log.warning("%s: cannot lock (%s); writing without a writer lock", self.lib, e)
                return
            try:  # the lock file may have been removed by the previous holder meanwhile
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(
                fd,
                (
                    f"pid {os.getpid()} on {socket.gethostname()} since "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
                ).encode(),
            )
            self.fd = fd
            return

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


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

    def __init__(
        self,
        path: str,
        con: sqlite3.Connection,
        meta: dict,
        commit_every: int,
        lock: _WriterLock | None = None,
    ):
        self.path = path
        self._con = con
        self.meta = meta
        self._commit_every = commit_every
        self._pending = 0
        self._lock = lock
        ints = [
            int(r[0])
            for r in con.execute(
                "SELECT image_id FROM images AS i WHERE NOT EXISTS (SELECT 1 FROM names AS n "
                "WHERE n.image_id = i.image_id)"
            )
        ]
        names = [
            r[0]
            for r in con.execute("SELECT n.name FROM names AS n JOIN images AS i USING (image_id)")
        ]
        self._ids: set = set(ints) | set(names)
        failed = con.execute(
            "SELECT count(*) FROM failures AS f WHERE NOT EXISTS (SELECT 1 "
            "FROM names AS n WHERE n.image_id = f.image_id)"
        ).fetchone()[0]
        named = con.execute("SELECT count(*) FROM names").fetchone()[0]
        self._kind = "str" if named else ("int" if ints or failed else None)
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

    def image_ids(self) -> set:
        """Ids appended so far (committed, or pending in the open transaction)."""
        return set(self._ids)

    def _check_open(self) -> None:
        if self._closed:
            raise LibraryError(
                f"the writer of {self.path} is closed; open it again with "
                "ProposalLibrary.create(path) to resume"
            )

    def _begin(self) -> None:
        if not self._con.in_transaction:
            self._con.execute("BEGIN IMMEDIATE")

    # ------------------------------------------------------------------ writing

    def append(self, image_id, proposals: Proposals, *, image_size=None) -> None:
        """Add one image's proposals.

        Parameters
        ----------
        image_id : int or str
            COCO image id or an image name (``"2007_000032"``); must not be in the library
            yet. One library holds keys of one type.
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
            raise TypeError(
                f"append() takes samrefine.Proposals, got {type(proposals).__name__}"
                "; convert SAM output with Proposals.from_sam(records)"
            )
        if image_size is not None and tuple(int(v) for v in image_size) != proposals.size:
            raise LibraryError(
                f"image {key!r}: proposals are {proposals.size[0]}x"
                f"{proposals.size[1]} but the image is {image_size[0]}x"
                f"{image_size[1]}; store proposals at the image's original size"
            )
        if key in self._ids:
            raise DuplicateImageError(
                f"image {key!r} is already in {self.path}; each image "
                "is stored once (skip ids already in the writer)"
            )
        proposals._validate()
        record = encode_record(
            proposals,
            compression=self.compression,
            with_geometry=bool(self.meta.get("with_geometry", True)),
        )
        self._insert(key, record)

    def append_record(self, image_id, record: bytes) -> None:
        """Add an already encoded record (as :meth:`ProposalLibrary.raw` returns); used by
        merge. The record is decoded once to check it."""
        self._check_open()
        key = _image_id(image_id)
        if key in self._ids:
            raise DuplicateImageError(f"image {key!r} is already in {self.path}")
        decode_record(record, where=f"record for image {key!r}")
        self._insert(key, bytes(record))

    def _row_id(self, key) -> int:
        """The ``image_id`` column value of ``key`` (a ``names`` row is made for a new name,
        inside the open transaction); refuses a second key type."""
        kind = "int" if isinstance(key, int) else "str"
        if self._kind not in (None, kind):
            raise LibraryError(
                f"image {key!r}: {self.path} holds {self._kind} keys; one "
                "library holds keys of one type (ints or names)"
            )
        if kind == "int":
            return key
        got = self._con.execute("SELECT image_id FROM names WHERE name = ?", (key,)).fetchone()
        if got is not None:
            return int(got[0])
        row_id = self._con.execute("INSERT INTO names(name) VALUES (?)", (key,)).lastrowid
        assert row_id is not None  # an INSERT always sets it
        return int(row_id)

    def _insert(self, key, record: bytes) -> None:
        h, w, n, r, _, _ = record_header(record)
        self._begin()
        try:
            row = self._row_id(key)
            self._con.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row, h, w, n, r, len(record), crc32(record)),
            )
            self._con.execute("INSERT INTO records VALUES (?, ?)", (row, record))
            self._con.execute("DELETE FROM failures WHERE image_id = ?", (row,))
        except sqlite3.IntegrityError:
            raise DuplicateImageError(f"image {key!r} is already in {self.path}") from None
        self._ids.add(key)
        self._kind = self._kind or ("int" if isinstance(key, int) else "str")
        self._pending += 1
        if self._pending >= self._commit_every:
            self.commit()

    def record_failure(self, image_id, error: str, attempts: int = 1) -> None:
        """Note that an image could not be generated (kept until it is appended later).

        Raises
        ------
        DuplicateImageError
            If the image is already in the library (a failure of an image that is there would
            be reported by ``failures()`` and ``samrefine info`` for ever).
        """
        self._check_open()
        key = _image_id(image_id)
        if key in self._ids:
            raise DuplicateImageError(
                f"image {key!r} is already in {self.path}; it cannot be recorded as failed"
            )
        self._begin()
        row = self._row_id(key)
        self._con.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?)",
            (row, int(attempts), str(error)[:2000]),
        )
        self._kind = self._kind or ("int" if isinstance(key, int) else "str")
        self.commit()

    def failures(self) -> dict:
        """``{image_key: error}`` of images that failed and were not appended since."""
        rows = self._con.execute(
            "SELECT coalesce(n.name, f.image_id), f.error FROM failures "
            "AS f LEFT JOIN names AS n USING (image_id) WHERE " + ABSENT_FAILURE
        )
        return {k: e for k, e in rows}

    def commit(self) -> None:
        """Make every append so far durable."""
        if self._con.in_transaction:
            self._con.execute("COMMIT")
        self._pending = 0

    # ------------------------------------------------------------------ finishing

    def _key_order_rows(self):
        """``(key, crc32, n_masks, record)`` of every image, in key order."""
        con = self._con
        if self._kind == "str":
            return con.execute(
                "SELECT n.name, i.crc32, i.n_masks, r.data FROM names AS n JOIN "
                "images AS i USING (image_id) JOIN records AS r USING (image_id) "
                "ORDER BY n.name"
            )
        return con.execute(
            "SELECT i.image_id, i.crc32, i.n_masks, r.data FROM images AS i "
            "JOIN records AS r USING (image_id) ORDER BY i.image_id"
        )

    def finish(self, *, vacuum: bool = True) -> str:
        """Seal the library: counts, digests, compaction, then ``state = finished``.

        A finished library is immutable and opens lock-free. Returns the path.
        """
        self._check_open()
        self.commit()
        con = self._con
        digest = hashlib.sha256()
        keys = []
        n_masks = 0
        for key, crc, n, data in self._key_order_rows():
            if crc32(data) != crc:
                raise LibraryCorruptError(
                    f"{self.path}: image {key!r}: record checksum "
                    "mismatch while finishing; the file is damaged"
                )
            digest.update(key_bytes(key) + struct.pack("<I", crc))
            digest.update(data)
            keys.append(key)
            n_masks += n
        if len(keys) != len(self._ids):
            raise LibraryCorruptError(
                f"{self.path}: {len(keys)} records for {len(self._ids)} "
                "indexed images while finishing; the file is damaged"
            )
        values = {
            "n_images": len(keys),
            "n_masks": n_masks,
            "content_sha256": digest.hexdigest(),
            "ids_sha256": ids_digest(keys),
            "key_type": self._kind or "int",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, dumps(v)) for k, v in values.items()]
        )
        con.execute("COMMIT")
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode.lower() != "delete":
                raise sqlite3.OperationalError(f"journal mode stayed {mode}")
            if vacuum:
                con.execute("VACUUM")
        except sqlite3.OperationalError as e:
            raise LibraryError(
                f"{self.path}: cannot finish while another connection has the "
                f"library open ({e}); close its readers and call finish() again "
                "(the library stays resumable)"
            ) from None
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (dumps("finished"),))
        rows = con.execute("SELECT key, value FROM meta").fetchall()
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('meta_sha256', ?)", (dumps(meta_digest(rows)),)
        )
        con.execute("COMMIT")
        self.meta.update(values, state="finished")
        self.close()
        return self.path

    def discard(self) -> None:
        """Close and delete the library file, which must hold no image (a build that made
        nothing removes the file it created). The writer lock is held until the file is gone.

        Raises
        ------
        LibraryError
            If an image was appended (this never deletes masks).
        """
        self._check_open()
        if self._ids:
            raise LibraryError(
                f"{self.path} holds {len(self._ids)} images; only an empty library is discarded"
            )
        try:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            self._con.close()
            _remove_files(self.path)
        finally:
            self._closed = True
            if self._lock is not None:
                self._lock.release()

    def close(self) -> None:
        """Commit and close without finishing (the build can be resumed)."""
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._con.close()
            self._closed = True
            if self._lock is not None:
                self._lock.release()

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


def create_library(
    path,
    *,
    generator: str = "custom",
    model: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_sha256: str | None = None,
    params: Mapping | None = None,
    shard: tuple[int, int] | None = None,
    if_exists: str = "resume",
    commit_every: int = 1,
    compression: str = "zlib",
    with_geometry: bool = True,
    extra: Mapping | None = None,
    build_id: str | None = None,
) -> LibraryWriter:
    """Create a library for writing, or resume an unfinished one with the same provenance.

    One file takes one writer: a second writer (in any process) is refused at once, before it
    reads or writes anything (an ``flock`` on ``<path>.lock`` naming the holder).

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
    build_id : str, optional
        Identity of the whole build, the same in every shard (``build_library`` derives it from
        the provenance, the full id list and the shard count); merge refuses shards of
        different builds. Part of a shard's resume identity.

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

    identity = {
        "generator": str(generator),
        "model": model,
        "checkpoint_sha256": checkpoint_sha256,
        "params": _jsonable(dict(params or {})),
        "compression": compression,
        "with_geometry": bool(with_geometry),
    }
    fresh = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "state": "building",
        **identity,
        "shard": list(shard) if shard else None,
        "build_id": build_id,
        "samrefine_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "extra": _jsonable(dict(extra or {})),
    }
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"directory {parent} does not exist; create it first")
    lock = _WriterLock(path)
    lock.acquire()  # before anything is read: the checks below cannot race another writer
    try:
        con, meta = _open_for_writing(path, if_exists, identity, fresh, shard, build_id)
    except BaseException:
        lock.release()
        raise
    return LibraryWriter(path, con, meta, int(commit_every), lock)


def _open_for_writing(
    path: str, if_exists: str, identity: dict, fresh: dict, shard, build_id
) -> tuple[sqlite3.Connection, dict]:
    if os.path.exists(path):
        if if_exists == "error":
            raise LibraryError(
                f"{path} exists; pass if_exists='resume' to continue its build "
                "or if_exists='overwrite' to start again"
            )
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
        con.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, dumps(v)) for k, v in fresh.items()]
        )
        con.execute("COMMIT")
        return con, dict(fresh)
    try:
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    except (ValueError, TypeError, sqlite3.DatabaseError) as e:
        con.close()
        raise LibraryCorruptError(f"{path}: damaged meta table ({e})") from None
    if meta.get("format") != FORMAT_NAME:
        con.close()
        raise LibraryError(f"{path} exists and is not a samrefine library; choose another path")
    if meta.get("format_version") != FORMAT_VERSION:
        con.close()
        raise LibraryError(
            f"{path} has format version {meta.get('format_version')}; this "
            f"samrefine writes version {FORMAT_VERSION}: finish it with the "
            "samrefine that started it, or pass if_exists='overwrite'"
        )
    if meta.get("state") == "finished":
        con.close()
        raise LibraryFinishedError(
            f"{path} is a finished library; appends are not allowed "
            "(pass if_exists='overwrite' to rebuild it)"
        )
    theirs = {k: meta.get(k) for k in IDENTITY_KEYS} | {"shard": meta.get("shard")}
    ours = dict(identity) | {"shard": list(shard) if shard else None}
    if shard is not None:  # shards of one build share its id; another build's file is not ours
        theirs["build_id"] = meta.get("build_id")
        ours["build_id"] = build_id
    if theirs != ours:
        diff = sorted(k for k in ours if ours[k] != theirs[k])
        con.close()
        raise LibraryError(
            f"{path} is an unfinished build with different settings ("
            + ", ".join(f"{k}: {theirs[k]!r} there, {ours[k]!r} now" for k in diff)
            + "); resume it with the same settings or pass "
            "if_exists='overwrite'"
        )
    con.execute("PRAGMA journal_mode=WAL")
    return con, meta


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


def shard_from_env(environ=None) -> tuple[int, int] | None:
    """This process's shard from its launcher's environment, or None (one process).

    In order: ``RANK``/``WORLD_SIZE`` (``torchrun``, ``torch.distributed`` launchers);
    ``SLURM_PROCID``/``SLURM_NTASKS`` inside an ``srun`` step (``SLURM_STEP_ID`` set; a batch
    script's own process is not a task of a step); ``SLURM_ARRAY_TASK_ID`` minus
    ``SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT`` (a job array ``--array=0-N``, step
    1). A count of 1 means no sharding.
    """
    env = os.environ if environ is None else environ

    def pair(a: str, b: str):
        if env.get(a) is None or env.get(b) is None:
            return None
        return parse_shard((env[a], env[b]))

    shard = pair("RANK", "WORLD_SIZE")
    if shard is None and env.get("SLURM_STEP_ID") is not None:
        shard = pair("SLURM_PROCID", "SLURM_NTASKS")
    if shard is None and env.get("SLURM_ARRAY_TASK_ID") is not None:
        try:
            task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1))
        except (KeyError, ValueError):
            raise ValueError(
                "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT/_MIN are "
                "missing or not ints; pass shard='i/n'"
            ) from None
        if step != 1:
            raise ValueError(
                f"a job array with step {step} does not number its tasks 0..n-1; "
                "use --array=0-N or pass shard='i/n'"
            )
        shard = parse_shard((task, count))
    return shard if shard is not None and shard[1] > 1 else None


def shard_path(path, index: int, count: int) -> str:
    """``lib.srlib`` -> ``lib-shard-00001-of-00004.srlib`` (same directory)."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}-shard-{index:05d}-of-{count:05d}{ext or SUFFIX}"


def _sorted_keys(image_ids) -> list:
    keys = {_image_id(i) for i in image_ids}
    try:
        key_type(keys)
    except ValueError as e:
        raise LibraryError(str(e)) from None
    return sorted(keys)


def shard_ids(image_ids, index: int, count: int) -> list:
    """The keys shard ``index`` of ``count`` builds: every ``count``-th of the sorted unique
    keys (ints, or names sorted by code point)."""
    return _sorted_keys(image_ids)[index::count]


def build_identity(provenance: Mapping, image_ids, count: int) -> str:
    """A build's id: SHA-256 (first 32 hex digits) of its provenance, its full sorted key list
    and its shard count; every shard of one build computes the same id, without talking."""
    h = hashlib.sha256(json.dumps(_jsonable(dict(provenance)), sort_keys=True).encode())
    h.update(struct.pack("<q", int(count)))
    for k in _sorted_keys(image_ids):
        h.update(key_bytes(k))
    return h.hexdigest()[:32]
