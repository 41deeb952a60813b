"""Datasets of the semantic example: Pascal VOC 2012 and Cityscapes readers, from local paths.

Both read UniMatch-style split files, one sample a line, paths relative to the data root::

    JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png
    leftImg8bit/train/jena/jena_000078_000019_leftImg8bit.png gtFine/train/jena/<...>.png

(the Cityscapes label is ``jena_000078_000019_gtFine_labelTrainIds.png``). A line may also
hold only an image key (VOC's ``ImageSets/Segmentation/train.txt`` style,
``2007_000032``); the paths are then VOC's (``JPEGImages/<key>.jpg`` and
``<label_dir>/<key>.png``). Labels are index PNGs (palette ``P`` or grey ``L`` mode: VOC's
``SegmentationClass`` and ``SegmentationClassAug``, Cityscapes' ``*_labelTrainIds.png``), 255 =
ignore. Every sample has a string *key* (VOC: ``2007_000032``; Cityscapes:
``jena_000078_000019``), the key of its proposals in a :class:`samrefine.library.ProposalLibrary`
built by ``samrefine build``.

:class:`SegmentationDataset` resizes every image to one square ``size`` (PIL bilinear), its
label with PIL ``NEAREST`` and its proposals with ``Proposals.resize(size, mode="pil")``, the
same rule, so that labels and proposals stay aligned pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from samrefine.library import ProposalLibrary

__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE",
    "VOC_CLASSES",
    "Sample",
    "SegmentationDataset",
    "cityscapes_samples",
    "read_image",
    "read_label",
    "read_split_file",
    "voc_samples",
]

IGNORE = 255
VOC_CLASSES = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse "
    "motorbike person pottedplant sheep sofa train tvmonitor"
).split()
CITYSCAPES_CLASSES = (
    "road sidewalk building wall fence pole traffic_light traffic_sign vegetation terrain sky "
    "person rider car truck bus train motorcycle bicycle"
).split()
_CITY_IMAGE_SUFFIX = "_leftImg8bit.png"
_CITY_LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


@dataclass(frozen=True)
class Sample:
    """One image: its library key, image path and label path (absolute)."""

    key: str
    image: Path
    label: Path


def _missing_error(root: Path, missing: list[Path], what: str) -> FileNotFoundError:
    shown = "\n  ".join(str(p) for p in missing[:5])
    more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
    return FileNotFoundError(
        f"{len(missing)} {what} file(s) listed in the split are missing under {root}:\n  "
        f"{shown}{more}\ncheck --data-root and the split file (paths are relative to the root)"
    )


def read_split_file(
    path: str | Path, root: str | Path, *, label_dir: str = "SegmentationClass"
) -> list[Sample]:
    """Samples of a split file (module notes: two paths a line, or one VOC key a line).

    Parameters
    ----------
    path : str or Path
        The split file.
    root : str or Path
        Data root the paths are relative to.
    label_dir : str
        VOC label folder for key-only lines (``SegmentationClass`` or ``SegmentationClassAug``).

    Returns
    -------
    list of Sample
        In file order; keys are the image file names without extension (and, for Cityscapes,
        without ``_leftImg8bit``).

    Raises
    ------
    FileNotFoundError
        The root, the split file, or any listed image or label is missing (all are listed).
    ValueError
        A line with more than two fields, or one key listed twice.
    """
    root, path = Path(root), Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} is not a directory; pass --data-root")
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found; pass --labelled/--unlabelled/--val")
    samples: list[Sample] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1:
            key = fields[0]
            image, label = f"JPEGImages/{key}.jpg", f"{label_dir}/{key}.png"
        elif len(fields) == 2:
            image, label = fields
            key = Path(image).name
            key = key[: -len(_CITY_IMAGE_SUFFIX)] if key.endswith(_CITY_IMAGE_SUFFIX) else key
            key = key.rsplit(".", 1)[0]
        else:
            raise ValueError(
                f"{path}:{n}: expected 'image label' paths or one image key, got {line!r}"
            )
        samples.append(Sample(key, root / image, root / label))
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"{path}: image key {dup!r} is listed more than once")
    missing = [p for s in samples for p in (s.image, s.label) if not p.is_file()]
    if missing:
        raise _missing_error(root, missing, "image/label")
    return samples


def voc_samples(
    root: str | Path, split_file: str | Path, *, label_dir: str = "SegmentationClass"
) -> list[Sample]:
    """Pascal VOC 2012 samples (``root`` = ``VOCdevkit/VOC2012`` or UniMatch's data root).

    ``split_file`` is UniMatch's ``splits/pascal/<n>/labeled.txt`` / ``unlabeled.txt`` /
    ``val.txt``, or a VOC ``ImageSets/Segmentation`` list of keys (labels from ``label_dir``).
    """
    return read_split_file(split_file, root, label_dir=label_dir)


def cityscapes_samples(
    root: str | Path, split_file: str | Path | None = None, *, split: str = "train"
) -> list[Sample]:
    """Cityscapes samples: from a UniMatch split file, or every image of ``split``.

    Without ``split_file``, every ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with its
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (made by cityscapesScripts'
    ``createTrainIdLabelImgs``: 19 classes, 255 ignore), sorted by key.
    """
    root = Path(root)
    if split_file is not None:
        return read_split_file(split_file, root)
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found; is {root} a Cityscapes root?")
    samples = []
    for image in sorted(folder.glob(f"*/*{_CITY_IMAGE_SUFFIX}")):
        key = image.name[: -len(_CITY_IMAGE_SUFFIX)]
        label = root / "gtFine" / split / image.parent.name / f"{key}{_CITY_LABEL_SUFFIX}"
        samples.append(Sample(key, image, label))
    if not samples:
        raise FileNotFoundError(f"no *{_CITY_IMAGE_SUFFIX} images under {folder}")
    missing = [s.label for s in samples if not s.label.is_file()]
    if missing:
        raise _missing_error(
            root, missing, "label (run cityscapesScripts' createTrainIdLabelImgs first)"
        )
    return samples


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_label(path: str | Path, num_classes: int) -> np.ndarray:
    """(H, W) uint8 class map of an index PNG; values ``0..num_classes-1`` or 255 (ignore).

    Raises
    ------
    ValueError
        A colour (RGB) label, or a value that is neither a class nor 255.
    """
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(
                f"label {path} is a {im.mode!r} image; expected an index PNG (mode 'P' or "
                "'L': VOC SegmentationClass / SegmentationClassAug, Cityscapes labelTrainIds)"
            )
        label = np.array(im)  # indices, not palette colours
    bad = (label >= num_classes) & (label != IGNORE)
    if bad.any():
        raise ValueError(
            f"label {path} holds value(s) {sorted(set(np.unique(label[bad]).tolist()))} outside "
            f"0..{num_classes - 1} and 255 (ignore); wrong --num-classes, or Cityscapes labelIds "
            "instead of labelTrainIds?"
        )
    return label


class SegmentationDataset(torch.utils.data.Dataset):
    """Samples resized to ``size x size``, with their proposals (module notes).

    Parameters
    ----------
    samples : sequence of Sample
    size : int
        Side of the square the images, labels and proposals are resized to.
    num_classes : int
    library : ProposalLibrary, optional
        Proposals by sample key; without it, items have no ``"proposals"``.

    Items are dicts: ``image`` (3, S, S) float32 in [0, 1], ``label`` (S, S) int64,
    ``key`` str and, with a library, ``proposals`` (:class:`samrefine.Proposals` at (S, S)).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: int,
        num_classes: int,
        library: ProposalLibrary | None = None,
    ):
        self.samples = list(samples)
        self.size = int(size)
        self.num_classes = num_classes
        self.library = library
        if library is not None:
            absent = [s.key for s in self.samples if s.key not in library]
            if absent:
                raise KeyError(
                    f"{len(absent)} image(s) have no proposals in {library.path}, e.g. "
                    f"{absent[:3]}; build them with `samrefine build`"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        wh = (self.size, self.size)
        with Image.open(s.image) as im:
            image = np.asarray(im.convert("RGB").resize(wh, Image.BILINEAR))
        label = read_label(s.label, self.num_classes)
        label = np.asarray(Image.fromarray(label).resize(wh, Image.NEAREST))
        item = {
            "key": s.key,
            "image": torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0,
            "label": torch.from_numpy(label.astype(np.int64)),
        }
        if self.library is not None:
            item["proposals"] = self.library[s.key].resize(wh, mode="pil")
        return item
