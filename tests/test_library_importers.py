"""Proposal sources users have (issue 12): segment-anything's scripts/amg.py output (both
layouts), Hugging Face mask generation and SamModel masks, COCO instances files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from samrefine import Proposals
from samrefine.library import LibraryError, ProposalLibrary, import_amg, import_coco
from samrefine.library.generate import as_proposals
from samrefine.library.importers import AMG_CSV_HEADER, read_amg_folder


def _sam_records(rng, n: int, h: int, w: int) -> list[dict]:
    """SamAutomaticMaskGenerator binary_mask records (random blobs, SAM's fields)."""
    out = []
    for _ in range(n):
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        m[y : y + rng.integers(2, h - y + 1), x : x + rng.integers(2, w - x + 1)] = True
        ys, xs = np.nonzero(m)
        out.append(
            {
                "segmentation": m,
                "area": int(m.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                "predicted_iou": float(rng.random()),
                "point_coords": [[float(x), float(y)]],
                "stability_score": float(rng.random()),
                "crop_box": [0, 0, w, h],
            }
        )
    return out


def _write_amg_folder(masks: list[dict], path: str) -> None:
    """What segment-anything's scripts/amg.py write_masks_to_folder does (cv2, mask * 255)."""
    import cv2

    metadata = [AMG_CSV_HEADER]
    for i, mask_data in enumerate(masks):
        cv2.imwrite(
            os.path.join(path, f"{i}.png"), (mask_data["segmentation"] * 255).astype(np.uint8)
        )
        row = [
            str(i),
            str(mask_data["area"]),
            *[str(x) for x in mask_data["bbox"]],
            *[str(x) for x in mask_data["point_coords"][0]],
            str(mask_data["predicted_iou"]),
            str(mask_data["stability_score"]),
            *[str(x) for x in mask_data["crop_box"]],
        ]
        metadata.append(",".join(row))
    with open(os.path.join(path, "metadata.csv"), "w") as f:
        f.write("\n".join(metadata))


def test_amg_binary_mask_folders(tmp_path):
    rng = np.random.default_rng(0)
    out = tmp_path / "amg_out"
    recs = {"2007_000032": _sam_records(rng, 4, 12, 15), "2007_000039": _sam_records(rng, 2, 9, 7)}
    for stem, masks in recs.items():
        (out / stem).mkdir(parents=True)
        _write_amg_folder(masks, str(out / stem))
    with ProposalLibrary.create(tmp_path / "a.srlib", generator="sam") as w:
        report = import_amg(w, out, progress=False)
    assert report.added == 2
    lib = ProposalLibrary.open(tmp_path / "a.srlib")
    for stem, masks in recs.items():
        got = lib[stem]
        assert np.array_equal(got.to_dense(), np.stack([m["segmentation"] for m in masks]))
        np.testing.assert_allclose(
            got.meta["predicted_iou"], [m["predicted_iou"] for m in masks], rtol=1e-6
        )
        np.testing.assert_allclose(
            got.meta["point_coords"], [m["point_coords"][0] for m in masks], rtol=1e-6
        )
        assert got.meta["crop_box"].tolist() == [m["crop_box"] for m in masks]
    # a folder whose PNGs do not match its CSV is refused
    (out / "2007_000032" / "1.png").write_bytes((out / "2007_000032" / "0.png").read_bytes())
    with pytest.raises(LibraryError, match="foreground pixels but metadata.csv"):
        read_amg_folder(out / "2007_000032")


def test_amg_json_files_of_the_script(tmp_path):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    recs = _sam_records(rng, 3, 10, 11)
    coco = []
    for r in recs:  # amg.py --convert-to-rle: coco_rle records, counts as str
        rle = mask_utils.encode(np.asfortranarray(r["segmentation"]))
        coco.append({**r, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    (tmp_path / "amg").mkdir()
    (tmp_path / "amg" / "ADE_train_00000001.json").write_text(json.dumps(coco))
    with ProposalLibrary.create(tmp_path / "a.srlib", generator="sam") as w:
        import_amg(w, tmp_path / "amg", progress=False)
    got = ProposalLibrary.open(tmp_path / "a.srlib")["ADE_train_00000001"]
    assert np.array_equal(got.to_dense(), np.stack([r["segmentation"] for r in recs]))


def test_hf_pipeline_output_and_sam_model_masks():
    import torch
    from transformers.models.sam.image_processing_sam import SamImageProcessor, _mask_to_rle

    rng = np.random.default_rng(2)
    masks = rng.random((5, 9, 13)) > 0.6
    scores = torch.tensor(rng.random(5), dtype=torch.float32)
    # pipeline("mask-generation") returns {"masks": [(H, W) bool, ...], "scores": (N,)}
    out = {"masks": [m for m in masks], "scores": scores}
    p = Proposals.from_hf(out)
    assert np.array_equal(p.to_dense(), masks)
    np.testing.assert_allclose(p.meta["predicted_iou"], scores.numpy(), rtol=1e-6)
    assert as_proposals(out, (9, 13)) == p  # a generator may return the pipeline's dict
    # output_rle_mask=True: transformers' own RLE of the same masks
    rle = _mask_to_rle(torch.from_numpy(masks))
    assert Proposals.from_hf({"masks": [], "rle_mask": rle, "scores": scores}) == p
    with pytest.raises(ValueError, match="3 scores for 5 masks"):
        Proposals.from_hf(out, scores=scores[:3])
    with pytest.raises(TypeError):
        Proposals.from_sam(out)  # the old route, for the record: it never worked

    # SamModel + SamProcessor.post_process_masks: (P, 3, H, W) per image
    proc = SamImageProcessor()
    low_res = torch.randn(1, 2, 3, 64, 64)
    post = proc.post_process_masks(
        low_res, original_sizes=[[30, 40]], reshaped_input_sizes=[[768, 1024]]
    )
    assert post[0].shape == (2, 3, 30, 40) and post[0].dtype == torch.bool
    iou = torch.rand(1, 2, 3)
    q = Proposals.from_hf(post[0], scores=iou[0])
    assert len(q) == 6 and q.size == (30, 40)
    assert np.array_equal(q.to_dense(), post[0].reshape(6, 30, 40).numpy())
    np.testing.assert_allclose(q.meta["predicted_iou"], iou[0].reshape(-1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="masks\\[0\\]"):
        Proposals.from_hf(post)
    logits = proc.post_process_masks(low_res, [[30, 40]], [[768, 1024]], binarize=False)[0]
    with pytest.raises(ValueError, match="threshold="):
        Proposals.from_hf(logits)


def test_coco_instances_with_polygons_rle_and_uncompressed_rle(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    h, w = 20, 30
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[5:15, 3:9] = 1
    counts = mask_utils.encode(crowd)
    unc = {
        "size": [h, w],
        "counts": [int(v) for v in Proposals.from_dense(crowd[None].astype(bool)).counts(0)],
    }
    doc = {
        "images": [
            {"id": 7, "height": h, "width": w, "file_name": "a.jpg"},
            {"id": 8, "height": 10, "width": 12, "file_name": "b.jpg"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 3,
                "iscrowd": 0,
                "area": 0,
                "bbox": [0, 0, 1, 1],
                "segmentation": [
                    [2.0, 2.0, 12.5, 2.0, 12.5, 9.0, 2.0, 9.0],
                    [20, 10, 28, 10, 24, 18],
                ],
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "iscrowd": 1,
                "area": 0,
                "bbox": [0, 0, 1, 1],
                "segmentation": unc,
            },
            {
                "id": 3,
                "image_id": 7,
                "category_id": 5,
                "iscrowd": 0,
                "area": 0,
                "bbox": [0, 0, 1, 1],
                "segmentation": {"size": [h, w], "counts": counts["counts"].decode()},
            },
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
    }
    path = tmp_path / "instances_train2017.json"
    path.write_text(json.dumps(doc))
    with ProposalLibrary.create(tmp_path / "c.srlib", generator="coco") as wr:
        assert import_coco(wr, path, progress=False).added == 2
    lib = ProposalLibrary.open(tmp_path / "c.srlib")
    coco = COCO(str(path))
    want = np.stack([coco.annToMask(a) for a in coco.loadAnns([1, 2, 3])]).astype(bool)
    assert want[0].sum() > 0 and np.array_equal(lib[7].to_dense(), want)
    assert lib[7].meta["category_id"].tolist() == [3, 5, 5]
    assert lib[7].meta["annotation_id"].tolist() == [1, 2, 3]
    assert len(lib[8]) == 0 and lib[8].size == (10, 12)
