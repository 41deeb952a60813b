"""On-disk format of a proposal library (version 2): SQLite file, compact per-image records.

Layout
------
One library is one SQLite 3 database file (conventional suffix ``.srlib``). A build split across
processes writes one such file per shard; ``merge`` combines them and the reader can open a set
of shards as one library. Tables::

    meta(key TEXT PRIMARY KEY, value TEXT)            -- format, version, state, provenance (JSON)
    names(image_id INTEGER PRIMARY KEY,               -- (version 2) name-keyed images: the
          name TEXT NOT NULL UNIQUE)                  --   image_id below is internal
    images(image_id INTEGER PRIMARY KEY,              -- COCO image id (rowid: O(log n) lookup)
           height INTEGER, width INTEGER,             -- original image size, pixels
           n_masks INTEGER, n_runs INTEGER,
           nbytes INTEGER, crc32 INTEGER)             -- record length and zlib.crc32 of it
    records(image_id INTEGER PRIMARY KEY, data BLOB)  -- one record per image (below)
    failures(image_id INTEGER PRIMARY KEY, attempts INTEGER, error TEXT)  -- failed images

``images`` is small (about 40 bytes a row) so listing ids never touches the record pages.
An image's key is an int (``image_id`` itself) or a str name (:mod:`samrefine.library.keys`):
a name-keyed image has a ``names`` row giving its internal ``image_id``; one library holds keys
of one type. Version 1 files (no ``names`` table, int keys only) are read unchanged.

Record
------
All integers little-endian. A record holds one image's masks as foreground runs in the COCO
convention (column-major pixel index ``i = x * H + y``; see :mod:`samrefine.rle`)::

    offset size  field
    0      4     magic  b"SRP1"
    4      4     u32 height H
    8      4     u32 width W
    12     4     u32 n_masks N
    16     4     u32 n_runs R   (all masks together)
    20     4     u32 runs_nbytes B
    24     2     u16 n_fields F
    26     2     u16 flags (bit 0: bytes 28.. are zlib-deflated; other bits 0)
    28     B     run stream
    28+B   ...   F metadata fields

*Run stream*: for each mask in order, ``varint(r)`` (its number of runs), then the ``2 r``
values ``c = [g0, l0, g1, l1, ...]`` where ``g0`` is the first run's start, ``g_j`` the gap of
background before run ``j`` and ``l_j`` its length (the trailing background is implied by
``H * W``). Each value is written as ``zigzag(c[j] - c[j - 2])`` (``c[j]`` itself for
``j < 2``), the delta trick of COCO's compressed strings, as an unsigned LEB128 varint (7 bits
a byte, high bit = more). Example: ``H = 3, W = 2``, mask column-major ``0 0 1 1 1 0`` has one
run (start 2, length 3): bytes ``01 04 06`` (r = 1, zigzag(2) = 4, zigzag(3) = 6).

*Metadata field*: ``u8 name_len, name (ASCII), 2 ASCII bytes dtype (kind + item size: "f4",
"u2", "i8", ...; little-endian), u8 ndim_extra, u32 * ndim_extra trailing dims``, then
``N * prod(dims)`` items. Fields written by samrefine: ``area`` (u4, pixels), ``bbox`` (XYWH,
pixels, u2 or u4), ``predicted_iou`` and ``stability_score`` (f4), ``point_coords`` (f4, ``(N,
2)``, x y pixels), ``crop_box`` (XYWH pixels, ``(N, 4)``), plus any numeric field a generator adds.

Invariants: runs canonical (sorted, non-empty, separated by background), inside ``H * W``;
``N + 2 R <= B`` (every varint takes a byte); ``crc32`` in ``images`` equals ``zlib.crc32`` of
the record bytes; a deflated body inflates to at most ``max(1 MiB, 16 x`` its deflated size``)``
and no body exceeds :data:`MAX_RECORD_BYTES` (the writer stores a record uncompressed rather than
break the first bound; readers refuse records that break either before allocating).
``meta['content_sha256']`` (finished libraries) is the SHA-256 of every ``(key_bytes(key),
crc32 as u4, record)`` in key order, ``meta['ids_sha256']`` (version 2) that of every
``key_bytes(key)`` in key order, and ``meta['meta_sha256']`` (version 2) that of the other meta
rows; see ``docs/library-format.md``.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numba as nb
import numpy as np

from .._config import NJIT
from ..proposals import Proposals

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SCHEMA",
    "DuplicateImageError",
    "LibraryCorruptError",
    "LibraryError",
    "LibraryFinishedError",
    "decode_record",
    "encode_record",
    "record_header",
]

FORMAT_NAME = "samrefine-proposal-library"
FORMAT_VERSION = 2
#: Versions this samrefine reads (version 1: int keys only, no names table, no id digest).
READABLE_VERSIONS = (1, 2)
MAGIC = b"SRP1"
_HEADER = struct.Struct("<4sIIIIIHH")
FLAG_ZLIB = 1
COMPRESSIONS = ("none", "zlib")
HEADER_SIZE = _HEADER.size  # 28
#: Largest record body (bytes after the header, inflated) a reader accepts.
MAX_RECORD_BYTES = 1 << 30
#: A deflated body may inflate to at most max(INFLATE_FLOOR, INFLATE_RATIO x its size).
INFLATE_RATIO = 16
INFLATE_FLOOR = 1 << 20
#: Most bytes of per-mask metadata (all fields together) a record may hold per mask.
MAX_META_BYTES_PER_MASK = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names(image_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS images(
    image_id INTEGER PRIMARY KEY,
    height INTEGER NOT NULL, width INTEGER NOT NULL,
    n_masks INTEGER NOT NULL, n_runs INTEGER NOT NULL,
    nbytes INTEGER NOT NULL, crc32 INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records(image_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS failures(
    image_id INTEGER PRIMARY KEY, attempts INTEGER NOT NULL, error TEXT NOT NULL);
"""

