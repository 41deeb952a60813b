"""RefCOCO / RefCOCO+ / G-Ref reader in the refer layout, as a torch ``Dataset``.

Layout under the data root (all three datasets use COCO train2014 images)::

    images/mscoco/images/train2014/COCO_train2014_%012d.jpg
    refcoco/instances.json      refcoco/refs(unc).p       splits train, val, testA, testB
    refcoco+/instances.json     refcoco+/refs(unc).p      splits train, val, testA, testB
    refcocog/instances.json     refcocog/refs(umd).p      splits train, val, test

``refs(<split_by>).p`` is a pickled list of refs (``ref_id, ann_id, image_id, category_id,
split, sentences[{raw, sent, tokens, sent_id}], sent_ids``); ``instances.json`` is COCO style
(``images``: id, file_name, height, width; ``annotations``: id, polygon ``segmentation``, bbox).
The synthetic dataset (:mod:`.synthetic`) is written in exactly this layout and read by the same
code.

A sample is one referent with one sentence: in ``sentences="random"`` mode (training) one sentence
drawn at each access, ``len`` = number of refs; in ``"all"`` mode (evaluation) every (referent,
sentence) pair, ``len`` = number of sentences. The raw sentence is used (as LAVT).

Errors: :class:`DataFileNotFoundError` (a ``FileNotFoundError``) for missing files,
:class:`DataLayoutError` (a ``ValueError``) for files of the wrong form,
:class:`ProposalNotFoundError` (a ``ValueError``) for an image id missing from the proposal
source. Each names the file or id and the fix.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

import samrefine
from samrefine.library import LibraryError
from samrefine.library.refs import read_refs_pickle

from ..lavt.text import build_tokenizer, tokenize
from .transforms import Resize, Sample, StrongAugment, normalize, to_tensor

__all__ = [
    "DEFAULT_SPLIT_BY",
    "SPLITS",
    "DataFileNotFoundError",
    "DataLayoutError",
    "ProposalNotFoundError",
    "ReferDataset",
    "ReferIndex",
    "collate",
    "decode_polygons",
    "image_path",
    "load_refer",
]

#: splitBy of each dataset as used by LAVT and SemiRES.
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
#: Valid evaluation/training splits per splitBy.
SPLITS = {
    "unc": ("train", "val", "testA", "testB"),
    "umd": ("train", "val", "test"),
    "google": ("train", "val"),
}
IMAGE_DIR = Path("images") / "mscoco" / "images" / "train2014"
_SYNTHETIC_HINT = (
    "to get a small dataset in this layout, run "
    "`python -m examples.semires_lavt.data.synthetic --out <root>`"
)


class DataFileNotFoundError(FileNotFoundError):
    """A file of the refer layout (or a split file) is missing."""


class DataLayoutError(ValueError):
    """A data file exists but does not have the expected form."""


class ProposalNotFoundError(ValueError):
    """An image id of the dataset is absent from the proposal source."""


def image_path(root: str | Path, image_id: int) -> Path:
    """Path of a COCO train2014 image under the data root."""
    return Path(root) / IMAGE_DIR / f"COCO_train2014_{int(image_id):012d}.jpg"


def decode_polygons(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO segmentation to a referent mask, **union** of its parts.

    The reference (LAVT-RIS refer.py / dataset_refer_bert.py) sums the decoded polygon parts and
    keeps pixels equal to 1, so where two parts overlap the pixel becomes background. That is a
    defect; here a pixel is foreground if any part covers it.

    Parameters
    ----------
    segmentation : list of list of float, or dict
        COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels, or an RLE dict (compressed or
        uncompressed).
    height, width : int
        Image size in pixels.

    Returns
    -------
    np.ndarray
        (H, W) bool.
    """

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.decode(rles).any(axis=2)
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        return mask_utils.decode(rle).astype(bool)
    raise DataLayoutError(
        f"segmentation of type {type(segmentation).__name__} is neither COCO polygons (list) nor "
        "an RLE dict; check that instances.json is a COCO instances file"
    )


