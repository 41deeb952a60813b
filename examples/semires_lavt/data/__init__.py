"""Referring-segmentation data in the refer layout: loader, splits, transforms, synthetic set.

Public names: :class:`ReferDataset`, :func:`collate`, :func:`load_refer`,
:func:`decode_polygons`, :func:`make_split`, :func:`write_split`, :func:`read_split`,
:func:`read_semires_split`, :func:`write_synthetic_refcoco` and the transforms.
"""

from .refer import (
    DataFileNotFoundError,
    DataLayoutError,
    ProposalNotFoundError,
    ReferDataset,
    collate,
    decode_polygons,
    image_path,
    load_refer,
)
from .splits import ImageSplit, make_split, read_semires_split, read_split, write_split
from .synthetic import write_synthetic_refcoco
from .transforms import (
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    Sample,
    StrongAugment,
    swap_left_right,
)

__all__ = [
    "DataFileNotFoundError",
    "DataLayoutError",
    "ImageSplit",
    "ProposalNotFoundError",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ReferDataset",
    "Resize",
    "Sample",
    "StrongAugment",
    "collate",
    "decode_polygons",
    "image_path",
    "load_refer",
    "make_split",
    "read_semires_split",
    "read_split",
    "swap_left_right",
    "write_split",
    "write_synthetic_refcoco",
]
