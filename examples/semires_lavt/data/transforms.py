"""Geometric and photometric transforms that keep image, mask, proposals and sentence aligned.

A geometric transform takes and returns a :class:`Sample`: the PIL image, the GT mask (or None),
the sentence, and the list of geometry ops applied so far (``sample.geometry``: ``("crop", (x,
y, w, h))``, ``("hflip",)``, ``("resize", (H, W))``). Every pixel operation on the image has its
counterpart on the mask and is recorded; the SAM proposals are not touched here: samrefine's
``ProposalCollate`` replays the recorded ops on them with ``samrefine.follow_geometry``
(``Proposals.crop``, ``.hflip``, ``.resize``), so pseudo-labels computed on the transformed image
line up with the transformed proposals. A horizontal flip also swaps "left" and "right" in the
sentence.

Resampling: image bilinear (PIL, as LAVT); proposals nearest with torch's rule
(``samrefine.Proposals.resize`` = ``F.interpolate(mode="nearest")``, source index
``floor(i * in / out)``, as SemiRES). The GT mask is resized with torch's rule by default, so GT,
pseudo-labels and proposals share one pixel grid; ``Resize(mask_rule="pil")`` uses PIL's NEAREST
(source index ``floor((i + 0.5) * in / out)``) as LAVT does for its GT. The two rules disagree on
up to one source pixel along boundaries: 25 of 114 pixels of a small object at 128 px, so the
reference's mix of both misaligns proposals and GT.

Photometric augmentation (:class:`StrongAugment`) runs on the [0, 1] float tensor **before**
ImageNet normalisation. (The SemiRES reference jitters an already normalised tensor and normalises
twice; we do not reproduce that.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import ColorJitter

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "Sample",
    "StrongAugment",
    "gaussian_blur",
    "normalize",
    "resize_mask",
    "swap_left_right",
    "to_tensor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One referent while it is being transformed.

    Attributes
    ----------
    image : PIL.Image.Image
        RGB image.
    mask : np.ndarray or None
        (H, W) bool GT mask of the referent, same size as ``image``.
    sentence : str
        Referring expression.
    geometry : list of tuple
        The geometry ops applied to the image so far, in ``samrefine.follow_geometry``'s form.
    """

    image: Any
    mask: np.ndarray | None
    sentence: str
    geometry: list[tuple] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image in pixels."""
        return self.image.height, self.image.width


_LR = re.compile(r"\b(left|right)(most|wards)?\b", re.IGNORECASE)


def swap_left_right(sentence: str) -> str:
    """Swap left/right words (left, leftmost, leftwards and their right twins), keeping case.

    >>> swap_left_right("Leftmost cup, right of the plate")
    'Rightmost cup, left of the plate'
    """

    def swap(match: re.Match) -> str:
        word = match.group(1)
        new = {"left": "right", "right": "left"}[word.lower()]
        if word[0].isupper():
            new = new.capitalize()
        if word.isupper():
            new = new.upper()
        return new + (match.group(2) or "")

    return _LR.sub(swap, sentence)


class Resize:
    """Resize to a fixed (H, W), aspect ratio not kept (LAVT: 480 x 480).

    Parameters
    ----------
    size : int or (int, int)
        Output (H, W) in pixels; an int means square.
    mask_rule : {"torch", "pil"}
        Nearest-neighbour rule for the GT mask (see module docstring). "pil" reproduces LAVT.
    """

    def __init__(self, size: int | tuple[int, int], mask_rule: str = "torch"):
        if mask_rule not in ("torch", "pil"):
            raise ValueError(f"mask_rule={mask_rule!r}; use 'torch' or 'pil'")
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mask_rule = mask_rule

    def __call__(self, sample: Sample) -> Sample:

        height, width = self.size
        if sample.size == (height, width):
            return sample
        sample.image = sample.image.resize((width, height), Image.BILINEAR)
        if sample.mask is not None:
            sample.mask = resize_mask(sample.mask, (height, width), self.mask_rule)
        sample.geometry.append(("resize", (height, width)))
        return sample


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``, swapping "left" and "right" in the sentence.

    Parameters
    ----------
    p : float
        Flip probability in [0, 1].
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability p={p} must lie in [0, 1]")
        self.p = p

    def __call__(self, sample: Sample) -> Sample:

        if torch.rand(()).item() >= self.p:
            return sample
        sample.image = sample.image.transpose(Image.FLIP_LEFT_RIGHT)
        if sample.mask is not None:
            sample.mask = np.ascontiguousarray(sample.mask[:, ::-1])
        sample.sentence = swap_left_right(sample.sentence)
        sample.geometry.append(("hflip",))
        return sample


class RandomCrop:
    """Crop a random box covering a share of the image, keeping the referent when known.

    The box has area share in ``scale`` of the image and the image's aspect ratio. When the GT
    mask is known and non-empty, the box is placed so that it contains the mask's bounding box
    whenever the box is large enough. Crops may remove other objects and so change what a
    relative expression ("the left cup") refers to; use small crops on such data.

    Parameters
    ----------
    scale : (float, float)
        Range of the kept area share, within (0, 1].
    p : float
        Probability of cropping at all.
    """

    def __init__(self, scale: tuple[float, float] = (0.7, 1.0), p: float = 0.5):
        low, high = scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop scale {scale} must satisfy 0 < low <= high <= 1")
        self.scale, self.p = (low, high), p

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand(()).item() >= self.p:
            return sample
        height, width = sample.size
        share = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(()).item()
        crop_h = max(1, round(height * share**0.5))
        crop_w = max(1, round(width * share**0.5))
        x_range, y_range = (0, width - crop_w), (0, height - crop_h)
        if sample.mask is not None and sample.mask.any():
            rows, cols = np.nonzero(sample.mask)
            # box [x, x + crop_w) must contain [cols.min(), cols.max()] when it can
            x_range = _clamp_range(cols.max() + 1 - crop_w, cols.min(), width - crop_w)
            y_range = _clamp_range(rows.max() + 1 - crop_h, rows.min(), height - crop_h)
        x = int(torch.randint(x_range[0], x_range[1] + 1, ()).item())
        y = int(torch.randint(y_range[0], y_range[1] + 1, ()).item())
        sample.image = sample.image.crop((x, y, x + crop_w, y + crop_h))
        if sample.mask is not None:
            sample.mask = np.ascontiguousarray(sample.mask[y : y + crop_h, x : x + crop_w])
        sample.geometry.append(("crop", (x, y, crop_w, crop_h)))
        return sample


def resize_mask(mask: np.ndarray, size: tuple[int, int], rule: str = "torch") -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) bool mask to ``size = (H, W)``; returns bool.

    ``rule="torch"`` equals ``F.interpolate(mode="nearest")`` (and ``Proposals.resize``);
    ``rule="pil"`` equals PIL's ``Image.NEAREST``.
    """

    height, width = size
    if rule == "pil":
        image = Image.fromarray(mask.astype(np.uint8))
        return np.asarray(image.resize((width, height), Image.NEAREST)).astype(bool)
    # torch's rule in float32: src = min(floor(dst * float32(in / out)), in - 1)
    rows = np.floor(np.arange(height, dtype=np.float32) * np.float32(mask.shape[0] / height))
    cols = np.floor(np.arange(width, dtype=np.float32) * np.float32(mask.shape[1] / width))
    rows = rows.astype(np.int64).clip(max=mask.shape[0] - 1)
    cols = cols.astype(np.int64).clip(max=mask.shape[1] - 1)
    return np.ascontiguousarray(mask[rows[:, None], cols[None, :]])


