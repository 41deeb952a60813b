"""What every matching kernel takes and returns (private; see :mod:`samrefine.kernels`)."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

__all__ = ["KernelMode", "KernelResult", "Segments"]


class KernelMode(enum.IntEnum):
    """What a matching kernel computes (the numba kernels take ``int(mode)``).

    ``NONE`` never reaches a kernel: :func:`samrefine.refine` answers it without scoring.
    """

    NONE = -1
    IOM = 0  # arg-max IoU proposal above ``iom_thresh``
    CPI = 1  # union of proposals with s1 > under or s2 > over


class Segments(NamedTuple):
    """A batch's proposals as column segments: rows ``[y0, y1)`` of column ``x``.

    Numpy arrays (``x``, ``y0``, ``y1`` int32, the rest int64) for the numba kernels, int64
    tensors on one device for the torch kernels. ``G`` segments, ``M`` masks, ``B`` images.
    """

    x: Any  #: (G,) column of each segment
    y0: Any  #: (G,) first row
    y1: Any  #: (G,) one past the last row
    seg_offsets: Any  #: (M + 1,) segments of mask m are seg_offsets[m]:seg_offsets[m + 1]
    mask_offsets: Any  #: (B + 1,) masks of image b are mask_offsets[b]:mask_offsets[b + 1]
    area: Any  #: (M,) pixels per mask
    seg_mask: Any = None  #: (G,) flat mask of each segment (torch only; None on the host)
    mask_image: Any = None  #: (M,) image of each mask (torch only; None on the host)


class KernelResult(NamedTuple):
    """What both kernels return: numpy arrays (numba) or tensors on the input device (torch)."""

    inter: Any  #: (M,) int64, |P n S| in pixels
    iou: Any  #: (M,) float64
    s1: Any  #: (M,) float64, |P n S| / (|P| + eps)
    s2: Any  #: (M,) float64, |P n S| / |S|
    selected: Any  #: (M,) bool, proposals used
    chosen: Any  #: (B,) int64, IOM: index within the image's proposals, -1 none; CPI: -1
    matched: Any  #: (B,) bool
    masks: Any  #: (B, H, W) bool, refined labels (the pseudo-label where unmatched)
