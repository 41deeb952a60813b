"""Importers and exporters round-trip exactly (checked with pycocotools)."""

import json
import os
import pickle

import numpy as np
import pycocotools.mask as pm
import pytest

from samrefine import Proposals
from samrefine.library import (
    LibraryError,
    ProposalLibrary,
    export_coco,
    export_sa1b,
    export_semires,
    import_amg,
    import_coco,
    import_sa1b,
    import_semires,
    read_semires,
)


def _dense(seed, n=5, h=19, w=23):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), bool)
    for k in range(n):
        y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
        out[k, y0 : y0 + rng.integers(2, h - y0 + 1), x0 : x0 + rng.integers(2, w - x0 + 1)] = True
        out[k] ^= rng.random((h, w)) > 0.9
    out[-1] = False if n > 2 else out[-1]  # an empty mask
    return out


IMAGES = {3: _dense(3), 11: _dense(11, n=1, h=8, w=30), 12: _dense(12, n=7, h=31, w=9)}


def _decode_all(rles, h, w):
    """pycocotools decode of string-or-bytes RLE dicts to (N, H, W) bool."""
    objs = [
        {
            "size": [h, w],
            "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"],
        }
        for r in rles
    ]
    return pm.decode(objs).transpose(2, 0, 1).astype(bool) if objs else np.zeros((0, h, w), bool)


def _check_library(path, images=IMAGES):
    lib = ProposalLibrary.open(path)
    assert sorted(lib.image_ids().tolist()) == sorted(images)
    for key, dense in images.items():
        props = lib[key]
        h, w = dense.shape[1:]
        assert props.size == (h, w)
        assert np.array_equal(_decode_all(props.to_rle(), h, w), dense)
    return lib


def _sam_records(dense, mode):
    """Records as SamAutomaticMaskGenerator.generate returns them in each output_mode."""
    rles = pm.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for k, m in enumerate(dense):
        if mode == "binary_mask":
            seg = m
        elif mode == "coco_rle":
            seg = {"size": list(m.shape), "counts": rles[k]["counts"].decode()}
        else:  # uncompressed_rle: list counts, column-major, background first
            flat = m.T.reshape(-1)
            change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
            bounds = np.concatenate([[0], change, [flat.size]])
            counts = np.diff(bounds).tolist()
            if flat[0]:
                counts = [0] + counts
            seg = {"size": list(m.shape), "counts": counts}
        out.append(
            {
                "segmentation": seg,
                "area": int(m.sum()),
                "bbox": [0, 0, 1, 1],
                "predicted_iou": 0.5 + k / 100,
                "point_coords": [[k, k + 1]],
                "stability_score": 0.9,
                "crop_box": [0, 0, m.shape[1], m.shape[0]],
            }
        )
    return out