#: Stored dtypes of the metadata samrefine knows (others are stored as given).
_KNOWN_DTYPES = {"predicted_iou": "f4", "stability_score": "f4", "point_coords": "f4"}


class LibraryError(ValueError):
    """A proposal library cannot be used as asked (wrong state, wrong arguments)."""


class LibraryCorruptError(LibraryError):
    """A library file is damaged: failed checksum, undecodable record, truncated file."""


class DuplicateImageError(LibraryError):
    """An image id is already in the library (or in two shards being merged)."""


class LibraryFinishedError(LibraryError):
    """An append to a library that has been finished (finished libraries are immutable)."""


# --------------------------------------------------------------------------------------------
# run stream codec
# --------------------------------------------------------------------------------------------


@nb.njit(**NJIT)
def _encode_runs(starts, lengths, offsets):
    n = offsets.shape[0] - 1
    out = np.empty(n * 5 + 2 * starts.shape[0] * 5 + 8, np.uint8)
    p = 0
    for k in range(n):
        r0 = offsets[k]
        r1 = offsets[k + 1]
        v = np.uint64(r1 - r0)
        while v >= 0x80:
            out[p] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
            v >>= np.uint64(7)
            p += 1
        out[p] = np.uint8(v)
        p += 1
        c2 = np.int64(0)  # c[j - 2]
        c1 = np.int64(0)  # c[j - 1]
        end = np.int64(0)
        j = 0
        for r in range(r0, r1):
            s = np.int64(starts[r])
            for t in range(2):
                if t == 0:
                    c = s - end
                else:
                    c = np.int64(lengths[r])
                d = c - c2 if j >= 2 else c
                z = np.uint64((d << 1) ^ (d >> 63))
                while z >= 0x80:
                    out[p] = np.uint8((z & np.uint64(0x7F)) | np.uint64(0x80))
                    z >>= np.uint64(7)
                    p += 1
                out[p] = np.uint8(z)
                p += 1
                c2 = c1
                c1 = c
                j += 1
            end = s + lengths[r]
    return out[:p]


