"""Run-length encoded masks in the COCO convention, and geometry on runs.

Format
------
A binary mask ``M`` of ``H x W`` pixels is flattened in **column-major** (Fortran) order,
``i = x * H + y``, and described by its *foreground runs*: half-open index intervals
``[start, start + length)`` of consecutive foreground pixels in that order. COCO's ``counts``
alternate background and foreground run lengths starting with background, so::

    M (H=3, W=2) = [[0, 1],     column-major: 0 0 1 1 1 0
                    [0, 1],     COCO counts:  [2, 3, 1]
                    [1, 0]]     our runs:     starts [2], lengths [3]

Runs are stored *canonically*: sorted, non-empty, never touching (adjacent runs are merged),
so that converting back to COCO counts gives exactly what ``pycocotools.mask.encode`` gives.
COCO's compressed ``counts`` string (a LEB128-like code of the delta-coded counts) is read and
written here bit-exactly; ``pycocotools`` is the reference it is tested against.

Geometry
--------
``remap_runs`` moves runs through a *separable monotone* pixel map: destination column ``x2``
takes source column ``col_src[x2]`` (or nothing when ``-1``) and a source row interval
``[a, b)`` lands on destination rows ``[row_lo[a], row_lo[b])``. Nearest resize, horizontal
flip and crop/pad are all such maps, so proposals follow an image's augmentation without ever
being decoded. Cost: ``O(runs + W_out)`` per mask.

Contents: ``string_to_counts``, ``counts_to_string``, ``counts_to_runs``, ``runs_to_counts``,
``encode_dense``, ``decode_dense``, ``runs_bbox``, ``nearest_index`` (torch ``nearest``,
``nearest-exact`` and PIL ``NEAREST`` rules), ``resize_maps``,
``hflip_maps``, ``crop_maps``, ``remap_runs``, ``encode_labels``,
``runs_to_segments``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np

from ._config import NJIT

#: Column segments ``(x, y0, y1, offsets)``: rows ``[y0, y1)`` of column ``x`` (int32 each),
#: segments of mask ``k`` at ``offsets[k]:offsets[k + 1]`` (int64, N + 1).
SegmentArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

__all__ = [
    "RLEError",
    "counts_to_runs",
    "counts_to_string",
    "crop_maps",
    "decode_dense",
    "encode_dense",
    "encode_labels",
    "hflip_maps",
    "nearest_index",
    "remap_runs",
    "resize_maps",
    "runs_bbox",
    "runs_to_counts",
    "runs_to_segments",
    "string_to_counts",
]


class RLEError(ValueError):
    """A run-length encoding is malformed (bad characters, negative counts, wrong total)."""


# --------------------------------------------------------------------------------------------
# COCO compressed string <-> counts
# --------------------------------------------------------------------------------------------


@nb.njit(**NJIT)
def _string_to_counts(buf: np.ndarray) -> tuple[np.ndarray, int]:
    n = buf.shape[0]
    counts = np.empty(n, np.int64)
    m = 0
    p = 0
    while p < n:
        x = np.int64(0)
        k = 0
        more = True
        while more:
            if p >= n:
                return counts[:0], 1  # truncated code
            c = np.int64(buf[p]) - 48
            if c < 0 or c > 63:
                return counts[:0], 2  # character outside the alphabet
            if k >= 12:
                return counts[:0], 3  # value too large
            x |= (c & 0x1F) << (5 * k)
            more = (c & 0x20) != 0
            p += 1
            k += 1
            if not more and (c & 0x10) != 0:
                x |= np.int64(-1) << (5 * k)
        if m > 2:
            x += counts[m - 2]
        counts[m] = x
        m += 1
    return counts[:m], 0


def string_to_counts(s: bytes | str) -> np.ndarray:
    """Decode a COCO compressed RLE ``counts`` string.

    Parameters
    ----------
    s : bytes or str
        The ``counts`` field of a compressed pycocotools RLE dict.

    Returns
    -------
    counts : np.ndarray, shape (K,), int64
        Alternating background/foreground run lengths, starting with background.

    Raises
    ------
    RLEError
        If the string is truncated or holds characters outside COCO's alphabet (``'0'..'o'``).
    """
    if isinstance(s, str):
        s = s.encode("ascii", errors="replace")
    if not isinstance(s, (bytes, bytearray, memoryview)):
        raise RLEError(f"compressed RLE counts must be bytes or str, got {type(s).__name__}")
    counts, status = _string_to_counts(np.frombuffer(bytes(s), dtype=np.uint8))
    if status == 1:
        raise RLEError(
            "compressed RLE counts string is truncated (its last code has the 'more' bit set)"
        )
    if status == 2:
        raise RLEError(
            "compressed RLE counts string holds a character outside '0'..'o'; "
            "the string is corrupt or not a COCO RLE"
        )
    if status == 3:
        raise RLEError("compressed RLE counts string encodes a value larger than 2**60")
    return counts


@nb.njit(**NJIT)
def _counts_to_string(counts: np.ndarray) -> np.ndarray:
    n = counts.shape[0]
    out = np.empty(n * 13 + 1, np.uint8)
    p = 0
    for i in range(n):
        x = np.int64(counts[i])
        if i > 2:
            x -= np.int64(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            if (c & 0x10) != 0:
                more = x != -1
            else:
                more = x != 0
            if more:
                c |= 0x20
            out[p] = c + 48
            p += 1
    return out[:p]


def counts_to_string(counts: np.ndarray) -> bytes:
    """Encode run-length counts as a COCO compressed ``counts`` string (bytes).

    The inverse of :func:`string_to_counts`; equal to what ``pycocotools.mask.encode`` writes.
    """
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    return _counts_to_string(counts).tobytes()


# --------------------------------------------------------------------------------------------
# counts <-> canonical foreground runs
# --------------------------------------------------------------------------------------------


@nb.njit(**NJIT)
def _counts_to_runs(counts: np.ndarray, hw: int) -> tuple[np.ndarray, np.ndarray, int]:
    n = counts.shape[0]
    starts = np.empty(n // 2 + 1, np.int32)
    lengths = np.empty(n // 2 + 1, np.int32)
    pos = np.int64(0)
    r = 0
    for i in range(n):
        c = counts[i]
        if c < 0:
            return starts[:0], lengths[:0], 1
        if i % 2 == 1 and c > 0:
            if r > 0 and np.int64(starts[r - 1]) + lengths[r - 1] == pos:
                lengths[r - 1] += c
            else:
                starts[r] = pos
                lengths[r] = c
                r += 1
        pos += c
        if pos > hw:
            return starts[:0], lengths[:0], 2
    if pos != hw:
        return starts[:0], lengths[:0], 2
    return starts[:r].copy(), lengths[:r].copy(), 0


def counts_to_runs(
    counts: np.ndarray | Sequence[int], h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Convert COCO counts to canonical foreground runs, validating them.

    Parameters
    ----------
    counts : array_like of int, shape (K,)
        Alternating background/foreground run lengths (column-major), background first.
    h, w : int
        Mask height and width in pixels.

    Returns
    -------
    starts, lengths : np.ndarray, shape (R,), int32
        Column-major start index and length (pixels) of each foreground run.

    Raises
    ------
    RLEError
        If a count is negative or the counts do not sum to ``h * w`` (pycocotools would decode
        such counts to garbage without complaint).
    """
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise RLEError(f"RLE counts must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise RLEError("RLE counts must be integers")
    arr = arr.astype(np.int64, copy=False)
    starts, lengths, status = _counts_to_runs(np.ascontiguousarray(arr), np.int64(h) * w)
    if status == 1:
        raise RLEError(f"RLE counts hold a negative value ({int(arr.min())})")
    if status == 2:
        raise RLEError(
            f"RLE counts sum to {int(arr.sum())} but the mask has h*w = {h}*{w} = "
            f"{h * w} pixels; the RLE does not belong to a mask of this size"
        )
    return starts, lengths


@nb.njit(**NJIT)
def _runs_to_counts(starts: np.ndarray, lengths: np.ndarray, hw: int) -> np.ndarray:
    r = starts.shape[0]
    out = np.empty(2 * r + 1, np.int64)
    m = 0
    pos = np.int64(0)
    for i in range(r):
        s = np.int64(starts[i])
        out[m] = s - pos
        out[m + 1] = lengths[i]
        m += 2
        pos = s + lengths[i]
    if pos < hw or r == 0:
        out[m] = hw - pos
        m += 1
    return out[:m]


def runs_to_counts(starts: np.ndarray, lengths: np.ndarray, hw: int) -> np.ndarray:
    """Canonical foreground runs to COCO counts (int64), as ``pycocotools.mask.encode`` writes."""
    return _runs_to_counts(np.asarray(starts), np.asarray(lengths), np.int64(hw))


# --------------------------------------------------------------------------------------------
# dense <-> runs
# --------------------------------------------------------------------------------------------


@nb.njit(**NJIT)
def _encode_dense(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, h, w = masks.shape
    cap = 1024
    starts = np.empty(cap, np.int32)
    lengths = np.empty(cap, np.int32)
    offsets = np.zeros(n + 1, np.int64)
    r = 0
    for k in range(n):
        inside = False
        for x in range(w):
            for y in range(h):
                v = masks[k, y, x] != 0
                if v and not inside:
                    if r == cap:
                        cap *= 2
                        s2 = np.empty(cap, np.int32)
                        l2 = np.empty(cap, np.int32)
                        s2[:r] = starts[:r]
                        l2[:r] = lengths[:r]
                        starts, lengths = s2, l2
                    starts[r] = x * h + y
                    inside = True
                elif not v and inside:
                    lengths[r] = x * h + y - starts[r]
                    r += 1
                    inside = False
        if inside:
            lengths[r] = h * w - starts[r]
            r += 1
        offsets[k + 1] = r
    return starts[:r].copy(), lengths[:r].copy(), offsets


def encode_dense(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode dense masks ``(N, H, W)`` (any order; nonzero = foreground) as canonical runs.

    Returns ``starts`` (R,) int32, ``lengths`` (R,) int32 and ``offsets`` (N + 1,) int64; the
    runs of mask ``k`` are ``offsets[k]:offsets[k + 1]``.
    """
    if masks.dtype == np.bool_:
        masks = masks.view(np.uint8)
    return _encode_dense(masks)


@nb.njit(**NJIT)
def _decode_segments(
    seg_x: np.ndarray, seg_y0: np.ndarray, seg_y1: np.ndarray, seg_off: np.ndarray, out: np.ndarray
) -> np.ndarray:
    for k in range(seg_off.shape[0] - 1):
        for g in range(seg_off[k], seg_off[k + 1]):
            x = seg_x[g]
            for y in range(seg_y0[g], seg_y1[g]):
                out[k, y, x] = 1
    return out


def decode_dense(
    starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, h: int, w: int
) -> np.ndarray:
    """Decode runs to dense row-major masks ``(N, H, W)`` bool."""
    return segments_to_dense(runs_to_segments(starts, lengths, offsets, h), h, w)


def segments_to_dense(segments: SegmentArrays, h: int, w: int) -> np.ndarray:
    """Decode column segments ``(x, y0, y1, offsets)`` to dense masks ``(N, H, W)`` bool."""
    out = np.zeros((len(segments[3]) - 1, h, w), np.uint8)
    _decode_segments(*segments, out)
    return out.view(np.bool_)


@nb.njit(**NJIT)
def _segments_bbox(
    seg_x: np.ndarray, seg_y0: np.ndarray, seg_y1: np.ndarray, seg_off: np.ndarray
) -> np.ndarray:
    n = seg_off.shape[0] - 1
    out = np.zeros((n, 4), np.float64)
    for k in range(n):
        g0 = seg_off[k]
        g1 = seg_off[k + 1]
        if g1 == g0:
            continue
        ys = seg_y0[g0]
        ye = seg_y1[g0]
        for g in range(g0 + 1, g1):
            ys = min(ys, seg_y0[g])
            ye = max(ye, seg_y1[g])
        out[k, 0] = seg_x[g0]
        out[k, 1] = ys
        out[k, 2] = seg_x[g1 - 1] - seg_x[g0] + 1
        out[k, 3] = ye - ys
    return out


def runs_bbox(starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, h: int) -> np.ndarray:
    """Bounding boxes ``(N, 4)`` float64, XYWH in pixels, as ``pycocotools.mask.toBbox``."""
    return _segments_bbox(*runs_to_segments(starts, lengths, offsets, h))


def segments_bbox(segments: SegmentArrays) -> np.ndarray:
    """:func:`runs_bbox` from column segments ``(x, y0, y1, offsets)``."""
    return _segments_bbox(*segments)


# --------------------------------------------------------------------------------------------
# separable monotone maps: resize (nearest), hflip, crop
# --------------------------------------------------------------------------------------------


#: Nearest-neighbour rules of :func:`nearest_index` (``Proposals.resize(mode=...)``).
RESIZE_MODES = ("nearest", "nearest-exact", "pil")


def nearest_index(in_size: int, out_size: int, mode: str = "nearest") -> np.ndarray:
    """Source index of each destination index under a nearest-neighbour rule, ``(out_size,)``
    int64 (``-1``: no source, left empty).

    ``"nearest"``: torch's ``interpolate(mode="nearest")`` (legacy),
    ``src = min(floor(float32(dst) * float32(in / out)), in - 1)``, in float32 as
    ``aten/src/ATen/native/UpSample.h`` computes it.

    ``"nearest-exact"``: torch's ``mode="nearest-exact"``,
    ``src = min(floor(float32(double(dst + 0.5) * float32(in / out))), in - 1)``.

    ``"pil"``: Pillow's ``Image.resize(..., Image.NEAREST)`` (``ImagingScaleAffine``): the
    source coordinate starts at ``0.5 * in / out`` and grows by ``in / out`` per pixel,
    *accumulated* in double precision, then truncated; coordinates outside the image give -1.
    """
    if mode == "nearest":
        if out_size == in_size:
            return np.arange(out_size, dtype=np.int64)
        if out_size == 2 * in_size:
            return np.arange(out_size, dtype=np.int64) >> 1
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
        return np.minimum(src, in_size - 1)
    if mode == "nearest-exact":
        scale = np.float64(np.float32(in_size) / np.float32(out_size))
        v = ((np.arange(out_size, dtype=np.float64) + 0.5) * scale).astype(np.float32)
        return np.minimum(np.floor(v).astype(np.int64), in_size - 1)
    if mode == "pil":
        step = float(in_size) / out_size
        coord = np.add.accumulate(np.concatenate([[step * 0.5], np.full(out_size - 1, step)]))
        src = np.where(coord < 0, -1, coord.astype(np.int64))
        src[src >= in_size] = -1
        return src
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def _row_lo_from_index(src_rows: np.ndarray, in_size: int) -> np.ndarray:
    # row_lo[a] = number of destination rows whose source row is < a (src_rows is monotone)
    return np.searchsorted(src_rows, np.arange(in_size + 1), side="left").astype(np.int64)


def resize_maps(
    in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str = "nearest"
) -> tuple[np.ndarray, np.ndarray]:
    """``(col_src, row_lo)`` for a nearest resize from ``in_hw`` to ``out_hw`` (H, W) under
    ``mode`` (see :func:`nearest_index`)."""
    (h, w), (h2, w2) = in_hw, out_hw
    rows = nearest_index(h, h2, mode)  # increasing; -1 (past the end, "pil" only) -> empty
    return nearest_index(w, w2, mode), _row_lo_from_index(np.where(rows < 0, h, rows), h)


def hflip_maps(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(col_src, row_lo)`` for a horizontal flip."""
    h, w = hw
    return np.arange(w - 1, -1, -1, dtype=np.int64), np.arange(h + 1, dtype=np.int64)


def crop_maps(hw: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(col_src, row_lo)`` for a crop to ``box = (x, y, w, h)``; outside the image is padding."""
    h, w = hw
    x0, y0, bw, bh = box
    cols = np.arange(x0, x0 + bw, dtype=np.int64)
    cols[(cols < 0) | (cols >= w)] = -1
    row_lo = np.clip(np.arange(h + 1, dtype=np.int64) - y0, 0, bh)
    return cols, row_lo


@nb.njit(**NJIT)
def _remap_segments(
    seg_x: np.ndarray,
    seg_y0: np.ndarray,
    seg_y1: np.ndarray,
    seg_off: np.ndarray,
    w: int,
    col_src: np.ndarray,
    row_lo: np.ndarray,
    h2: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = seg_off.shape[0] - 1
    w2 = col_src.shape[0]
    # upper bound on output runs: (column segments) x (max copies of one source column)
    mult = np.zeros(w, np.int64)
    x2_lo = np.full(w + 2, w2, np.int64)  # first / one-past-last destination column fed by
    x2_hi = np.zeros(w + 2, np.int64)  # source column c, at index c + 1 (w2 / 0: none)
    increasing = True
    prev = np.int64(-1)
    for x2 in range(w2):
        c = col_src[x2]
        if c >= 0:
            mult[c] += 1
            x2_lo[c + 1] = min(x2_lo[c + 1], x2)
            x2_hi[c + 1] = max(x2_hi[c + 1], x2 + 1)
            if c < prev:
                increasing = False
            prev = c
    # the map is monotone, so the destination columns fed by source columns [c0, c1] are
    # [min x2_lo, max x2_hi) over that range: a suffix-min / prefix-max (or the mirror)
    if increasing:
        for c in range(w, -1, -1):
            x2_lo[c] = min(x2_lo[c], x2_lo[c + 1])
        for c in range(1, w + 2):
            x2_hi[c] = max(x2_hi[c], x2_hi[c - 1])
    else:
        for c in range(1, w + 2):
            x2_lo[c] = min(x2_lo[c], x2_lo[c - 1])
        for c in range(w, -1, -1):
            x2_hi[c] = max(x2_hi[c], x2_hi[c + 1])
    n_seg = seg_x.shape[0]
    cap = n_seg * max(1, mult.max()) if w > 0 else 0
    out_s = np.empty(cap, np.int32)
    out_l = np.empty(cap, np.int32)
    out_off = np.zeros(n + 1, np.int64)
    colptr = np.zeros(w + 1, np.int64)
    r = 0
    for k in range(n):
        g0 = seg_off[k]
        g1 = seg_off[k + 1]
        if g1 > g0:
            c_first = np.int64(seg_x[g0])
            c_last = np.int64(seg_x[g1 - 1])
            # colptr[c] = first segment of column c (segments are sorted by column)
            for c in range(c_first, c_last + 2):
                colptr[c] = 0
            for g in range(g0, g1):
                colptr[seg_x[g] + 1] += 1
            colptr[c_first] = g0
            for c in range(c_first + 1, c_last + 2):
                colptr[c] += colptr[c - 1]
            # destination columns fed by c_first..c_last (contiguous: the map is monotone)
            if increasing:
                xa = x2_lo[c_first + 1]
                xb = x2_hi[c_last + 1]
            else:
                xa = x2_lo[c_last + 1]
                xb = x2_hi[c_first + 1]
            for x2 in range(xa, xb):
                c = col_src[x2]
                if c < c_first or c > c_last:
                    continue
                base = np.int64(x2) * h2
                for g in range(colptr[c], colptr[c + 1]):
                    lo = row_lo[seg_y0[g]]
                    hi = row_lo[seg_y1[g]]
                    if hi <= lo:
                        continue
                    st = base + lo
                    if r > out_off[k] and np.int64(out_s[r - 1]) + out_l[r - 1] == st:
                        out_l[r - 1] += hi - lo
                    else:
                        out_s[r] = st
                        out_l[r] = hi - lo
                        r += 1
        out_off[k + 1] = r
    return out_s[:r].copy(), out_l[:r].copy(), out_off


def remap_runs(
    starts: np.ndarray,
    lengths: np.ndarray,
    offsets: np.ndarray,
    in_hw: tuple[int, int],
    col_src: np.ndarray,
    row_lo: np.ndarray,
    out_h: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a separable monotone map (see module docstring) to every mask's runs.

    Returns new canonical ``starts`` (R',) int32, ``lengths`` (R',) int32, ``offsets`` (N+1,)
    int64 for masks of height ``out_h`` and width ``len(col_src)``.
    """
    h, w = in_hw
    return remap_segments(runs_to_segments(starts, lengths, offsets, h), w, col_src, row_lo, out_h)


def remap_segments(
    segments: SegmentArrays, in_w: int, col_src: np.ndarray, row_lo: np.ndarray, out_h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`remap_runs` from column segments ``(x, y0, y1, offsets)`` of width ``in_w``."""
    return _remap_segments(
        *segments,
        np.int64(in_w),
        np.ascontiguousarray(col_src, np.int64),
        np.ascontiguousarray(row_lo, np.int64),
        np.int64(out_h),
    )


@nb.njit(**NJIT)
def _encode_labels(labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = labels.shape
    cap = 4096
    lab = np.empty(cap, np.int64)
    st = np.empty(cap, np.int32)
    ln = np.empty(cap, np.int32)
    r = 0
    cur = np.int64(-1)
    for x in range(w):
        for y in range(h):
            v = np.int64(labels[y, x])
            if v != cur:
                if r == cap:
                    cap *= 2
                    lab2 = np.empty(cap, np.int64)
                    st2 = np.empty(cap, np.int32)
                    ln2 = np.empty(cap, np.int32)
                    lab2[:r] = lab[:r]
                    st2[:r] = st[:r]
                    ln2[:r] = ln[:r]
                    lab, st, ln = lab2, st2, ln2
                if r > 0:
                    ln[r - 1] = x * h + y - st[r - 1]
                lab[r] = v
                st[r] = x * h + y
                r += 1
                cur = v
    if r > 0:
        ln[r - 1] = h * w - st[r - 1]
    lab = lab[:r]
    order = np.argsort(lab, kind="mergesort")
    lab = lab[order]
    counts = np.zeros(n_labels, np.int64)
    for i in range(r):
        if lab[i] >= 0:
            counts[lab[i]] += 1
    offsets = np.zeros(n_labels + 1, np.int64)
    for k in range(n_labels):
        offsets[k + 1] = offsets[k] + counts[k]
    keep = lab >= 0
    order = order[keep]
    return st[order].copy(), ln[order].copy(), offsets


def encode_labels(
    labels: np.ndarray, n_labels: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode a label map ``(H, W)`` (int, -1 = no mask) as one mask per label, in one pass.

    Returns canonical ``starts``, ``lengths`` (int32) and ``offsets`` ``(n_labels + 1,)``
    int64 for masks ``labels == 0 .. n_labels - 1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be an (H, W) integer array, got {labels.dtype} {labels.shape}"
        )
    if n_labels is None:
        n_labels = int(labels.max()) + 1 if labels.size else 0
    return _encode_labels(labels, np.int64(n_labels))


@nb.njit(**NJIT)
def _runs_to_segments(
    starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, h: int
) -> SegmentArrays:
    n = offsets.shape[0] - 1
    total = np.int64(0)
    for k in range(n):
        for r in range(offsets[k], offsets[k + 1]):
            s = np.int64(starts[r])
            total += (s + lengths[r] - 1) // h - s // h + 1
    seg_x = np.empty(total, np.int32)
    seg_y0 = np.empty(total, np.int32)
    seg_y1 = np.empty(total, np.int32)
    seg_off = np.zeros(n + 1, np.int64)
    g = 0
    for k in range(n):
        for r in range(offsets[k], offsets[k + 1]):
            i = np.int64(starts[r])
            end = i + lengths[r]
            while i < end:
                x = i // h
                y0 = i - x * h
                y1 = min(end - x * h, h)
                seg_x[g] = x
                seg_y0[g] = y0
                seg_y1[g] = y1
                g += 1
                i = x * h + y1
        seg_off[k + 1] = g
    return seg_x, seg_y0, seg_y1, seg_off


def runs_to_segments(
    starts: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, h: int
) -> SegmentArrays:
    """Split runs at column boundaries: column segments ``(x, y0, y1)`` (rows ``[y0, y1)`` of
    column ``x``), int32 each, and per-mask ``offsets`` (N + 1,) int64.

    The matching kernels score segments against a per-column prefix sum of the pseudo-label,
    which is built row-major with vector instructions and needs no transpose.
    """
    return _runs_to_segments(starts, lengths, offsets, np.int64(h))
