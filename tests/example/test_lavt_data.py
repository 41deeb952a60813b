"""Refer-layout loader, synthetic generator, transforms and labelled/unlabelled splits."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from examples.semires_lavt.data import (
    DataFileNotFoundError,
    DataLayoutError,
    ProposalNotFoundError,
    RandomCrop,
    RandomHorizontalFlip,
    ReferDataset,
    Resize,
    StrongAugment,
    collate,
    decode_polygons,
    load_refer,
    make_split,
    read_semires_split,
    read_split,
    swap_left_right,
    write_split,
    write_synthetic_refcoco,
)
from examples.semires_lavt.data.synthetic import COLOURS
from examples.semires_lavt.data.transforms import resize_mask

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

try:
    import samrefine

    HAVE_PROPOSALS = hasattr(samrefine, "Proposals") and hasattr(samrefine, "ProposalBatch")
except ImportError:  # pragma: no cover - the core library is written in parallel
    HAVE_PROPOSALS = False
needs_proposals = pytest.mark.skipif(not HAVE_PROPOSALS, reason="samrefine.Proposals missing")


# --- synthetic dataset: layout, determinism, content -----------------------------------------


def test_synthetic_writes_the_refer_layout(synthetic_root):
    refs_path = synthetic_root / "refcoco" / "refs(unc).p"
    with open(refs_path, "rb") as f:
        refs = pickle.load(f)
    with open(synthetic_root / "refcoco" / "instances.json") as f:
        instances = json.load(f)
    assert {"images", "annotations", "categories"} <= set(instances)
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    annotations = {a["id"]: a for a in instances["annotations"]}
    images = {im["id"]: im for im in instances["images"]}
    for ref in refs:
        assert {
            "ref_id",
            "ann_id",
            "image_id",
            "category_id",
            "split",
            "sentences",
            "sent_ids",
        } <= (set(ref))
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for sentence in ref["sentences"]:
            assert {"raw", "sent", "tokens", "sent_id"} <= set(sentence)
        ann = annotations[ref["ann_id"]]
        assert ann["image_id"] == ref["image_id"]
        assert isinstance(ann["segmentation"], list) and all(
            len(poly) >= 6 and len(poly) % 2 == 0 for poly in ann["segmentation"]
        )
        image = images[ref["image_id"]]
        path = synthetic_root / "images/mscoco/images/train2014" / image["file_name"]
        assert image["file_name"] == f"COCO_train2014_{ref['image_id']:012d}.jpg"
        assert path.is_file()
        assert 160 <= image["height"] <= 320 and 160 <= image["width"] <= 320
    # testA holds circles only (category 1), testB the other shapes, as RefCOCO people/objects
    assert {r["category_id"] for r in refs if r["split"] == "testA"} == {1}
    assert 1 not in {r["category_id"] for r in refs if r["split"] == "testB"}


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_synthetic_is_deterministic(tmp_path):
    write_synthetic_refcoco(tmp_path / "a", n_images=8, seed=3, progress=False)
    write_synthetic_refcoco(tmp_path / "b", n_images=8, seed=3, progress=False)
    write_synthetic_refcoco(tmp_path / "c", n_images=8, seed=4, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _named_colour(pixels: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float64)
    return names[int(np.argmin(((palette - pixels.mean(axis=0)) ** 2).sum(axis=1)))]


def test_synthetic_expressions_name_the_right_object_uniquely(synthetic_root):
    """Colour words match the referent's pixels; colour+shape phrases match no other object."""
    from PIL import Image
    from scipy import ndimage

    index = load_refer(synthetic_root)
    shape_words = {
        1: ("circle", "disc", "round"),
        2: ("square", "box"),
        3: ("triangle",),
        4: ("cross", "plus"),
    }
    checked_colour = checked_unique = 0
    for image_id, record in index.images.items():
        pixels = np.asarray(
            Image.open(synthetic_root / "images/mscoco/images/train2014" / record["file_name"])
        ).reshape(-1, 3)
        anns = [a for a in index.annotations.values() if a["image_id"] == image_id]
        colours = {}
        for ann in anns:
            mask = decode_polygons(ann["segmentation"], record["height"], record["width"])
            core = ndimage.binary_erosion(mask, iterations=2)
            colours[ann["id"]] = _named_colour(pixels[(core if core.any() else mask).ravel()])
        for ref in (r for r in index.refs if r["image_id"] == image_id):
            for sentence in ref["sentences"]:
                words = sentence["sent"].split()
                named = [w for w in words if w in COLOURS]
                if named:
                    assert named == [colours[ref["ann_id"]]], sentence["sent"]
                    checked_colour += 1
                shape = [c for c, ws in shape_words.items() if any(w in words for w in ws)]
                if shape:
                    assert shape == [ref["category_id"]], sentence["sent"]
                plain = not any(
                    w in words
                    for w in (
                        "big",
                        "large",
                        "bigger",
                        "small",
                        "little",
                        "smaller",
                        "left",
                        "right",
                        "top",
                        "bottom",
                        "leftmost",
                        "rightmost",
                        "upper",
                        "lower",
                    )
                )
                if named and shape and plain:
                    same = [
                        a
                        for a in anns
                        if colours[a["id"]] == named[0] and a["category_id"] == shape[0]
                    ]
                    assert [a["id"] for a in same] == [ref["ann_id"]], sentence["sent"]
                    checked_unique += 1
    assert checked_colour > 10 and checked_unique > 3