@nb.njit(**NJIT)
def _read_varint(buf, p, stop):
    # returns (value, new position); position -1 on overrun or overflow
    v = np.uint64(0)
    shift = np.uint64(0)
    while True:
        if p >= stop or shift > 56:
            return np.uint64(0), -1
        b = np.uint64(buf[p])
        p += 1
        v |= (b & np.uint64(0x7F)) << shift
        if b < 0x80:
            return v, p
        shift += np.uint64(7)


@nb.njit(**NJIT)
def _decode_runs(buf, begin, stop, n, n_runs, hw):
    starts = np.empty(n_runs, np.int32)
    lengths = np.empty(n_runs, np.int32)
    offsets = np.zeros(n + 1, np.int64)
    p = begin
    r = 0
    for k in range(n):
        cnt, p = _read_varint(buf, p, stop)
        if p < 0:
            return starts, lengths, offsets, 1
        if np.int64(cnt) > n_runs - r:
            return starts, lengths, offsets, 2
        c2 = np.int64(0)
        c1 = np.int64(0)
        end = np.int64(0)
        j = 0
        for q in range(np.int64(cnt)):
            s = np.int64(0)
            for t in range(2):
                z, p = _read_varint(buf, p, stop)
                if p < 0:
                    return starts, lengths, offsets, 1
                d = np.int64(z >> np.uint64(1)) ^ -np.int64(z & np.uint64(1))
                c = d + c2 if j >= 2 else d
                c2 = c1
                c1 = c
                j += 1
                if t == 0:
                    # first gap may be 0; later gaps must be >= 1 (canonical runs)
                    if c < 0 or (q > 0 and c < 1):
                        return starts, lengths, offsets, 3
                    s = end + c
                else:
                    if c < 1 or s + c > hw:
                        return starts, lengths, offsets, 3
                    starts[r] = s
                    lengths[r] = c
                    end = s + c
            r += 1
        offsets[k + 1] = r
    if r != n_runs or p != stop:
        return starts, lengths, offsets, 2
    return starts, lengths, offsets, 0


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------


def _box_dtype(h: int, w: int) -> str:
    return "u2" if max(h, w) < 2**16 else "u4"


def _field_bytes(name: str, arr: np.ndarray, n: int) -> bytes:
    code = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    trailing = arr.shape[1:]
    head = struct.pack("<B", len(name)) + name.encode("ascii") + code.encode("ascii")
    head += struct.pack("<B", len(trailing)) + struct.pack(f"<{len(trailing)}I", *trailing)
    return head + np.ascontiguousarray(arr, arr.dtype.newbyteorder("<")).tobytes()


def _meta_arrays(props: Proposals, with_geometry: bool) -> dict[str, np.ndarray]:
    n = len(props)
    h, w = props.size
    out: dict[str, np.ndarray] = {}
    if with_geometry:
        out["area"] = props.area.astype("<u4")
        out["bbox"] = props.bbox.astype("<" + _box_dtype(h, w))
    for key, val in props.meta.items():
        if key in ("area", "bbox"):
            continue  # always recomputed from the runs: stored values are exact by construction
        if not key.isascii() or not key or len(key) > 255:
            raise LibraryError(f"metadata name {key!r} must be 1..255 ASCII characters")
        arr = np.asarray(val)
        if arr.shape[:1] != (n,):
            raise LibraryError(
                f"meta[{key!r}] has shape {arr.shape}; its first dimension must "
                f"be the number of masks ({n})"
            )
        if arr.dtype.kind not in "biuf":
            raise LibraryError(
                f"meta[{key!r}] has dtype {arr.dtype}; only numeric or bool "
                "per-mask metadata can be stored"
            )
        if arr.dtype.kind == "b":
            arr = arr.astype("u1")
        if key in _KNOWN_DTYPES:
            arr = arr.astype("<" + _KNOWN_DTYPES[key])
        elif key == "crop_box":
            arr = (
                arr.astype("<" + _box_dtype(h, w))
                if np.all(arr >= 0) and np.all(arr == np.round(arr)) and arr.max(initial=0) < 2**16
                else arr.astype("<f4")
            )
        elif arr.ndim > 8:
            raise LibraryError(f"meta[{key!r}] has {arr.ndim} dimensions; at most 8 are stored")
        out[key] = arr
    per_mask = sum(
        a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in out.values()
    )
    if per_mask > MAX_META_BYTES_PER_MASK:
        raise LibraryError(
            f"per-mask metadata takes {per_mask} bytes a mask; a record holds at "
            f"most {MAX_META_BYTES_PER_MASK} (store large features elsewhere)"
        )
    return out


