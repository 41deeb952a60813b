"""Corruption is never silent on the read path (issue 12) and no record is a memory bomb
(issue 14): every read of a damaged file returns exactly the original masks or raises
LibraryCorruptError, and ``verify`` reports (never raises) every damage it sees."""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from test_library_store import props_of

from samrefine.library import (
    LibraryCorruptError,
    ProposalLibrary,
    verify_library,
)
from samrefine.library.format import HEADER_SIZE, decode_record

IDS = [3, 8, 21, 40, 77]
ABSENT = 5


def _library(tmp_path, ids=IDS, name="lib.srlib", **kw) -> tuple[str, dict]:
    path = str(tmp_path / name)
    with ProposalLibrary.create(path, generator="test", **kw) as w:
        for i in ids:
            w.append(i, props_of(i))
    lib = ProposalLibrary.open(path)
    want = {k: lib[k] for k in ids}
    lib.close()
    return path, want


def _read_all(path: str, want: dict) -> str:
    """'exact' if every read equals the original, 'caught' if one raised
    LibraryCorruptError; any other exception or a wrong answer fails the test."""
    try:
        with ProposalLibrary.open(path) as lib:
            assert lib.image_ids().tolist() == sorted(want), "wrong id list"
            assert len(lib) == len(want), "wrong length"
            for k, props in want.items():
                assert k in lib, f"{k} reported absent"
                got = lib[k]
                assert got == props, f"image {k}: wrong masks"
                for name, v in props.meta.items():
                    assert np.array_equal(got.meta[name], v), f"image {k}: wrong {name}"
                assert lib.image_size(k) == props.size
            assert ABSENT not in lib, "absent image reported present"
            with pytest.raises(KeyError):
                lib[ABSENT]
            assert lib.failures() == {}
    except LibraryCorruptError:
        return "caught"
    return "exact"


def _flip(src: str, dst: str, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(open(src, "rb").read())
    data[offset] ^= mask
    with open(dst, "wb") as f:
        f.write(data)


def _page(path: str, table: str) -> tuple[int, int]:
    """``(offset, size)`` of a table's root page (a leaf for these small libraries)."""
    con = sqlite3.connect(path)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    return (root[0] - 1) * size, size


def _cell_area(path: str, table: str) -> range:
    """Byte offsets of a leaf page's cells (where the rows and their keys are)."""
    off, size = _page(path, table)
    data = open(path, "rb").read()
    head = off + (100 if off == 0 else 0)
    start = struct.unpack(">H", data[head + 5 : head + 7])[0] or 65536
    return range(off + start, off + size)


@pytest.mark.parametrize("table", ["images", "names", "meta"])
def test_every_byte_of_the_index_and_meta_pages(tmp_path, table):
    ids = IDS if table != "names" else ["2007_000032", "2008_000001", "b", "c/d"]
    if table == "names":
        path = str(tmp_path / "lib.srlib")
        with ProposalLibrary.create(path, generator="test") as w:
            for i, k in enumerate(ids):
                w.append(k, props_of(i))
        want = {k: props_of(i) for i, k in enumerate(ids)}
        global ABSENT
        absent, ABSENT = ABSENT, "2007_000033"
    else:
        path, want = _library(tmp_path)
    try:
        outcomes = {"exact": 0, "caught": 0}
        verify_flags = 0
        bad = str(tmp_path / "bad.srlib")
        for offset in _cell_area(path, table):
            _flip(path, bad, offset)
            outcome = _read_all(bad, want)
            outcomes[outcome] += 1
            report = verify_library(bad)  # never raises
            if outcome == "caught":
                verify_flags += not report.ok
                assert not report.ok, f"offset {offset}: reads caught damage, verify did not"
        assert outcomes["caught"] > 0
        print(table, outcomes)
    finally:
        if table == "names":
            ABSENT = absent


def test_fuzz_random_bytes_never_give_a_wrong_answer(tmp_path):
    path, want = _library(tmp_path)
    size = os.path.getsize(path)
    rng = np.random.default_rng(12)
    bad = str(tmp_path / "bad.srlib")
    outcomes = {"exact": 0, "caught": 0}
    for _ in range(int(os.environ.get("SAMREFINE_FUZZ_TRIALS", "200"))):
        _flip(path, bad, int(rng.integers(size)), int(rng.integers(1, 256)))
        outcomes[_read_all(bad, want)] += 1
        verify_library(bad)
    print(outcomes)
    assert outcomes["caught"] > 0


def test_damaged_meta_raises_library_corrupt_error_and_verify_exits_1(tmp_path):
    path, want = _library(tmp_path)
    data = open(path, "rb").read()
    bad = str(tmp_path / "bad.srlib")
    # a value's text made invalid UTF-8 (was a bare UnicodeDecodeError)
    pos = data.find(b'"test"')
    _flip(path, bad, pos + 2, 0x80)
    with pytest.raises(LibraryCorruptError):
        ProposalLibrary.open(bad)
    assert not verify_library(bad).ok
    # a changed count (was a silently wrong len())
    pos = data.find(b"n_images")
    raw = bytearray(data)
    changed = 0
    for offset in range(pos - 40, pos + 20):
        if raw[offset : offset + 1] == b"5":  # the value 5, or a digit of a digest near it
            raw2 = bytearray(raw)
            raw2[offset] = ord("6")
            open(bad, "wb").write(raw2)
            assert _read_all(bad, want) == "caught"
            changed += 1
    assert changed
    from samrefine.cli import main

    _flip(path, bad, data.find(b'"test"') + 2, 0x80)
    assert main(["verify", bad]) == 1


# ---------------------------------------------------------------------------- memory bombs


def _zeros_deflated(n_chunks: int, chunk: int = 1 << 24) -> bytes:
    """A valid zlib stream of ``n_chunks * chunk`` zero bytes, built without deflating them
    all: after a full flush every chunk deflates to the same bytes, and the Adler-32 of ``n``
    zeros is ``(n mod 65521) << 16 | 1``."""
    zeros = bytes(chunk)
    c = zlib.compressobj(9)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    repeat = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-4]  # the final empty block, without the checksum
    adler = ((n_chunks * chunk) % 65521) << 16 | 1
    return first + repeat * (n_chunks - 1) + end + struct.pack(">I", adler)