def test_synthetic_objects_touch_or_overlap(synthetic_root):
    from scipy import ndimage

    index = load_refer(synthetic_root)
    touching = 0
    for image_id, record in index.images.items():
        masks = [
            decode_polygons(a["segmentation"], record["height"], record["width"])
            for a in index.annotations.values()
            if a["image_id"] == image_id
        ]
        for i in range(len(masks)):
            grown = ndimage.binary_dilation(masks[i], iterations=2)
            touching += sum(bool((grown & masks[j]).any()) for j in range(i + 1, len(masks)))
    assert touching >= 3


# --- polygons, tokens, loader ----------------------------------------------------------------


def test_decode_polygons_takes_the_union_of_overlapping_parts():
    # two 4x4 squares overlapping in a 2x2 block: union 4*4 + 4*4 - 2*2 = 28 pixels;
    # the reference's "sum == 1" rule would keep only 28 - 4 = 24
    first = [0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]
    second = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]
    mask = decode_polygons([first, second], 8, 8)
    assert mask.dtype == bool and mask.sum() == 28
    assert mask[2:4, 2:4].all()


def test_tokenisation_keeps_sep_and_pads(tokenizer):
    from examples.semires_lavt.lavt.text import tokenize

    long_sentence = " ".join(["red"] * 40)
    ids, mask = tokenize(tokenizer, long_sentence, 20)
    assert ids.shape == (20,) and ids.dtype == torch.int64
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert mask.tolist() == [1] * 20
    ids, mask = tokenize(tokenizer, "the red circle", 20)
    assert ids[:5].tolist() == [
        tokenizer.cls_token_id,
        *tokenizer.convert_tokens_to_ids(["the", "red", "circle"]),
        tokenizer.sep_token_id,
    ]
    assert mask.tolist() == [1] * 5 + [0] * 15 and ids[5:].tolist() == [0] * 15