def inflate_limit(deflated_nbytes: int) -> int:
    """Most bytes a deflated record body of ``deflated_nbytes`` may inflate to."""
    return min(MAX_RECORD_BYTES, max(INFLATE_FLOOR, INFLATE_RATIO * int(deflated_nbytes)))


def encode_record(
    props: Proposals, *, with_geometry: bool = True, compression: str = "none"
) -> bytes:
    """Encode one image's proposals as a version-1 record (see the module docstring).

    Parameters
    ----------
    props : Proposals
        Canonical runs (as every :class:`~samrefine.Proposals` constructor produces).
    with_geometry : bool
        Store ``area`` (u4) and ``bbox`` (XYWH) per mask, for readers without samrefine.
    compression : {"none", "zlib"}
        ``"zlib"`` deflates everything after the header (flag bit 0): about half the bytes, at
        the cost of a decompression per read (measured in ``docs/library-format.md``).

    Returns
    -------
    bytes
        The record; its ``zlib.crc32`` goes in the ``images`` table.
    """
    if compression not in COMPRESSIONS:
        raise LibraryError(f"compression={compression!r} is not one of {COMPRESSIONS}")
    h, w = props.size
    runs = _encode_runs(props.starts, props.lengths, props.offsets).tobytes()
    fields = _meta_arrays(props, with_geometry)
    n = len(props)
    flags = FLAG_ZLIB if compression == "zlib" else 0
    body = [runs] + [_field_bytes(k, v, n) for k, v in fields.items()]
    raw = b"".join(body)
    if len(raw) > MAX_RECORD_BYTES:
        raise LibraryError(
            f"the record of {n} masks takes {len(raw)} bytes, more than the "
            f"{MAX_RECORD_BYTES}-byte limit readers accept"
        )
    if flags & FLAG_ZLIB:
        packed = zlib.compress(raw, 6)
        if len(raw) <= inflate_limit(len(packed)):
            raw = packed
        else:  # too compressible to pass the readers' bomb check: store it as is
            flags = 0
    head = _HEADER.pack(MAGIC, h, w, n, props.starts.size, len(runs), len(fields), flags)
    return head + raw


def record_header(data) -> tuple[int, int, int, int, int, int]:
    """``(height, width, n_masks, n_runs, runs_nbytes, n_fields)`` of a record; raises
    :class:`LibraryCorruptError` (without a file name) if the header is not a v1 header."""
    if len(data) < HEADER_SIZE:
        raise LibraryCorruptError(f"record of {len(data)} bytes is shorter than its header")
    magic, h, w, n, r, b, f, _ = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise LibraryCorruptError(f"record starts with {magic!r}, not {MAGIC!r}")
    return h, w, n, r, b, f


