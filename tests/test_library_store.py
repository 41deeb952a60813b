"""ProposalLibrary: writer errors, resume, reader, shards and merge, corruption, workers."""

import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from samrefine import Proposals
from samrefine.library import (
    DuplicateImageError,
    LibraryCorruptError,
    LibraryError,
    LibraryFinishedError,
    ProposalLibrary,
    build_library,
    merge_libraries,
    shard_path,
    verify_library,
)
from samrefine.library.generate import Generator

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def synthetic_image(image_id: int) -> np.ndarray:
    """A deterministic smooth RGB image whose size depends on the id."""
    rng = np.random.default_rng(image_id)
    h, w = 24 + image_id % 7, 30 + image_id % 5
    yy, xx = np.mgrid[:h, :w]
    img = np.stack(
        [
            (np.sin(xx / (3 + c) + rng.random() * 6) * np.cos(yy / (4 + c)) + 1) * 127
            for c in range(3)
        ],
        -1,
    )
    return img.astype(np.uint8)


def threshold_masks(image: np.ndarray) -> np.ndarray:
    """A fast deterministic 'generator': level sets of the channels, (N, H, W) bool."""
    return np.stack([image[..., c] > t for c in range(3) for t in (60, 128, 200)])


def fake_generator() -> Generator:
    return Generator("threshold", threshold_masks, model="levels", params={"levels": 3})


def props_of(image_id: int) -> Proposals:
    p = Proposals.from_dense(threshold_masks(synthetic_image(image_id)))
    p.meta["predicted_iou"] = np.linspace(0, 1, len(p))
    return p


def make_library(path, ids, **kw) -> str:
    with ProposalLibrary.create(path, generator="test", **kw) as w:
        for i in ids:
            w.append(i, props_of(i))
    return str(path)


# ---------------------------------------------------------------------------- writer


def test_round_trip_and_index(tmp_path):
    ids = [5, 1, 9, 300]
    path = make_library(tmp_path / "a.srlib", ids)
    lib = ProposalLibrary.open(path)
    assert lib.finished and len(lib) == 4
    assert lib.image_ids().tolist() == [1, 5, 9, 300]
    assert 9 in lib and 2 not in lib and "9" not in lib
    for i in ids:
        got = lib[i]
        assert got == props_of(i)
        np.testing.assert_array_equal(
            got.meta["predicted_iou"], props_of(i).meta["predicted_iou"].astype(np.float32)
        )
        assert lib.image_size(i) == synthetic_image(i).shape[:2]
    with pytest.raises(KeyError, match="image id 2 "):
        lib[2]
    assert lib.get(2) is None
    info = lib.info
    assert info["format_version"] == 2 and info["n_images"] == 4
    assert info["n_masks"] == sum(len(props_of(i)) for i in ids)
    assert verify_library(path, deep=True).ok
    # no side files: a finished library is one self-contained file
    assert sorted(os.listdir(tmp_path)) == ["a.srlib"]


def test_writer_errors(tmp_path):
    path = tmp_path / "b.srlib"
    w = ProposalLibrary.create(path, generator="test")
    w.append(1, props_of(1))
    with pytest.raises(DuplicateImageError, match="image 1 is already"):
        w.append(1, props_of(1))
    with pytest.raises(LibraryError, match="image 2: proposals are"):
        w.append(2, props_of(2), image_size=(5, 5))
    with pytest.raises(TypeError, match="Proposals.from_sam"):
        w.append(3, [{"segmentation": None}])
    with pytest.raises(TypeError, match="image keys are ints"):
        w.append(1.5, props_of(1))
    w.finish()
    with pytest.raises(LibraryFinishedError, match="finished"):
        ProposalLibrary.create(path, generator="test")
    with pytest.raises(LibraryError, match="closed"):
        w.append(4, props_of(4))
    with pytest.raises(LibraryError, match="exists"):
        ProposalLibrary.create(path, generator="test", if_exists="error")
    # overwrite starts again
    with ProposalLibrary.create(path, generator="test", if_exists="overwrite") as w2:
        w2.append(7, props_of(7))
    assert ProposalLibrary.open(path).image_ids().tolist() == [7]