class ReferIndex:
    """Refs, annotations and images of one dataset/splitBy, loaded once.

    Attributes
    ----------
    root : Path
    dataset, split_by : str
    refs : list of dict
        As in ``refs(<split_by>).p``.
    annotations : dict
        ann id -> COCO annotation.
    images : dict
        image id -> COCO image record.
    """

    def __init__(self, root: Path, dataset: str, split_by: str, refs: list, instances: dict):
        self.root, self.dataset, self.split_by = root, dataset, split_by
        self.refs = refs
        self.annotations = {a["id"]: a for a in instances["annotations"]}
        self.images = {im["id"]: im for im in instances["images"]}

    def refs_in_split(self, split: str) -> list[dict]:
        """Refs of a split, in file order (refer.py semantics: exact split name)."""
        return [ref for ref in self.refs if ref["split"] == split]

    def train_image_ids(self) -> list[int]:
        """Image ids of the train split in order of first appearance (SemiRES convention)."""
        return list(dict.fromkeys(ref["image_id"] for ref in self.refs_in_split("train")))


_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


@functools.lru_cache(maxsize=8)
def _load_index_cached(root: str, dataset: str, split_by: str) -> ReferIndex:
    base = Path(root)
    if not base.is_dir():
        raise DataFileNotFoundError(
            f"data root {base} does not exist; pass the folder that holds 'images/' and "
            f"'{dataset}/' ({_SYNTHETIC_HINT})"
        )
    folder = base / dataset
    refs_path = folder / f"refs({split_by}).p"
    instances_path = folder / "instances.json"
    if not refs_path.is_file():
        found = sorted(p.name for p in folder.glob("refs(*).p")) if folder.is_dir() else []
        hint = f"found {found}: pass split_by accordingly" if found else _SYNTHETIC_HINT
        raise DataFileNotFoundError(f"{refs_path} not found; {hint}")
    if not instances_path.is_file():
        raise DataFileNotFoundError(
            f"{instances_path} not found; copy the refer package's instances.json for {dataset} "
            f"next to {refs_path.name}"
        )
    try:  # data only: a refs file from the internet cannot run code here
        refs = read_refs_pickle(refs_path)
    except LibraryError as err:  # UnsafePickleError included
        raise DataLayoutError(
            f"{refs_path} is not a readable refs pickle ({err}); re-download the refer annotations"
        ) from err
    if not isinstance(refs, list) or (refs and not isinstance(refs[0], dict)):
        raise DataLayoutError(f"{refs_path} must hold a list of ref dicts, got {type(refs)}")
    for ref in refs[:1]:
        missing = [k for k in _REF_KEYS if k not in ref]
        if missing:
            raise DataLayoutError(
                f"refs in {refs_path} lack the keys {missing}; expected the refer format "
                f"with {list(_REF_KEYS)}"
            )
    try:
        with open(instances_path) as f:
            instances = json.load(f)
    except json.JSONDecodeError as err:
        raise DataLayoutError(f"{instances_path} is not valid JSON ({err})") from err
    missing = [k for k in ("images", "annotations") if k not in instances]
    if missing:
        raise DataLayoutError(
            f"{instances_path} lacks {missing}; expected a COCO instances file with "
            "'images' and 'annotations'"
        )
    if not (base / IMAGE_DIR).is_dir():
        raise DataFileNotFoundError(
            f"image folder {base / IMAGE_DIR} not found; put the COCO train2014 images there "
            "(COCO_train2014_%012d.jpg)"
        )
    return ReferIndex(base, dataset, split_by, refs, instances)


def load_refer(
    root: str | Path, dataset: str = "refcoco", split_by: str | None = None
) -> ReferIndex:
    """Read (and cache) the refs and instances of one dataset.

    Parameters
    ----------
    root : str or Path
        Data root (see module docstring).
    dataset : str
        ``refcoco``, ``refcoco+`` or ``refcocog`` (any folder name works).
    split_by : str, optional
        ``unc``, ``umd`` or ``google``; default from :data:`DEFAULT_SPLIT_BY` (``unc``).

    Returns
    -------
    ReferIndex
    """
    split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
    return _load_index_cached(str(Path(root).resolve()), dataset, split_by)