def decode_record(data, *, where: str = "record") -> Proposals:
    """Decode a version-1 record into :class:`~samrefine.Proposals` (validated while decoding).

    Parameters
    ----------
    data : bytes or memoryview
        The record (checksum already checked by the caller).
    where : str
        Named in errors, e.g. ``"image 42 of /data/lib.srlib"``.

    Returns
    -------
    Proposals
        Runs (int32), offsets (int64), ``size = (H, W)``, and ``meta`` with every stored field.

    Raises
    ------
    LibraryCorruptError
        If the record is truncated, has trailing bytes or holds non-canonical runs.
    """
    try:
        h, w, n, r, b, f = record_header(data)
    except LibraryCorruptError as e:
        raise LibraryCorruptError(f"{where}: {e}") from None
    flags = _HEADER.unpack_from(data, 0)[-1]
    if flags & ~FLAG_ZLIB:
        raise LibraryCorruptError(f"{where}: unknown record flags {flags:#x}")
    if flags & FLAG_ZLIB:
        limit = inflate_limit(len(data) - HEADER_SIZE)
        inflater = zlib.decompressobj()
        try:
            body = inflater.decompress(bytes(data[HEADER_SIZE:]), limit + 1)
        except zlib.error as e:
            raise LibraryCorruptError(f"{where}: undecodable compressed record ({e})") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise LibraryCorruptError(
                f"{where}: compressed record inflates past its limit of "
                f"{limit} bytes ({len(data) - HEADER_SIZE} stored); a "
                "damaged or crafted record (decompression bomb)"
            )
        if not inflater.eof or inflater.unused_data:
            raise LibraryCorruptError(f"{where}: truncated or padded compressed record")
        data = bytes(data[:HEADER_SIZE]) + body
    elif len(data) - HEADER_SIZE > MAX_RECORD_BYTES:
        raise LibraryCorruptError(
            f"{where}: record of {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit"
        )
    buf = np.frombuffer(data, np.uint8)
    stop = HEADER_SIZE + b
    if stop > buf.size or h == 0 or w == 0 or h * w >= 2**31:
        raise LibraryCorruptError(
            f"{where}: bad record header (size {h}x{w}, {b} run bytes in a {buf.size}-byte record)"
        )
    if n + 2 * r > b:
        # every mask's run count and every run's two values take at least a byte each: the
        # counts cannot be larger, and nothing is allocated from them before this check
        raise LibraryCorruptError(
            f"{where}: bad record header ({n} masks and {r} runs cannot fit in {b} run bytes)"
        )
    starts, lengths, offsets, status = _decode_runs(buf, HEADER_SIZE, stop, n, r, h * w)
    if status:
        why = {1: "truncated varint", 2: "run count mismatch", 3: "non-canonical run"}[status]
        raise LibraryCorruptError(f"{where}: undecodable run stream ({why})")
    meta = {}
    p = stop
    try:
        for _ in range(f):
            ln = int(buf[p])
            name = bytes(buf[p + 1 : p + 1 + ln]).decode("ascii")
            p += 1 + ln
            code = bytes(buf[p : p + 2]).decode("ascii")
            nd = int(buf[p + 2])
            p += 3
            if nd > 8:
                raise ValueError(f"field {name!r} has {nd} trailing dimensions (at most 8)")
            dims = struct.unpack_from(f"<{nd}I", data, p)
            p += 4 * nd
            if code[0] not in "biuf" or code[1] not in "1248":
                raise ValueError(f"field {name!r} has dtype code {code!r}")
            dt = np.dtype("<" + code)
            count = n * math.prod(dims)  # Python ints: no overflow
            if p + count * dt.itemsize > buf.size:
                raise ValueError("field overruns the record")
            meta[name] = np.frombuffer(data, dt, count, p).reshape((n, *dims))
            p += count * dt.itemsize
    except (ValueError, TypeError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise LibraryCorruptError(f"{where}: undecodable metadata ({e})") from None
    if p != buf.size:
        raise LibraryCorruptError(f"{where}: {buf.size - p} unexpected bytes after the metadata")
    return Proposals(starts, lengths, offsets, (h, w), meta, validate=False)


def crc32(data) -> int:
    """``zlib.crc32`` of a record (unsigned 32-bit)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def dumps(value) -> str:
    """JSON for the ``meta`` table (sorted keys, so equal values give equal text)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
