"""Image keys: names (VOC, ADE20K, Cityscapes) as well as ints; version-1 files still open."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from test_library_store import props_of

from samrefine import Proposals
from samrefine.library import (
    LibraryError,
    ProposalLibrary,
    build_library,
    export_sa1b,
    import_amg,
    import_coco,
    import_sa1b,
    merge_libraries,
    verify_library,
)
from samrefine.library.keys import image_key, json_image_key, parse_image_key

DATA = os.path.join(os.path.dirname(__file__), "data")

NAMES = ["2007_000032", "ADE_train_00000001", "aachen/aachen_000000_000019", "000123", "42x"]


def small(i: int) -> Proposals:
    d = np.zeros((2, 6, 5 + i % 3), bool)
    d[0, :3, :2] = True
    d[1, 2 + i % 3, 1:] = True
    return Proposals.from_dense(d)


def test_text_keys_keep_their_spelling():
    assert parse_image_key("2007_000032") == "2007_000032"  # int() would give 2007000032
    assert parse_image_key("000123") == "000123"  # zero padding is part of the name
    assert parse_image_key("42") == 42 and parse_image_key(" -7\n") == -7
    assert parse_image_key("1e3") == "1e3"
    with pytest.raises(TypeError):
        image_key(1.0)
    with pytest.raises(TypeError):
        image_key(True)
    with pytest.raises(ValueError, match="whitespace"):
        image_key("2007_000032\r")
    assert json_image_key(3.0) == 3
    with pytest.raises(ValueError, match="1.2"):
        json_image_key(1.2)


def test_name_keys_round_trip_and_stay_distinct_from_ints(tmp_path):
    path = tmp_path / "voc.srlib"
    with ProposalLibrary.create(path, generator="test") as w:
        for i, name in enumerate(NAMES):
            w.append(name, small(i))
        with pytest.raises(LibraryError, match="one type"):
            w.append(5, small(0))
    lib = ProposalLibrary.open(path)
    assert len(lib) == len(NAMES)
    assert lib.image_ids().tolist() == sorted(NAMES)
    for i, name in enumerate(NAMES):
        assert name in lib and lib[name] == small(i)
        assert lib.image_size(name) == small(i).size
    assert 2007000032 not in lib and 123 not in lib and "2007000032" not in lib
    assert 1 not in lib  # internal row ids are not keys
    with pytest.raises(KeyError, match="'2007_000033'"):
        lib["2007_000033"]
    with pytest.raises(KeyError):
        lib[1]
    assert lib.info["key_type"] == "str"
    assert verify_library(path, deep=True).ok


def test_build_with_voc_names_finds_the_files(tmp_path):
    from PIL import Image

    images = tmp_path / "JPEGImages"
    images.mkdir()
    rng = np.random.default_rng(0)
    names = ["2007_000032", "2007_000039", "2008_000002"]
    for n in names:
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(images / f"{n}.png")
    gen = lambda image: image[..., 0] > np.arange(1, 4)[:, None, None] * 60  # noqa: E731
    from samrefine.library.generate import Generator

    g = Generator("levels", gen)
    with pytest.raises(ValueError, match="cannot name image"):
        build_library(tmp_path / "x.srlib", names, g, images=images, progress=False)
    got = build_library(
        tmp_path / "voc.srlib",
        [parse_image_key(n) for n in names],
        g,
        images=images,
        file_pattern="{image_id}.png",
        progress=False,
    )
    assert got.finished and got.added == 3 and not got.failures
    lib = ProposalLibrary.open(got.path)
    assert lib.image_ids().tolist() == names
    want = np.asarray(Image.open(images / "2007_000039.png").convert("RGB"))[..., 0]
    assert np.array_equal(lib["2007_000039"].to_dense(), want > np.arange(1, 4)[:, None, None] * 60)


def test_name_keyed_shards_merge_and_export_import_keep_names(tmp_path):
    gen = lambda image: image[..., 0] > 100  # noqa: E731
    from samrefine.library.generate import Generator

    g = Generator("one", lambda image: gen(image)[None])
    load = lambda key: np.full((8, 9, 3), 50 + 10 * NAMES.index(key), np.uint8)  # noqa: E731
    for i in range(2):
        build_library(tmp_path / "s.srlib", NAMES, g, load=load, shard=(i, 2), progress=False)
    merged = merge_libraries(
        str(tmp_path / "s-shard-*.srlib"), tmp_path / "m.srlib", progress=False
    )
    lib = ProposalLibrary.open(merged)
    assert lib.image_ids().tolist() == sorted(NAMES)
    single = build_library(tmp_path / "one.srlib", NAMES, g, load=load, progress=False)
    assert lib.info["content_sha256"] == ProposalLibrary.open(single.path).info["content_sha256"]
    assert export_sa1b(lib, tmp_path / "sa1b", progress=False) == len(NAMES)
    assert os.path.exists(tmp_path / "sa1b" / "aachen" / "aachen_000000_000019.json")
    with ProposalLibrary.create(tmp_path / "back.srlib", generator="x") as w:
        files = sorted(str(p) for p in (tmp_path / "sa1b").rglob("*.json"))
        assert import_sa1b(w, files, progress=False).added == len(NAMES)
    back = ProposalLibrary.open(tmp_path / "back.srlib")
    assert back.image_ids().tolist() == sorted(NAMES)
    for name in NAMES:
        assert back[name] == lib[name]


def test_amg_json_files_named_by_image_basename(tmp_path):
    recs = [{"segmentation": r, "area": 1} for r in small(1).to_rle(compressed=False)]
    (tmp_path / "amg").mkdir()
    for stem in ("2007_000032", "17"):
        (tmp_path / "amg" / f"{stem}.json").write_text(json.dumps(recs))
    with ProposalLibrary.create(tmp_path / "a.srlib", generator="x") as w:
        with pytest.raises(LibraryError, match="one type"):
            import_amg(w, tmp_path / "amg", progress=False)
    (tmp_path / "amg" / "17.json").unlink()
    with ProposalLibrary.create(tmp_path / "b.srlib", generator="x") as w:
        assert import_amg(w, tmp_path / "amg", progress=False).added == 1
    assert ProposalLibrary.open(tmp_path / "b.srlib")["2007_000032"] == small(1)


def test_float_image_ids_in_json_are_refused(tmp_path):
    rle = small(0).to_rle(compressed=False)[0]
    doc = [{"image_id": 1.2, "segmentation": rle}, {"image_id": 1.9, "segmentation": rle}]
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with ProposalLibrary.create(tmp_path / "c.srlib", generator="x") as w:
        with pytest.raises(LibraryError, match="1.2"):
            import_coco(w, tmp_path / "r.json", progress=False)
    doc = {"image": {"image_id": 1.9, "height": 6, "width": 5}, "annotations": []}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with ProposalLibrary.create(tmp_path / "d.srlib", generator="x") as w:
        with pytest.raises(LibraryError, match="1.9"):
            import_sa1b(w, tmp_path / "s.json", progress=False)


def test_version_1_library_still_opens_and_verifies(tmp_path):
    path = tmp_path / "old.srlib"
    shutil.copy(os.path.join(DATA, "v1_int_keys.srlib"), path)
    lib = ProposalLibrary.open(path)
    assert lib.info["format_version"] == 1
    assert lib.image_ids().tolist() == [3, 11, 2007000032]
    assert 11 in lib and "11" not in lib and 12 not in lib
    d = np.zeros((3, 5 + 11 % 7, 7), bool)
    i = 11 % 7
    d[0, :2, :3] = True
    d[1, i % 5 :, 4:] = True
    d[2, 1, 1 + i % 3] = True
    assert np.array_equal(lib[11].to_dense(), d)
    assert verify_library(path).ok
    with pytest.raises(LibraryError, match="version 1"):
        ProposalLibrary.create(path, generator="fixture", if_exists="resume")


def test_int_keys_work_as_before(tmp_path):
    path = tmp_path / "coco.srlib"
    with ProposalLibrary.create(path, generator="test") as w:
        for i in (9, 2, 2**40):
            w.append(np.int64(i), props_of(i % 50))
    lib = ProposalLibrary.open(path)
    assert lib.image_ids().dtype == np.int64
    assert lib.image_ids().tolist() == [2, 9, 2**40]
    assert lib[2**40] == props_of(2**40 % 50) and "9" not in lib
