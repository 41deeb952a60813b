"""Labelled / unlabelled split of a training set, by image.

SemiRES labels a share of the training **images**: every referent (all its sentences) of a drawn
image is labelled, every referent of the other images unlabelled. :func:`make_split` draws
``floor(percent / 100 * n_images)`` images with ``random.Random(seed).sample`` from the train image
ids in order of first appearance, which reproduces SemiRES' ``split_dataset_select.py``
(``random.seed(0); random.sample(ids, k)``) for seed 0, and works for any percentage.

Split file (plain text, one image per line, written by :func:`write_split`)::

    # samrefine image split v1
    # dataset=refcoco percent=1.0 seed=0 n_images=16994 n_labelled=169
    labelled 581857
    ...
    unlabelled 131074

:func:`read_semires_split` reads SemiRES' own ``<ds>_<P>%_image.json`` files
(``{split: [{"iid", "mask_id", ...}, ...]}``; the ``train`` entries are the labelled referents).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .refer import DataFileNotFoundError, DataLayoutError

__all__ = ["ImageSplit", "make_split", "read_semires_split", "read_split", "write_split"]

_HEADER = "# samrefine image split v1"


@dataclass(frozen=True)
class ImageSplit:
    """Image ids of the labelled and unlabelled parts of a training set.

    Attributes
    ----------
    labelled, unlabelled : tuple of int
        Disjoint, sorted image ids.
    percent : float
        Requested labelled share of images, in percent.
    seed : int or None
        Seed of the draw (None for splits read from SemiRES files).
    dataset : str
    """

    labelled: tuple[int, ...]
    unlabelled: tuple[int, ...]
    percent: float
    seed: int | None = None
    dataset: str = ""


def make_split(
    image_ids: Sequence[int], percent: float, seed: int = 0, *, dataset: str = ""
) -> ImageSplit:
    """Draw the labelled images.

    Parameters
    ----------
    image_ids : sequence of int
        Train image ids, in order of first appearance (``ReferIndex.train_image_ids()``);
        duplicates are dropped keeping the first.
    percent : float
        Labelled share in percent, in (0, 100] (e.g. 0.1, 0.5, 1, 2, 5, 10).
    seed : int
        Seed of ``random.Random``.
    dataset : str
        Recorded in the split.

    Returns
    -------
    ImageSplit
        ``floor(percent / 100 * n)`` labelled images, the rest unlabelled.
    """
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not 0.0 < percent <= 100.0:
        raise ValueError(f"percent={percent} must lie in (0, 100]")
    n_labelled = math.floor(percent * len(ids) / 100.0 + 1e-9)
    if n_labelled == 0:
        raise ValueError(
            f"{percent}% of {len(ids)} images rounds down to 0 labelled images; use a larger "
            f"percent (at least {100.0 / max(len(ids), 1):.3g}) or more images"
        )
    labelled = set(random.Random(seed).sample(ids, n_labelled))
    return ImageSplit(
        labelled=tuple(sorted(labelled)),
        unlabelled=tuple(sorted(i for i in ids if i not in labelled)),
        percent=float(percent),
        seed=seed,
        dataset=dataset,
    )


def write_split(split: ImageSplit, path: str | Path) -> Path:
    """Write a split file (see module docstring); parent folders are created.

    Parameters
    ----------
    split : ImageSplit
    path : str or Path
        Output file, e.g. ``splits/refcoco_1%_seed0.txt``.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        _HEADER,
        (
            f"# dataset={split.dataset or '-'} percent={split.percent} seed={split.seed} "
            f"n_images={len(split.labelled) + len(split.unlabelled)} "
            f"n_labelled={len(split.labelled)}"
        ),
    ]
    lines += [f"labelled {i}" for i in split.labelled]
    lines += [f"unlabelled {i}" for i in split.unlabelled]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_split(path: str | Path) -> ImageSplit:
    """Read a split file written by :func:`write_split`.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ImageSplit
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(
            f"split file {path} not found; write one with "
            "examples.semires_lavt.data.splits.write_split(make_split(...), path)"
        )
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != _HEADER:
        raise DataLayoutError(
            f"{path} does not start with '{_HEADER}'; for SemiRES' <ds>_<P>%_image.json files use "
            "read_semires_split"
        )
    meta: dict[str, str] = {}
    parts: dict[str, list[int]] = {"labelled": [], "unlabelled": []}
    for number, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            meta.update(item.split("=", 1) for item in line[1:].split() if "=" in item)
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in parts or not fields[1].lstrip("-").isdigit():
            raise DataLayoutError(
                f"{path}:{number}: expected 'labelled <image id>' or 'unlabelled <image id>', "
                f"got {line!r}"
            )
        parts[fields[0]].append(int(fields[1]))
    overlap = set(parts["labelled"]) & set(parts["unlabelled"])
    if overlap:
        raise DataLayoutError(f"{path}: images {sorted(overlap)[:5]} are both labelled and not")
    seed = meta.get("seed", "None")
    return ImageSplit(
        labelled=tuple(sorted(parts["labelled"])),
        unlabelled=tuple(sorted(parts["unlabelled"])),
        percent=float(meta.get("percent", "nan")),
        seed=None if seed == "None" else int(seed),
        dataset="" if meta.get("dataset", "-") == "-" else meta["dataset"],
    )


def read_semires_split(
    path: str | Path, train_image_ids: Sequence[int], *, percent: float | None = None
) -> ImageSplit:
    """Read a SemiRES ``<ds>_<P>%_image.json`` file as an image split.

    Parameters
    ----------
    path : str or Path
        e.g. ``anns/refcoco/refcoco_1%_image.json``; its ``train`` entries (``iid`` = image id)
        are the labelled referents.
    train_image_ids : sequence of int
        All train image ids of the dataset; those not labelled form the unlabelled part.
    percent : float, optional
        Recorded in the split; default parsed from the file name (``..._1%_image.json``).

    Returns
    -------
    ImageSplit
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(
            f"SemiRES split file {path} not found; these come from SemiRES' "
            "split_dataset_select.py (anns/<ds>/<ds>_<P>%_image.json)"
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataLayoutError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(content, dict) or not isinstance(content.get("train"), list):
        raise DataLayoutError(
            f"{path} has no 'train' list; expected SemiRES' {{split: [entries]}} format"
        )
    try:
        labelled = {int(entry["iid"]) for entry in content["train"]}
    except (KeyError, TypeError, ValueError) as err:
        raise DataLayoutError(f"{path}: train entries must carry an integer 'iid' ({err})") from err
    all_ids = {int(i) for i in train_image_ids}
    unknown = labelled - all_ids
    if unknown:
        raise DataLayoutError(
            f"{path} labels {len(unknown)} images that are not train images of the dataset "
            f"(e.g. {sorted(unknown)[:5]}); use the split file of the same dataset"
        )
    if percent is None:
        stem = path.name.split("_")
        tagged = [s for s in stem if s.endswith("%")]
        percent = float(tagged[-1][:-1]) if tagged else float("nan")
    return ImageSplit(
        labelled=tuple(sorted(labelled)),
        unlabelled=tuple(sorted(all_ids - labelled)),
        percent=percent,
        seed=None,
        dataset=path.name.split("_")[0],
    )