class ReferDataset(Dataset):
    """Referring-segmentation samples of one split.

    Parameters
    ----------
    root : str or Path
        Data root.
    dataset : str
        Dataset folder (``refcoco``, ``refcoco+``, ``refcocog``).
    split : str
        ``train``, ``val``, ``testA``, ``testB`` (unc) or ``train``, ``val``, ``test`` (umd).
    split_by : str, optional
        Default ``unc`` (``umd`` for refcocog).
    image_size : int
        Model input size in pixels (square); the last geometric transform must produce it.
    tokenizer : transformers tokenizer, optional
        Default: :func:`..lavt.text.build_tokenizer` (bert-base-uncased vocabulary).
    max_tokens : int
        Token sequence length (LAVT: 20), [SEP] kept.
    sentences : {"random", "all"}
        One random sentence per referent per access, or every sentence as its own sample.
    image_ids : iterable of int, optional
        Keep only referents of these images (labelled or unlabelled part of a split).
    proposals : mapping, optional
        Proposal source: ``source[image_id] -> samrefine.Proposals`` at original size and
        ``image_id in source``. None: samples carry no ``"proposals"``.
    with_mask : bool
        Return the GT ``"mask"`` (set False for unlabelled data).
    with_orig_mask : bool
        Also return ``"mask_orig"``, the GT at original resolution and **before** any transform
        (for evaluation, where the only transform is the resize).
    transforms : sequence of callables, optional
        Geometric transforms on :class:`.transforms.Sample`; default ``[Resize(image_size)]``.
    views : sequence of str, optional
        None: one ``"image"``. Otherwise names among ``"weak"`` and ``"strong"``, returned as
        ``"image_weak"``, ``"image_strong"``: the same geometry, the strong one with
        ``strong_augment`` applied to the [0, 1] image before normalisation.
    strong_augment : callable, optional
        Photometric augmentation of the strong view (default :class:`.transforms.StrongAugment`).
    check_proposals : bool
        Check at construction that every image id is in the proposal source.

    Notes
    -----
    ``__getitem__`` returns a dict:

    ========================  ===========================================================
    ``image``                 (3, S, S) float32, ImageNet-normalised (or ``image_weak`` /
                              ``image_strong`` with ``views``)
    ``mask``                  (S, S) int64 in {0, 1}, GT at model size (if ``with_mask``)
    ``mask_orig``             (h, w) uint8 GT at original size (if ``with_orig_mask``)
    ``input_ids``             (N,) int64
    ``attention_mask``        (N,) int64
    ``image_id``, ``ref_id``, ``sent_id``, ``index``   int (``index``: position in the dataset)
    ``orig_size``             (h, w) original image size in pixels
    ``area``                  int, GT pixel count at original size (for size buckets; only
                              with ``with_mask`` or ``with_orig_mask``)
    ``sentence``              str after transforms (flip swaps left/right)
    ``proposals``             ``samrefine.Proposals`` at original size (with a source)
    ``geometry``              the geometry ops applied to the image, which :func:`collate`
                              replays on ``proposals`` (``samrefine.follow_geometry``)
    ========================  ===========================================================
    """

    def __init__(
        self,
        root: str | Path,
        dataset: str = "refcoco",
        split: str = "train",
        *,
        split_by: str | None = None,
        image_size: int = 480,
        tokenizer: Any = None,
        max_tokens: int = 20,
        sentences: str = "random",
        image_ids: Iterable[int] | None = None,
        proposals: Mapping | None = None,
        with_mask: bool = True,
        with_orig_mask: bool = False,
        transforms: Sequence | None = None,
        views: Sequence[str] | None = None,
        strong_augment: Any = None,
        check_proposals: bool = True,
    ):

        self.index = load_refer(root, dataset, split_by)
        self.root = self.index.root
        valid = SPLITS.get(self.index.split_by, ())
        refs = self.index.refs_in_split(split)
        if not refs:
            present = sorted({ref["split"] for ref in self.index.refs})
            raise ValueError(
                f"split {split!r} has no referents in {dataset} ({self.index.split_by}); "
                f"splits present: {present} (expected {list(valid)})"
            )
        if image_ids is not None:
            keep = {int(i) for i in image_ids}
            refs = [ref for ref in refs if ref["image_id"] in keep]
            if not refs:
                raise ValueError(
                    f"none of the {len(keep)} given image ids has a referent in split {split!r}; "
                    "check that the split file belongs to this dataset"
                )
        if sentences not in ("random", "all"):
            raise ValueError(f"sentences={sentences!r}; use 'random' (training) or 'all' (eval)")
        if views is not None:
            unknown = [v for v in views if v not in ("weak", "strong")]
            if unknown or not views:
                raise ValueError(f"views={views!r}; use names among ('weak', 'strong')")
        self.refs = refs
        self.split = split
        self.image_size = image_size
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
        self.max_tokens = max_tokens
        self.sentences = sentences
        self.samples = (
            [(r, s) for r, ref in enumerate(refs) for s in range(len(ref["sentences"]))]
            if sentences == "all"
            else [(r, None) for r in range(len(refs))]
        )
        self.proposals = proposals
        self.with_mask, self.with_orig_mask = with_mask, with_orig_mask
        self.transforms = list(transforms) if transforms is not None else [Resize(image_size)]
        self.views = tuple(views) if views is not None else None
        if strong_augment is None and self.views is not None and "strong" in self.views:
            strong_augment = StrongAugment()  # imports torchvision: only when needed
        self.strong_augment = strong_augment
        if proposals is not None and check_proposals:
            for image_id in self.image_ids:
                self._check_in_source(image_id)

    @property
    def image_ids(self) -> list[int]:
        """Distinct image ids of the kept referents, in order of first appearance."""
        return list(dict.fromkeys(ref["image_id"] for ref in self.refs))

    def __len__(self) -> int:
        return len(self.samples)

    def _check_in_source(self, image_id: int) -> None:
        if image_id not in self.proposals:
            raise ProposalNotFoundError(
                f"image id {image_id} ({image_path(self.root, image_id).name}, split "
                f"{self.split!r}) is not in the proposal source {type(self.proposals).__name__}; "
                "build proposals for every image of the split (samrefine build ...) or pass "
                "proposals=None"
            )

    def _load(self, ref: dict) -> tuple[Any, np.ndarray | None, dict]:

        image_id = ref["image_id"]
        path = image_path(self.root, image_id)
        if not path.is_file():
            raise DataFileNotFoundError(
                f"{path} not found (image of ref {ref['ref_id']}); the refer layout expects "
                "COCO train2014 images under images/mscoco/images/train2014/"
            )
        record = self.index.images.get(image_id)
        annotation = self.index.annotations.get(ref["ann_id"])
        if record is None or annotation is None:
            raise DataLayoutError(
                f"ref {ref['ref_id']} points at image {image_id} / annotation {ref['ann_id']} "
                f"absent from {self.index.root / self.index.dataset / 'instances.json'}; "
                "refs and instances.json must come from the same dataset"
            )
        with Image.open(path) as handle:
            image = handle.convert("RGB")
        if (image.height, image.width) != (record["height"], record["width"]):
            raise DataLayoutError(
                f"{path} is {image.height}x{image.width} but instances.json says "
                f"{record['height']}x{record['width']}; images and annotations do not match"
            )
        mask = None
        if self.with_mask or self.with_orig_mask:
            mask = decode_polygons(annotation["segmentation"], image.height, image.width)
        return image, mask, record

    def __getitem__(self, index: int) -> dict:
        ref_index, sentence_index = self.samples[index]
        ref = self.refs[ref_index]
        if sentence_index is None:
            sentence_index = int(torch.randint(len(ref["sentences"]), ()).item())
        sentence = ref["sentences"][sentence_index]
        image, mask, _ = self._load(ref)
        orig_size = (image.height, image.width)
        proposals = None
        if self.proposals is not None:
            self._check_in_source(ref["image_id"])
            proposals = self.proposals[ref["image_id"]]
            if tuple(proposals.size) != orig_size:
                raise DataLayoutError(
                    f"proposals of image {ref['image_id']} have size {tuple(proposals.size)} but "
                    f"the image is {orig_size}; the proposal library was built from other images"
                )
        # Unlabelled samples never see their GT (it would steer RandomCrop).
        sample = Sample(image, mask if self.with_mask else None, sentence["raw"])
        for transform in self.transforms:
            sample = transform(sample)
        if sample.size != (self.image_size, self.image_size):
            raise ValueError(
                f"transforms produced a {sample.size} image, expected {self.image_size}; "
                "end the transform list with Resize(image_size)"
            )

        input_ids, attention_mask = tokenize(self.tokenizer, sample.sentence, self.max_tokens)
        out: dict[str, Any] = {}
        pixels = to_tensor(sample.image)
        if self.views is None:
            out["image"] = normalize(pixels)
        else:
            for view in self.views:
                data = self.strong_augment(pixels.clone()) if view == "strong" else pixels
                out[f"image_{view}"] = normalize(data)
        if self.with_mask:
            out["mask"] = torch.from_numpy(sample.mask.astype(np.int64))
        if self.with_orig_mask:
            out["mask_orig"] = torch.from_numpy(mask.astype(np.uint8))
        out.update(
            input_ids=input_ids,
            attention_mask=attention_mask,
            image_id=int(ref["image_id"]),
            ref_id=int(ref["ref_id"]),
            sent_id=int(sentence["sent_id"]),
            index=int(index),
            orig_size=orig_size,
            sentence=sample.sentence,
        )
        if mask is not None:
            out["area"] = int(mask.sum())
        if proposals is not None:  # at original size: `collate` replays the geometry on them
            out["proposals"] = proposals
            out["geometry"] = sample.geometry
        return out


