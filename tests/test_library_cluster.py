"""Shards, merge, writers and readers on clusters (issue 12): complete shard sets only, one
writer per file, readers that release the file on close(), Slurm environments."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_library_store import (
    SRC,
    fake_generator,
    props_of,
    synthetic_image,
    threshold_masks,
)

from samrefine import Proposals
from samrefine.library import (
    LibraryCorruptError,
    LibraryError,
    ProposalLibrary,
    build_library,
    merge_libraries,
    shard_path,
    verify_library,
)
from samrefine.library.writer import shard_from_env


def _build_shards(tmp_path, stem: str, ids, count: int, only=None) -> list[str]:
    for i in range(count) if only is None else only:
        build_library(
            tmp_path / f"{stem}.srlib",
            ids,
            fake_generator(),
            load=synthetic_image,
            shard=(i, count),
            progress=False,
        )
    return [
        shard_path(tmp_path / f"{stem}.srlib", i, count)
        for i in (range(count) if only is None else only)
    ]


def test_merge_refuses_an_incomplete_shard_set(tmp_path):
    shards = _build_shards(tmp_path, "s", range(10, 20), 2, only=[0])
    with pytest.raises(LibraryError, match=r"1 of 2 shards; missing shard\(s\) 1/2"):
        merge_libraries(shards, tmp_path / "m.srlib", progress=False)
    assert not os.path.exists(tmp_path / "m.srlib")
    out = merge_libraries(shards, tmp_path / "m.srlib", progress=False, allow_partial=True)
    assert len(ProposalLibrary.open(out)) == 5


def test_merge_refuses_shards_of_two_builds_with_equal_settings(tmp_path):
    a = _build_shards(tmp_path, "train", range(10, 20), 2)
    b = _build_shards(tmp_path, "val", range(50, 56), 2)
    with pytest.raises(LibraryError, match="different builds"):
        merge_libraries([a[0], b[1]], tmp_path / "m.srlib", progress=False)
    copy = str(tmp_path / "copy-of-shard-0.srlib")
    shutil.copy(a[0], copy)
    with pytest.raises(LibraryError, match="both shard 0 of 2"):
        merge_libraries([a[0], copy, a[1]], tmp_path / "m.srlib", progress=False)
    # the complete set of one build merges
    out = merge_libraries(a, tmp_path / "m.srlib", progress=False)
    assert ProposalLibrary.open(out).image_ids().tolist() == list(range(10, 20))


def test_a_second_writer_is_refused_before_it_writes(tmp_path):
    path = tmp_path / "w.srlib"
    w = ProposalLibrary.create(path, generator="test")
    w.append(1, props_of(1))
    with pytest.raises(LibraryError, match=rf"being written by another writer \(pid {os.getpid()}"):
        ProposalLibrary.create(path, generator="test")
    with pytest.raises(LibraryError, match="being written"):  # even one asking to overwrite
        ProposalLibrary.create(path, generator="test", if_exists="overwrite")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC!r})
        from samrefine.library import ProposalLibrary, LibraryError
        try:
            ProposalLibrary.create({str(path)!r}, generator="other")
        except LibraryError as e:
            print("refused:", e)
    """)
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in got.stdout and "being written" in got.stdout, got.stderr[-2000:]
    w.append(2, props_of(2))
    w.finish()
    lib = ProposalLibrary.open(path)
    assert len(lib) == 2 and lib.info["n_images"] == 2 and verify_library(path).ok
    assert not os.path.exists(str(path) + ".lock")
    # the lock is released on close too: a resumed build can take over
    w2 = ProposalLibrary.create(tmp_path / "x.srlib", generator="test")
    w2.close()
    ProposalLibrary.create(tmp_path / "x.srlib", generator="test").close()


READER = """
import sys, threading, time
sys.path.insert(0, {src!r})
from samrefine.library import ProposalLibrary, verify_library
lib = ProposalLibrary.open({path!r})
assert len(lib) == 1 and lib[1] is not None
# a long-lived worker thread (e.g. a prefetcher) that read and is still alive
done, stop = threading.Event(), threading.Event()
def worker():
    lib[1]
    done.set()
    stop.wait()
t = threading.Thread(target=worker, daemon=True)
t.start()
done.wait()
lib.close()
report = verify_library({path!r})
print("closed", flush=True)
time.sleep(60)
"""