@pytest.mark.parametrize("mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_import_amg_every_output_mode(tmp_path, mode):
    src = {k: _sam_records(d, mode) for k, d in IMAGES.items()}
    with ProposalLibrary.create(tmp_path / "amg.srlib") as w:
        report = import_amg(w, src, progress=False)
    assert report.added == 3
    lib = _check_library(tmp_path / "amg.srlib")
    np.testing.assert_allclose(lib[12].meta["predicted_iou"], 0.5 + np.arange(7) / 100, rtol=1e-6)
    np.testing.assert_array_equal(lib[12].meta["point_coords"][:, 1], np.arange(7) + 1)


def test_import_amg_json_files(tmp_path):
    d = tmp_path / "amg"
    d.mkdir()
    for k, dense in IMAGES.items():
        (d / f"{k}.json").write_text(json.dumps(_sam_records(dense, "coco_rle")))
    with ProposalLibrary.create(tmp_path / "a.srlib") as w:
        import_amg(w, d, progress=False)
    _check_library(tmp_path / "a.srlib")


def test_sa1b_import_export_round_trip(tmp_path):
    d = tmp_path / "sa1b"
    d.mkdir()
    for k, dense in IMAGES.items():
        h, w = dense.shape[1:]
        doc = {
            "image": {"image_id": k, "height": h, "width": w, "file_name": f"sa_{k}.jpg"},
            "annotations": _sam_records(dense, "coco_rle"),
        }
        (d / f"sa_{k}.json").write_text(json.dumps(doc))
    with ProposalLibrary.create(tmp_path / "s.srlib") as w:
        assert import_sa1b(w, d, progress=False).added == 3
    lib = _check_library(tmp_path / "s.srlib")
    out = tmp_path / "out"
    assert export_sa1b(lib, out, progress=False) == 3
    doc = json.loads((out / "12.json").read_text())
    assert doc["image"] == {"image_id": 12, "height": 31, "width": 9}
    assert [a["area"] for a in doc["annotations"]] == IMAGES[12].sum((1, 2)).tolist()
    with ProposalLibrary.create(tmp_path / "s2.srlib") as w:
        import_sa1b(w, out, progress=False)
    _check_library(tmp_path / "s2.srlib")


def test_coco_export_import_round_trip(tmp_path):
    with ProposalLibrary.create(tmp_path / "c.srlib") as w:
        for k, dense in IMAGES.items():
            w.append(k, Proposals.from_dense(dense))
    lib = ProposalLibrary.open(tmp_path / "c.srlib")
    n = export_coco(lib, tmp_path / "c.json", progress=False)
    anns = json.loads((tmp_path / "c.json").read_text())
    assert n == len(anns) == sum(len(d) for d in IMAGES.values())
    for key, dense in IMAGES.items():
        mine = [a for a in anns if a["image_id"] == key]
        h, w = dense.shape[1:]
        assert np.array_equal(_decode_all([a["segmentation"] for a in mine], h, w), dense)
        truth = pm.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))
        assert [a["segmentation"]["counts"] for a in mine] == [t["counts"].decode() for t in truth]
        np.testing.assert_array_equal([a["bbox"] for a in mine], pm.toBbox(truth))
    with ProposalLibrary.create(tmp_path / "c2.srlib") as w:
        import_coco(w, tmp_path / "c.json", progress=False)
    _check_library(tmp_path / "c2.srlib")


def _reference_mask2rle(mask):
    """The SemiRES reference encoder (facts 4.2): column-major, 1-based start/length pairs."""
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return runs.tolist()


def _reference_rle2mask(counts, h, w):
    """The SemiRES reference decoder: paint [start - 1, start - 1 + length)."""
    flat = np.zeros(h * w, np.uint8)
    for s, ln in zip(counts[0::2], counts[1::2]):
        flat[s - 1 : s - 1 + ln] = 1
    return flat.reshape((h, w), order="F")


def _refs():
    # image 3 has three referents, 11 one, 12 two; ref 99 belongs to an image not in the files
    pairs = [(100, 3), (101, 3), (102, 3), (110, 11), (120, 12), (121, 12), (99, 50)]
    return [
        {
            "ref_id": r,
            "image_id": i,
            "split": "train" if r != 121 else "val",
            "ann_id": r,
            "category_id": 1,
            "sentences": [],
            "sent_ids": [],
        }
        for r, i in pairs
    ]


def _write_semires(folder, refs, images=IMAGES):
    folder.mkdir()
    for r in refs:
        dense = images.get(r["image_id"])
        if dense is None:
            continue
        h, w = dense.shape[1:]
        doc = [{"counts": _reference_mask2rle(m), "size": [h, w]} for m in dense]
        (folder / f"{r['ref_id']}.json").write_text(json.dumps(doc))