def test_resume_checks_settings_and_skips_committed(tmp_path):
    path = tmp_path / "c.srlib"
    w = ProposalLibrary.create(path, generator="test", params={"a": 1})
    for i in range(3):
        w.append(i, props_of(i))
    w.close()
    with pytest.raises(LibraryError, match="params"):
        ProposalLibrary.create(path, generator="test", params={"a": 2})
    w = ProposalLibrary.create(path, generator="test", params={"a": 1})
    assert sorted(w.image_ids()) == [0, 1, 2]
    for i in range(6):
        if i not in w:
            w.append(i, props_of(i))
    w.finish()
    single = make_library(tmp_path / "d.srlib", range(6), params={"a": 1})
    a, b = ProposalLibrary.open(path), ProposalLibrary.open(single)
    assert a.info["content_sha256"] == b.info["content_sha256"]


def test_unfinished_library_is_readable(tmp_path):
    path = tmp_path / "e.srlib"
    w = ProposalLibrary.create(path, generator="test")
    w.append(4, props_of(4))
    lib = ProposalLibrary.open(path)
    assert not lib.finished and lib[4] == props_of(4)
    lib.close()
    w.close()


def test_pickle_and_lazy_connection(tmp_path):
    lib = ProposalLibrary.open(make_library(tmp_path / "f.srlib", [1, 2]))
    lib[1]
    other = pickle.loads(pickle.dumps(lib))
    assert other[2] == props_of(2) and len(other) == 2


def test_open_reads_no_records(tmp_path):
    # open cost must not grow with the library: 1 vs 400 images, same record
    rec = props_of(3)
    for n in (1, 400):
        w = ProposalLibrary.create(tmp_path / f"n{n}.srlib", generator="test", commit_every=500)
        for i in range(n):
            w.append(i, rec)
        w.finish()
    times = {}
    for n in (1, 400):
        t = time.perf_counter()
        lib = ProposalLibrary.open(tmp_path / f"n{n}.srlib")
        assert len(lib) == n
        times[n] = time.perf_counter() - t
    assert times[400] < 0.2


# ---------------------------------------------------------------------------- shards


def test_shard_set_reads_as_one_and_merges(tmp_path):
    gen = fake_generator()
    ids = list(range(10, 22))
    for i in range(3):
        build_library(
            tmp_path / "s.srlib", ids, gen, load=synthetic_image, shard=(i, 3), progress=False
        )
    shards = [shard_path(tmp_path / "s.srlib", i, 3) for i in range(3)]
    assert all(os.path.exists(p) for p in shards)
    lib = ProposalLibrary.open(str(tmp_path / "s-shard-*.srlib"))
    assert len(lib) == 12 and lib.image_ids().tolist() == ids
    assert lib[15] == Proposals.from_dense(threshold_masks(synthetic_image(15)))
    merged = merge_libraries(shards, tmp_path / "m.srlib", progress=False)
    single = build_library(tmp_path / "one.srlib", ids, gen, load=synthetic_image, progress=False)
    assert single.finished
    a, b = ProposalLibrary.open(merged), ProposalLibrary.open(single.path)
    assert a.info["content_sha256"] == b.info["content_sha256"]
    assert verify_library(merged).ok


def test_merge_rejects_duplicates_and_other_builds(tmp_path):
    a = make_library(tmp_path / "a.srlib", [1, 2])
    b = make_library(tmp_path / "b.srlib", [2, 3])
    with pytest.raises(DuplicateImageError, match="image 2 is in both"):
        merge_libraries([a, b], tmp_path / "m.srlib", progress=False, allow_partial=True)
    c = make_library(tmp_path / "c.srlib", [4], params={"other": True})
    with pytest.raises(LibraryError, match="different builds"):
        ProposalLibrary.open([a, c])


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_library_store import fake_generator, synthetic_image
    from samrefine.library import build_library
    r = build_library({out!r}, range(40, 60), fake_generator(), load=synthetic_image,
                      progress=False)
    print(r)