def test_a_closed_reader_does_not_block_the_writer_from_finishing(tmp_path):
    path = str(tmp_path / "r.srlib")
    w = ProposalLibrary.create(path, generator="test")
    w.append(1, props_of(1))
    w.commit()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER.format(src=SRC, path=path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert reader.stdout.readline().strip() == "closed"
        w.append(2, props_of(2))
        w._con.execute("PRAGMA busy_timeout=2000")  # fail fast instead of the 60 s default
        assert w.finish() == path  # the reader process is still alive
        assert reader.poll() is None
    finally:
        reader.kill()
        reader.wait()
    assert ProposalLibrary.open(path).finished


@pytest.mark.parametrize(
    "env, want",
    [
        ({"RANK": "1", "WORLD_SIZE": "4"}, (1, 4)),
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_STEP_ID": "0"}, (2, 3)),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, None),  # a batch script, not an srun task
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}, None),
        (
            {
                "RANK": "0",
                "WORLD_SIZE": "2",
                "SLURM_PROCID": "1",
                "SLURM_NTASKS": "2",
                "SLURM_STEP_ID": "0",
            },
            (0, 2),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "7",
                "SLURM_ARRAY_TASK_MIN": "5",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            (2, 4),
        ),
        ({}, None),
    ],
)
def test_shard_from_launcher_environment(env, want):
    assert shard_from_env(env) == want


def test_srun_tasks_each_build_their_shard(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_library_store import fake_generator, synthetic_image
        from samrefine.library import build_library
        r = build_library({str(tmp_path / "lib.srlib")!r}, range(40, 50), fake_generator(),
                          load=synthetic_image, progress=False)
        print(r.path, r.added)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            env={
                **env,
                "SLURM_PROCID": str(r),
                "SLURM_NTASKS": "2",
                "SLURM_STEP_ID": "0",
                "PYTHONPATH": SRC,
            },
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(o.split()[1] for o in outs) == ["5", "5"]
    merged = merge_libraries(
        str(tmp_path / "lib-shard-*.srlib"), tmp_path / "m.srlib", progress=False
    )
    assert ProposalLibrary.open(merged).image_ids().tolist() == list(range(40, 50))


def props_of_image(image_id: int) -> Proposals:
    return Proposals.from_dense(threshold_masks(synthetic_image(image_id)))


def _open_shard_fds(tmp_path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(str(tmp_path)) and "-shard-" in target
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_many_shards_route_each_lookup_to_one_file_with_bounded_descriptors(tmp_path, monkeypatch):
    from samrefine.library import reader

    monkeypatch.setattr(reader, "MAX_OPEN_SHARDS", 4)
    ids = list(range(100, 148))
    shards = _build_shards(tmp_path, "many", ids, 24)
    lib = ProposalLibrary.open(shards)
    rng = np.random.default_rng(0)
    for k in rng.permutation(ids).tolist() + [ids[0], ids[-1]]:
        assert lib[k] == props_of_image(k)
        assert _open_shard_fds(tmp_path) <= 4
    assert 99 not in lib and 148 not in lib and "100" not in lib and 131 in lib
    with pytest.raises(KeyError):
        lib[99]
    assert lib.image_ids().tolist() == ids
    lib.close()
    assert _open_shard_fds(tmp_path) == 0
    # a damaged index row in one shard is caught by the lookup routed to it
    data = bytearray(open(shards[5], "rb").read())
    con = sqlite3.connect(shards[5])
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='images'").fetchone()[0]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    data[root * size - 3] ^= 0x01  # a byte of the last index row (its crc32 or size)
    open(shards[5], "wb").write(data)
    with pytest.raises(LibraryCorruptError):
        for k in ids:
            ProposalLibrary.open(shards)[k]