_LIST_KEYS = ("mask_orig", "sentence")


def _collate_fields(samples: list[dict]) -> dict:
    """Stack tensors, turn ints into (B,) int64 tensors, keep ``_LIST_KEYS`` as lists."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in _LIST_KEYS:
            batch[key] = values
        elif torch.is_tensor(values[0]):
            batch[key] = torch.stack(values)
        else:
            batch[key] = torch.tensor(values, dtype=torch.int64)
    return batch


#: samrefine's collate: replays each sample's ``geometry`` on its proposals
#: (``samrefine.follow_geometry``) and batches them into a ``ProposalBatch``.
_PROPOSAL_COLLATE = samrefine.ProposalCollate(collate=_collate_fields)


def collate(samples: list[dict]) -> dict:
    """Batch samples of :class:`ReferDataset`.

    Tensors are stacked (``image*`` (B, 3, S, S), ``mask`` (B, S, S), ``input_ids`` and
    ``attention_mask`` (B, N)); ints become (B,) int64 tensors; ``orig_size`` a (B, 2) int64
    tensor; ``mask_orig`` and ``sentence`` stay lists. ``proposals`` (original size) go through
    ``samrefine.ProposalCollate``, which applies each sample's ``geometry`` ops with
    ``samrefine.follow_geometry`` and returns a ``samrefine.ProposalBatch`` at (S, S);
    ``geometry`` stays a list of op lists.

    Parameters
    ----------
    samples : list of dict
        Outputs of ``ReferDataset.__getitem__``, all with the same keys.

    Returns
    -------
    dict
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    if "proposals" in samples[0]:
        return _PROPOSAL_COLLATE(samples)
    return _collate_fields(samples)