def _clamp_range(low: int, high: int, limit: int) -> tuple[int, int]:
    """Intersect [low, high] with [0, limit]; fall back to [0, limit] if empty or inverted."""
    low, high = max(0, int(low)), min(limit, int(high))
    return (low, high) if low <= high else (0, limit)


class StrongAugment:
    """Colour jitter and Gaussian blur on a [0, 1] image tensor (SemiRES strong view).

    Parameters
    ----------
    jitter_p : float
        Probability of colour jitter.
    brightness, contrast, saturation : float
        Jitter factors drawn from [1 - v, 1 + v] (SemiRES: 0.25).
    hue : float
        Hue shift drawn from [-hue, hue], at most 0.5 (SemiRES: 0.25).
    blur_p : float
        Probability of a Gaussian blur.
    blur_sigma : (float, float)
        Blur standard deviation range in pixels (:func:`gaussian_blur`).
    """

    def __init__(
        self,
        jitter_p: float = 0.5,
        brightness: float = 0.25,
        contrast: float = 0.25,
        saturation: float = 0.25,
        hue: float = 0.25,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 1.5),
    ):

        self.jitter = ColorJitter(brightness, contrast, saturation, hue)
        self.jitter_p, self.blur_p, self.blur_sigma = jitter_p, blur_p, blur_sigma

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Augment a (3, H, W) float tensor in [0, 1]; returns the same shape, in [0, 1]."""
        if torch.rand(()).item() < self.jitter_p:
            image = self.jitter(image)
        if torch.rand(()).item() < self.blur_p:
            low, high = self.blur_sigma
            image = gaussian_blur(image, low + (high - low) * torch.rand(()).item())
        return image.clamp_(0.0, 1.0)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (C, H, W) float tensor, reflect padding.

    Parameters
    ----------
    image : torch.Tensor
        (C, H, W) float.
    sigma : float
        Standard deviation in pixels (> 0); kernel size 2 * ceil(3 sigma) + 1, at most
        ``2 * min(H, W) - 1`` (reflect padding limit).

    Returns
    -------
    torch.Tensor
        (C, H, W) float, same dtype.
    """
    channels, height, width = image.shape
    radius = min(int(np.ceil(3 * sigma)), height - 1, width - 1)
    if radius < 1:
        return image
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = image.unsqueeze(0)  # (1, C, H, W)
    x = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(
        x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels
    )
    x = torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(
        x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels
    )
    return x[0]


def to_tensor(image) -> torch.Tensor:
    """PIL RGB image -> (3, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of a (3, H, W) float32 tensor in [0, 1]."""
    return (image - _MEAN) / _STD