def _bomb(header_counts=None, inflated: int = 1 << 31) -> bytes:
    """A record whose 2 MB deflated body inflates to ``inflated`` bytes of zeros."""
    body = _zeros_deflated(inflated >> 24)
    n, r, b = header_counts or (1, 1, inflated)
    return struct.pack("<4sIIIIIHH", b"SRP1", 100, 100, n, r, b & 0xFFFFFFFF, 0, 1) + body


def test_the_crafted_stream_is_what_it_claims():
    assert zlib.decompress(_zeros_deflated(3, 1 << 16)) == bytes(3 << 16)


BOMB_CHILD = """
import resource, sys, time, zlib, struct
sys.path.insert(0, {src!r})
from samrefine.library.format import decode_record, LibraryCorruptError
data = open({path!r}, "rb").read()
t = time.perf_counter()
try:
    decode_record(data)
    print("decoded")
except LibraryCorruptError as e:
    print("refused", time.perf_counter() - t, str(e)[:120])
print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_decompression_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    record = _bomb()
    assert len(record) < 3 << 20  # 2 GiB of zeros deflate to about 2 MB
    path = tmp_path / "bomb.bin"
    path.write_bytes(record)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    base = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, samrefine.library; print("
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    got = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD.format(src=src, path=str(path))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    lines = got.stdout.split("\n")
    assert lines[0].startswith("refused"), got.stdout
    seconds = float(lines[0].split()[1])
    rss = int(lines[1].split()[1]) - int(base.stdout.strip())
    assert "inflates past its limit" in lines[0]
    assert seconds < 2.0  # was 12-18 s for the 2 GiB inflate
    assert rss < 200 * 1024  # KiB: the inflate stops at 16 x 2 MB (was 4.3 GB)


def test_header_counts_are_checked_before_allocating():
    props = props_of(3)
    from samrefine.library.format import encode_record

    good = bytearray(encode_record(props, compression="none"))
    for n, r in ((2**32 - 1, 1), (1, 2**32 - 1), (2**31, 2**31 - 1)):
        bad = bytearray(good)
        struct.pack_into("<II", bad, 12, n, r)
        t = time.perf_counter()
        with pytest.raises(LibraryCorruptError, match="cannot fit"):
            decode_record(bytes(bad))
        assert time.perf_counter() - t < 0.5
    # a metadata field claiming 2^32-1 items a mask
    bad = bytearray(good)
    start = HEADER_SIZE + struct.unpack_from("<I", good, 20)[0]
    ln = bad[start]
    nd_at = start + 1 + ln + 2
    bad[nd_at] = 1
    bad[nd_at + 1 : nd_at + 1] = struct.pack("<I", 2**32 - 1)
    with pytest.raises(LibraryCorruptError, match="metadata"):
        decode_record(bytes(bad))


def test_writer_never_writes_a_record_readers_would_call_a_bomb(tmp_path):
    # 2000 identical full masks deflate far beyond 16:1; the writer stores them uncompressed
    from samrefine import Proposals
    from samrefine.library.format import encode_record, record_header

    dense = np.ones((2000, 64, 64), bool)
    dense[:, ::2, ::3] = False
    props = Proposals.from_dense(dense)
    rec = encode_record(props, compression="zlib")
    assert struct.unpack_from("<H", rec, 26)[0] == 0  # stored uncompressed
    assert record_header(rec)[2] == 2000
    assert decode_record(rec) == props