def test_semires_import_folds_referents_and_round_trips(tmp_path):
    refs = _refs()
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps(refs))
    _write_semires(tmp_path / "sam_rle_mask", refs)
    with ProposalLibrary.create(tmp_path / "r.srlib", model="vit_h") as w:
        report = import_semires(w, tmp_path / "sam_rle_mask", refs_path, progress=False)
    assert report.added == 3  # six referent files, three images
    lib = _check_library(tmp_path / "r.srlib")
    # the reference decoder agrees with ours on every file
    for r in refs[:6]:
        doc = json.loads((tmp_path / "sam_rle_mask" / f"{r['ref_id']}.json").read_text())
        props = read_semires(tmp_path / "sam_rle_mask" / f"{r['ref_id']}.json")
        for k, m in enumerate(doc):
            ref_mask = _reference_rle2mask(m["counts"], *m["size"])
            assert np.array_equal(props[k].to_dense()[0], ref_mask.astype(bool))
    # export back to the reference layout: one file per referent, identical content
    out = tmp_path / "export"
    assert export_semires(lib, out, refs, progress=False) == 6
    for r in refs[:6]:
        a = json.loads((out / f"{r['ref_id']}.json").read_text())
        b = json.loads((tmp_path / "sam_rle_mask" / f"{r['ref_id']}.json").read_text())
        assert a == b


def test_semires_conflicts_and_bad_files(tmp_path):
    refs = _refs()[:2]
    _write_semires(tmp_path / "m", refs)
    other = IMAGES[3].copy()
    other[0] = ~other[0]
    h, w = other.shape[1:]
    (tmp_path / "m" / "101.json").write_text(
        json.dumps([{"counts": _reference_mask2rle(m), "size": [h, w]} for m in other])
    )
    with ProposalLibrary.create(tmp_path / "x.srlib") as wr:
        with pytest.raises(LibraryError, match="different proposals"):
            import_semires(wr, tmp_path / "m", refs, on_conflict="error", progress=False)
        report = import_semires(wr, tmp_path / "m", refs, progress=False)
    assert "1 images had referents with differing proposals" in str(report)
    assert np.array_equal(ProposalLibrary.open(tmp_path / "x.srlib")[3].to_dense(), IMAGES[3])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"counts": [0, 3], "size": [4, 4]}]))
    with pytest.raises(LibraryError, match="1-based"):
        read_semires(bad)
    bad.write_text("[]")
    with pytest.raises(LibraryError, match="no masks and no image size"):
        read_semires(bad)
    assert read_semires(bad, size=(4, 5)).size == (4, 5)


def test_semires_overlapping_pairs_decode_like_the_reference(tmp_path):
    f = tmp_path / "o.json"
    counts = [5, 4, 2, 2, 7, 1, 20, 3]  # unsorted, overlapping and touching pairs
    f.write_text(json.dumps([{"counts": counts, "size": [5, 5]}]))
    props = read_semires(f)
    props._validate()
    assert np.array_equal(props.to_dense()[0], _reference_rle2mask(counts, 5, 5).astype(bool))


def test_exports_are_readable_without_samrefine_names(tmp_path):
    # COCO export is a valid pycocotools results file
    from pycocotools.coco import COCO

    with ProposalLibrary.create(tmp_path / "c.srlib") as w:
        for k, dense in IMAGES.items():
            w.append(k, Proposals.from_dense(dense))
    export_coco(ProposalLibrary.open(tmp_path / "c.srlib"), tmp_path / "r.json", progress=False)
    gt = COCO()
    gt.dataset = {
        "images": [{"id": k, "height": d.shape[1], "width": d.shape[2]} for k, d in IMAGES.items()],
        "annotations": [],
        "categories": [{"id": 1, "name": "x"}],
    }
    gt.createIndex()
    res = gt.loadRes(os.fspath(tmp_path / "r.json"))
    ann = res.loadAnns(res.getAnnIds(imgIds=[12]))
    assert len(ann) == len(IMAGES[12])
    assert np.array_equal(res.annToMask(ann[0]).astype(bool), IMAGES[12][0])