""")


def test_two_process_sharded_build_equals_single(tmp_path):
    out = str(tmp_path / "lib.srlib")
    code = CHILD.format(tests=os.path.dirname(__file__), out=out)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "PYTHONPATH": SRC},
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    merged = merge_libraries(
        str(tmp_path / "lib-shard-*.srlib"), tmp_path / "merged.srlib", progress=False
    )
    single = build_library(
        tmp_path / "single.srlib",
        range(40, 60),
        fake_generator(),
        load=synthetic_image,
        progress=False,
    )
    a, b = ProposalLibrary.open(merged), ProposalLibrary.open(single.path)
    assert a.image_ids().tolist() == list(range(40, 60))
    assert a.info["content_sha256"] == b.info["content_sha256"]
    for i in (40, 47, 59):
        assert a[i] == b[i]


# ---------------------------------------------------------------------------- corruption


def _find(data: bytes, needle: bytes) -> int:
    pos = data.find(needle)
    assert pos >= 0
    return pos


def test_flipped_byte_in_a_record_is_caught(tmp_path):
    path = make_library(tmp_path / "x.srlib", [1, 2, 3])
    rec = ProposalLibrary.open(path).raw(2)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    pos = _find(bytes(data), rec[40:80]) + 10
    data[pos] ^= 0x10
    with open(path, "wb") as f:
        f.write(data)
    lib = ProposalLibrary.open(path)
    with pytest.raises(LibraryCorruptError, match=r"x\.srlib: image 2: record checksum"):
        lib[2]
    assert lib[1] == props_of(1)
    report = verify_library(path)
    assert not report.ok and any("image 2" in e for e in report.errors)


def test_random_byte_flips_never_return_a_wrong_mask(tmp_path):
    path = make_library(tmp_path / "y.srlib", range(6))
    with open(path, "rb") as f:
        clean = f.read()
    rng = np.random.default_rng(0)
    caught = 0
    for trial in range(40):
        data = bytearray(clean)
        pos = int(rng.integers(len(data)))
        data[pos] ^= 1 << int(rng.integers(8))
        bad = tmp_path / f"flip{trial}.srlib"
        bad.write_bytes(bytes(data))
        try:
            lib = ProposalLibrary.open(bad)
            for i in range(6):
                try:
                    got = lib[i]
                except LibraryCorruptError as e:
                    assert str(bad) in str(e)
                    caught += 1
                    continue
                except KeyError:  # a damaged index may lose the id; never a wrong answer
                    continue
                assert got == props_of(i)
        except (LibraryCorruptError, LibraryError) as e:
            assert str(bad) in str(e)
            caught += 1
        bad.unlink()
    assert caught > 0


def test_truncated_and_missing_files(tmp_path):
    path = make_library(tmp_path / "t.srlib", range(5))
    with open(path, "rb") as f:
        data = f.read()
    trunc = tmp_path / "trunc.srlib"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(LibraryCorruptError, match=r"trunc\.srlib: truncated"):
        ProposalLibrary.open(trunc)
    assert not verify_library(trunc).ok
    with pytest.raises(FileNotFoundError, match=r"nothere\.srlib"):
        ProposalLibrary.open(tmp_path / "nothere.srlib")
    report = verify_library([path, str(tmp_path / "gone.srlib")])
    assert not report.ok and "gone.srlib" in report.errors[0]
    junk = tmp_path / "junk.srlib"
    junk.write_bytes(b"not a database at all" * 10)
    with pytest.raises(LibraryCorruptError, match=r"junk\.srlib: not a samrefine library"):
        ProposalLibrary.open(junk)


# ---------------------------------------------------------------------------- workers


class _Dataset:
    def __init__(self, lib, ids):
        self.lib, self.ids = lib, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        p = self.lib[self.ids[i]].resize((16, 16))
        return self.ids[i], os.getpid(), p.to_dense()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers(tmp_path, context):
    import torch

    ids = list(range(8))
    lib = ProposalLibrary.open(make_library(tmp_path / "w.srlib", ids))
    lib[0]  # the parent has a connection: forked workers must not reuse it
    loader = torch.utils.data.DataLoader(
        _Dataset(lib, ids), batch_size=None, num_workers=2, multiprocessing_context=context
    )
    pids = set()
    for key, pid, dense in loader:
        pids.add(int(pid))
        expect = props_of(int(key)).resize((16, 16)).to_dense()
        assert np.array_equal(np.asarray(dense), expect)
    assert os.getpid() not in pids and len(pids) == 2
    assert lib[3] == props_of(3)  # the parent's connection still works