def test_loader_reads_the_synthetic_set_like_refcoco(synthetic_root, tokenizer):
    index = load_refer(synthetic_root, "refcoco")
    val_refs = [r for r in index.refs if r["split"] == "val"]
    by_ref = ReferDataset(synthetic_root, split="val", image_size=64, tokenizer=tokenizer)
    by_sentence = ReferDataset(
        synthetic_root,
        split="val",
        image_size=64,
        tokenizer=tokenizer,
        sentences="all",
        with_orig_mask=True,
    )
    assert len(by_ref) == len(val_refs)
    assert len(by_sentence) == sum(len(r["sentences"]) for r in val_refs)
    sample = by_sentence[0]
    ref = val_refs[0]
    assert sample["ref_id"] == ref["ref_id"] and sample["image_id"] == ref["image_id"]
    assert sample["sent_id"] == ref["sentences"][0]["sent_id"]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (64, 64) and sample["mask"].dtype == torch.int64
    assert sample["input_ids"].shape == (20,) and sample["attention_mask"].dtype == torch.int64
    record = index.images[ref["image_id"]]
    assert sample["orig_size"] == (record["height"], record["width"])
    gt = decode_polygons(index.annotations[ref["ann_id"]]["segmentation"], *sample["orig_size"])
    assert torch.equal(sample["mask_orig"], torch.from_numpy(gt.astype(np.uint8)))
    assert sample["area"] == int(gt.sum())
    # GT at model size: torch's nearest rule, source index floor(i * in / out)
    rows = (np.arange(64) * gt.shape[0]) // 64
    cols = (np.arange(64) * gt.shape[1]) // 64
    assert torch.equal(sample["mask"], torch.from_numpy(gt[rows][:, cols].astype(np.int64)))
    # ImageNet normalisation of the bilinear-resized image
    from PIL import Image

    image = Image.open(synthetic_root / "images/mscoco/images/train2014" / record["file_name"])
    resized = np.asarray(image.convert("RGB").resize((64, 64), Image.BILINEAR)) / 255.0
    expected = (resized - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(sample["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    batch = collate([by_sentence[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 64, 64) and batch["orig_size"].shape == (3, 2)
    assert isinstance(batch["mask_orig"], list) and batch["image_id"].dtype == torch.int64


def test_unlabelled_mode_and_two_views(synthetic_root, tokenizer):
    weak_only = StrongAugment(jitter_p=0.0, blur_p=0.0)
    ds = ReferDataset(
        synthetic_root,
        split="train",
        image_size=64,
        tokenizer=tokenizer,
        with_mask=False,
        views=("weak", "strong"),
        strong_augment=weak_only,
    )
    sample = ds[0]
    assert "mask" not in sample and "image" not in sample
    assert torch.equal(sample["image_weak"], sample["image_strong"])
    ds.strong_augment = StrongAugment(jitter_p=1.0, blur_p=1.0)
    torch.manual_seed(0)
    sample = ds[0]
    assert not torch.equal(sample["image_weak"], sample["image_strong"])
    # jitter ran on [0, 1] pixels and normalisation once: un-normalised values stay in [0, 1]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    pixels = sample["image_strong"] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_hflip_swaps_words_and_mirrors_image_and_mask(synthetic_root, tokenizer):
    assert swap_left_right("Left cup, rightmost plate") == "Right cup, leftmost plate"
    assert swap_left_right("bright leftover") == "bright leftover"
    plain = ReferDataset(
        synthetic_root, split="val", image_size=64, tokenizer=tokenizer, sentences="all"
    )
    flipped = ReferDataset(
        synthetic_root,
        split="val",
        image_size=64,
        tokenizer=tokenizer,
        sentences="all",
        transforms=[Resize(64), RandomHorizontalFlip(p=1.0)],
    )
    for i in range(len(plain)):
        a, b = plain[i], flipped[i]
        assert torch.equal(b["mask"], a["mask"].flip(-1))
        assert torch.allclose(b["image"], a["image"].flip(-1))
        assert b["sentence"] == swap_left_right(a["sentence"])


def _gt_proposals(root):
    """Proposal source whose masks are the image's annotations (original size)."""
    index = load_refer(root)
    source = {}
    for image_id, record in index.images.items():
        masks = [
            decode_polygons(a["segmentation"], record["height"], record["width"])
            for a in index.annotations.values()
            if a["image_id"] == image_id
        ]
        source[image_id] = samrefine.Proposals.from_dense(np.stack(masks))
    return source


@needs_proposals
def test_proposals_follow_every_geometric_transform(synthetic_root, tokenizer):
    """With proposals equal to the annotations, the referent's proposal must equal the GT mask
    after crop, resize and flip, pixel for pixel (both use torch's nearest rule)."""
    source = _gt_proposals(synthetic_root)
    ds = ReferDataset(
        synthetic_root,
        split="train",
        image_size=96,
        tokenizer=tokenizer,
        proposals=source,
        transforms=[RandomCrop(scale=(0.5, 0.9), p=1.0), Resize(96), RandomHorizontalFlip(0.5)],
    )
    torch.manual_seed(0)
    for i in range(0, len(ds), 5):
        sample = ds[i]
        proposals = collate([sample])["proposals"][0]
        assert proposals.size == (96, 96)
        dense = proposals.to_dense()
        gt = sample["mask"].numpy().astype(bool)
        assert any(np.array_equal(m, gt) for m in dense), f"sample {i}"
    batch = collate([ds[0], ds[1]])
    assert isinstance(batch["proposals"], samrefine.ProposalBatch) and len(batch["proposals"]) == 2


def _replay_dense(masks: np.ndarray, ops: list) -> np.ndarray:
    """The geometry ops on dense (N, h, w) masks with numpy (crop, flip, torch-rule resize)."""
    for op in ops:
        if op[0] == "crop":
            x, y, w, h = op[1]
            masks = masks[:, y : y + h, x : x + w]
        elif op[0] == "hflip":
            masks = masks[:, :, ::-1]
        else:
            masks = np.stack([resize_mask(m, op[1], "torch") for m in masks])
    return masks


@needs_proposals
def test_library_collate_gives_the_proposals_of_the_transformed_image(synthetic_root, tokenizer):
    """samrefine.ProposalCollate + follow_geometry = the same ops done on dense masks by hand.

    The dataset records the ops applied to the image (crop, resize, flip); collate replays them
    on the original proposals. The result must equal the original masks cropped, resized and
    flipped with numpy (the example's own torch-rule resize), pixel for pixel, and the images,
    masks and sentences must be what the dataset returned.
    """
    source = _gt_proposals(synthetic_root)
    ds = ReferDataset(
        synthetic_root,
        split="train",
        image_size=80,
        tokenizer=tokenizer,
        proposals=source,
        transforms=[RandomCrop(scale=(0.5, 0.9), p=1.0), RandomHorizontalFlip(0.5), Resize(80)],
    )
    torch.manual_seed(1)
    samples = [ds[i] for i in range(0, len(ds), 4)]
    flipped = sum(("hflip",) in s["geometry"] for s in samples)
    assert 0 < flipped < len(samples)  # both branches seen
    batch = collate(samples)
    assert batch["proposals"].size == (80, 80)
    for b, sample in enumerate(samples):
        original = sample["proposals"]
        assert original.size == tuple(sample["orig_size"])
        expected = _replay_dense(original.to_dense(), sample["geometry"])
        np.testing.assert_array_equal(batch["proposals"][b].to_dense(), expected)
        assert torch.equal(batch["image"][b], sample["image"])
        assert torch.equal(batch["mask"][b], sample["mask"])
    assert batch["sentence"] == [s["sentence"] for s in samples]
    assert batch["geometry"] == [s["geometry"] for s in samples]


@needs_proposals
def test_missing_proposals_name_the_image(synthetic_root, tokenizer):
    source = _gt_proposals(synthetic_root)
    ds = ReferDataset(synthetic_root, split="val", image_size=64, tokenizer=tokenizer)
    absent = ds.image_ids[0]
    del source[absent]
    with pytest.raises(ProposalNotFoundError, match=f"image id {absent}"):
        ReferDataset(
            synthetic_root, split="val", image_size=64, tokenizer=tokenizer, proposals=source
        )
    lazy = ReferDataset(
        synthetic_root,
        split="val",
        image_size=64,
        tokenizer=tokenizer,
        proposals=source,
        check_proposals=False,
    )
    with pytest.raises(ValueError, match=f"COCO_train2014_{absent:012d}"):
        lazy[0]


def test_clear_errors_for_missing_and_malformed_files(synthetic_root, tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReferDataset(tmp_path / "nowhere", tokenizer=tokenizer)
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root / "refcoco", copy / "refcoco")
    (copy / "images/mscoco/images/train2014").mkdir(parents=True)
    with pytest.raises(DataFileNotFoundError, match=r"refs\(umd\)\.p.*found \['refs\(unc\)\.p'\]"):
        ReferDataset(copy, split_by="umd", tokenizer=tokenizer)
    ds = ReferDataset(copy, split="val", tokenizer=tokenizer)  # no image files copied
    with pytest.raises(DataFileNotFoundError, match="COCO_train2014_"):
        ds[0]
    bad = tmp_path / "bad"
    (bad / "refcoco").mkdir(parents=True)
    (bad / "images/mscoco/images/train2014").mkdir(parents=True)
    with open(bad / "refcoco" / "refs(unc).p", "wb") as f:
        pickle.dump({"not": "a list"}, f)
    (bad / "refcoco" / "instances.json").write_text("{}")
    with pytest.raises(DataLayoutError, match="list of ref dicts"):
        ReferDataset(bad, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="splits present"):
        ReferDataset(synthetic_root, split="testC", tokenizer=tokenizer)


# --- splits ----------------------------------------------------------------------------------


def test_split_is_by_image_stable_and_disjoint(tmp_path):
    ids = [9, 3, 7, 1, 12, 5, 4, 8, 2, 11] * 3 + list(range(100, 190))
    first = make_split(ids, 10.0, seed=0)
    again = make_split(ids, 10.0, seed=0)
    other = make_split(ids, 10.0, seed=1)
    distinct = list(dict.fromkeys(ids))  # 100 images
    assert first == again and first.labelled != other.labelled
    assert len(first.labelled) == 10 and len(first.unlabelled) == 90
    assert not set(first.labelled) & set(first.unlabelled)
    assert set(first.labelled) | set(first.unlabelled) == set(distinct)
    # SemiRES split_dataset_select.py: random.seed(0); random.sample(ids, floor(p * n))
    random.seed(0)
    assert set(first.labelled) == set(random.sample(distinct, 10))
    # fractional percentages, down to one image of a thousand
    assert len(make_split(range(1000), 0.1, seed=0).labelled) == 1
    assert len(make_split(range(1000), 0.5, seed=0).labelled) == 5
    with pytest.raises(ValueError, match="rounds down to 0"):
        make_split(range(50), 1.0)
    path = write_split(first, tmp_path / "splits" / "toy_10%_seed0.txt")
    assert read_split(path) == first
    lines = path.read_text().splitlines()
    assert sum(line.startswith("labelled ") for line in lines) == 10


def test_split_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file"):
        read_split(tmp_path / "absent.txt")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("labelled 3\n")
    with pytest.raises(DataLayoutError, match="does not start with"):
        read_split(wrong)


def test_read_semires_split_json(tmp_path, synthetic_root, tokenizer):
    index = load_refer(synthetic_root)
    train_ids = index.train_image_ids()
    labelled = train_ids[:2]
    entries = [
        {
            "iid": ref["image_id"],
            "mask_id": ref["ref_id"],
            "bbox": [0, 0, 1, 1],
            "cat_id": 0,
            "refs": [s["sent"] for s in ref["sentences"]],
        }
        for ref in index.refs_in_split("train")
        if ref["image_id"] in labelled
    ]
    path = tmp_path / "refcoco_10%_image.json"
    path.write_text(json.dumps({"train": entries, "val": []}))
    split = read_semires_split(path, train_ids)
    assert split.labelled == tuple(sorted(labelled)) and split.percent == 10.0
    assert set(split.unlabelled) == set(train_ids) - set(labelled)
    ds = ReferDataset(synthetic_root, split="train", image_ids=split.labelled, tokenizer=tokenizer)
    assert {ref["image_id"] for ref in ds.refs} == set(labelled)
    assert len(ds) == len(entries)
    with pytest.raises(DataLayoutError, match="not train images"):
        read_semires_split(path, train_ids[2:])


def test_gaussian_blur_of_an_impulse_is_the_normalised_kernel():
    from examples.semires_lavt.data.transforms import gaussian_blur

    image = torch.zeros(1, 21, 21)
    image[0, 10, 10] = 1.0
    sigma = 1.0
    out = gaussian_blur(image, sigma)
    d = np.arange(-3, 4)  # radius ceil(3 sigma) = 3
    g = np.exp(-0.5 * d**2 / sigma**2)
    g /= g.sum()
    np.testing.assert_allclose(out[0, 7:14, 7:14].numpy(), np.outer(g, g), atol=1e-6)
    assert out.sum().item() == pytest.approx(1.0)
