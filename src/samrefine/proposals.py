"""Proposals: the class-agnostic masks of one image, held as COCO-convention runs.

A ``Proposals`` holds ``N`` masks of one ``H x W`` image as canonical foreground runs (see
:mod:`samrefine.rle`): flat ``starts``/``lengths`` (int32, column-major pixel indices) and
``offsets`` (int64, ``N + 1``), plus per-mask metadata (``area``, ``bbox`` and whatever the
generator gave: ``predicted_iou``, ``stability_score``, ``point_coords``, ``crop_box``).
Nothing here decodes a mask unless asked to (``to_dense``). A ``Proposals`` is immutable (its
runs and size are fixed; ``meta`` may change), so its column ``segments``, what matching and
geometry read, are split from the runs once, on first use, and kept.

Build from: pycocotools RLE dicts (compressed or list counts), dense ``(N, H, W)`` masks, or
the output of ``segment_anything``'s ``SamAutomaticMaskGenerator`` in any ``output_mode``.
Geometry on runs: ``resize`` (bit-exact torch ``nearest``), ``hflip``, ``crop``.

``ProposalBatch`` (in :mod:`samrefine.proposal_batch`, importable from here too) collates
several images' proposals of one size into flat arrays that move to a torch device in one call;
it is what the matching kernels read.

Example::

    props = Proposals.from_rle(rles)             # one image, at its original size
    props = props.resize((480, 480)).hflip()     # follow the image's augmentation
    batch = ProposalBatch([props, other]).to("cuda")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from . import rle as _rle
from ._common import to_numpy
from .rle import RLEError

if TYPE_CHECKING:
    from .proposal_batch import ProposalBatch

__all__ = ["ProposalBatch", "Proposals", "RLEError"]

#: Metadata keys read from SamAutomaticMaskGenerator records (besides segmentation/area/bbox).
SAM_META_KEYS = ("predicted_iou", "stability_score", "point_coords", "crop_box")


def _as_int(v: Any, what: str) -> int:
    """``v`` as a Python int; refuses non-integral floats, bools are accepted as given ints."""
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)  # TypeError / ValueError for non-numbers
    if not np.isfinite(f) or f != int(f):
        raise ValueError(f"{what} must be integers, got {v!r}")
    return int(f)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (_as_int(v, "size") for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got (H, W) = ({h}, {w})")
    if h * w >= 2**31:
        raise ValueError(f"masks of {h}x{w} pixels exceed the 2**31 pixel limit of int32 runs")
    return h, w


def _index_array(values, dtype, name: str) -> np.ndarray:
    """``values`` as a contiguous ``dtype`` array; refuses values the cast would change (int64
    run starts beyond the int32 range wrap around; float ones would be truncated)."""
    arr = np.asarray(values)
    if arr.dtype == dtype:
        return np.ascontiguousarray(arr)
    if arr.size and arr.dtype.kind not in "iub":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ValueError(
            f"{name} hold values in [{arr.min()}, {arr.max()}], outside the "
            f"{np.dtype(dtype).name} range [{info.min}, {info.max}]"
        )
    return np.ascontiguousarray(arr, dtype=dtype)


class Proposals:
    """Class-agnostic masks of one image as canonical COCO-convention runs.

    Parameters
    ----------
    starts, lengths : np.ndarray, shape (R,), int32
        Foreground runs of all masks, concatenated: column-major start index and length
        (pixels). Must be canonical (sorted, non-empty, non-touching within each mask).
    offsets : np.ndarray, shape (N + 1,), int64
        Runs of mask ``k`` are ``starts[offsets[k]:offsets[k + 1]]``.
    size : tuple of int
        ``(H, W)`` in pixels.
    meta : dict of str to np.ndarray, optional
        Per-mask metadata, each with first dimension ``N``.
    validate : bool
        Check the invariants (cheap, ``O(R)``). Constructors that produce canonical runs skip it.
    """

    __slots__ = ("_area", "_segments", "lengths", "meta", "offsets", "size", "starts")

    size: tuple[int, int]
    starts: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    meta: dict[str, np.ndarray]
    _segments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
    _area: np.ndarray | None

    #: Fields fixed at construction (what the cached segments and areas are computed from).
    _GEOMETRY = frozenset({"lengths", "offsets", "size", "starts"})

    def __init__(
        self,
        starts: ArrayLike,
        lengths: ArrayLike,
        offsets: ArrayLike,
        size: Sequence[int],
        meta: Mapping[str, ArrayLike] | None = None,
        *,
        validate: bool = True,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "size", _check_size(size))
        setattr_(self, "starts", _index_array(starts, np.int32, "run starts"))
        setattr_(self, "lengths", _index_array(lengths, np.int32, "run lengths"))
        setattr_(self, "offsets", _index_array(offsets, np.int64, "offsets"))
        setattr_(self, "_segments", None)
        setattr_(self, "_area", None)
        self.meta = {k: np.asarray(v) for k, v in (meta or {}).items()}
        if validate:
            self._validate()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickle (DataLoader workers, DDP) and copy: the runs, size and meta, not the caches
        return (
            _unpickle_proposals,
            (self.starts, self.lengths, self.offsets, self.size, self.meta),
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._GEOMETRY or name in ("_segments", "_area"):
            raise AttributeError(
                f"Proposals.{name} is fixed at construction (the proposals are "
                "immutable); build new ones, e.g. with resize/crop/hflip or "
                "Proposals(starts, lengths, offsets, size)"
            )
        object.__setattr__(self, name, value)

    def _validate(self) -> None:
        s, ln, off = self.starts, self.lengths, self.offsets
        h, w = self.size
        if s.ndim != 1 or ln.shape != s.shape:
            raise ValueError(
                f"starts and lengths must be 1-D of equal length, got {s.shape} and {ln.shape}"
            )
        if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != s.size:
            raise ValueError(
                f"offsets must be 1-D, start at 0 and end at the number of runs "
                f"({s.size}); got {off[:3]}...{off[-3:]}"
            )
        if np.any(np.diff(off) < 0):
            raise ValueError("offsets must be non-decreasing")
        if np.any(ln <= 0):
            raise RLEError("run lengths must be positive")
        if np.any(s < 0) or np.any(s.astype(np.int64) + ln > h * w):
            raise RLEError(f"runs fall outside the {h}x{w} image")
        if s.size > 1:
            gap = s[1:].astype(np.int64) - (s[:-1].astype(np.int64) + ln[:-1])
            first = np.zeros(s.size, bool)
            first[off[:-1][off[:-1] < s.size]] = True
            if np.any(gap[~first[1:]] <= 0):
                raise RLEError(
                    "runs of a mask must be sorted and separated by background (canonical form)"
                )
        for k, v in self.meta.items():
            if v.shape[:1] != (len(self),):
                raise ValueError(
                    f"meta[{k!r}] has first dimension {v.shape[:1]}, expected ({len(self)},)"
                )

    # ---------------------------------------------------------------- constructors

    @classmethod
    def empty(cls, size: Sequence[int]) -> Proposals:
        """No masks, for an image of ``size = (H, W)``."""
        return cls(
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            np.zeros(1, np.int64),
            size,
            validate=False,
        )

    @classmethod
    def from_dense(
        cls,
        masks: Any,
        meta: Mapping[str, ArrayLike] | None = None,
        *,
        threshold: float | None = None,
    ) -> Proposals:
        """From dense masks ``(N, H, W)`` (bool or {0, 1}; numpy or torch; any memory order).

        Parameters
        ----------
        masks : array, shape (N, H, W)
            Bool, or numbers that are all 0 or 1. Soft masks (probabilities or logits) are
            refused unless ``threshold`` is given: reading ``0.7`` as background would silently
            empty them.
        meta : dict, optional
            Per-mask metadata, each with first dimension ``N``.
        threshold : float, optional
            Foreground is ``masks > threshold`` (strict), for soft masks.
        """
        masks = to_numpy(masks)
        if masks.ndim != 3:
            raise ValueError(
                f"dense masks must be (N, H, W), got shape {masks.shape}; "
                "for one mask use masks[None]"
            )
        if threshold is not None:
            if masks.dtype.kind == "f" and np.isnan(masks).any():
                raise ValueError("dense masks hold NaN")
            masks = masks > float(threshold)
        if masks.dtype != np.bool_:
            if masks.size and (masks.dtype.kind == "f" and np.isnan(masks).any()):
                raise ValueError("dense masks hold NaN")
            if masks.size and not np.all((masks == 0) | (masks == 1)):
                lo, hi = masks.min(), masks.max()
                raise ValueError(
                    f"dense masks must hold only 0 and 1 (or be bool); got values "
                    f"in [{lo}, {hi}]; for soft masks pass threshold= (e.g. 0.5 "
                    "for probabilities, 0.0 for logits)"
                )
            masks = masks.astype(np.uint8, copy=False)
        s, ln, off = _rle.encode_dense(masks)
        out = cls(s, ln, off, masks.shape[1:], meta, validate=False)
        out._check_meta()
        return out

    @classmethod
    def from_rle(
        cls,
        rles: Sequence[Mapping[str, Any]],
        size: Sequence[int] | None = None,
        meta: Mapping[str, ArrayLike] | None = None,
    ) -> Proposals:
        """From pycocotools RLE dicts ``{"size": [H, W], "counts": bytes | str | list}``.

        All masks must share one size. ``size`` is required when ``rles`` is empty. Counts are
        validated (non-negative, summing to ``H * W``); a bad RLE raises :class:`RLEError`
        naming its index.
        """
        rles = list(rles)
        if not rles:
            if size is None:
                raise ValueError("from_rle([]) needs size=(H, W) for an image with no masks")
            return cls.empty(size)
        sizes = set()
        all_s, all_l, off = [], [], [0]
        for i, r in enumerate(rles):
            if not isinstance(r, Mapping) or "counts" not in r or "size" not in r:
                raise RLEError(
                    f"RLE {i} must be a dict with 'size' and 'counts', got {type(r).__name__}"
                )
            h, w = _check_size(r["size"])
            sizes.add((h, w))
            c = r["counts"]
            try:
                counts = _rle.string_to_counts(c) if isinstance(c, (bytes, str)) else c
                s, ln = _rle.counts_to_runs(counts, h, w)
            except RLEError as e:
                raise RLEError(f"RLE {i}: {e}") from None
            all_s.append(s)
            all_l.append(ln)
            off.append(off[-1] + s.size)
        if len(sizes) != 1:
            raise ValueError(f"all masks of one image must share a size, got {sorted(sizes)}")
        if size is not None and _check_size(size) not in sizes:
            raise ValueError(f"size={tuple(size)} but the RLEs are {sizes.pop()}")
        out = cls(
            np.concatenate(all_s),
            np.concatenate(all_l),
            np.asarray(off, np.int64),
            sizes.pop(),
            meta,
            validate=False,
        )
        out._check_meta()
        return out

    @classmethod
    def from_sam(
        cls, records: Sequence[Mapping[str, Any]], size: Sequence[int] | None = None
    ) -> Proposals:
        """From ``SamAutomaticMaskGenerator.generate`` output, in any ``output_mode``.

        ``binary_mask`` records carry an ``(H, W)`` bool array, ``uncompressed_rle`` a dict with
        list counts, ``coco_rle`` a dict with string counts. ``predicted_iou``,
        ``stability_score``, ``point_coords`` and ``crop_box`` are kept in ``meta``.
        """
        records = list(records)
        if not records:
            if size is None:
                raise ValueError("from_sam([]) needs size=(H, W) for an image with no masks")
            return cls.empty(size)
        segs = [r["segmentation"] for r in records]
        if all(isinstance(s, Mapping) for s in segs):
            out = cls.from_rle(segs, size)
        elif not any(isinstance(s, Mapping) for s in segs):
            out = cls.from_dense(np.stack([to_numpy(s) for s in segs]))
            if size is not None and _check_size(size) != out.size:
                raise ValueError(f"size={tuple(size)} but the masks are {out.size}")
        else:
            raise ValueError("SAM records mix dense and RLE segmentations")
        meta = {}
        for key in SAM_META_KEYS:
            if all(key in r for r in records):
                vals = [np.asarray(r[key], dtype=np.float64) for r in records]
                if key == "point_coords":  # SAM gives [[x, y]] per mask
                    vals = [v.reshape(-1)[:2] for v in vals]
                meta[key] = np.stack(vals)
        out.meta = meta
        return out

    @classmethod
    def from_hf(cls, output, scores=None, size=None) -> Proposals:
        """From Hugging Face ``transformers`` SAM output, scores kept as ``predicted_iou``.

        Parameters
        ----------
        output : dict, array or tensor
            ``pipeline("mask-generation")(image)``: a dict with ``"masks"`` (a list of
            ``(H, W)`` bool masks; or ``"rle_mask"``, uncompressed COCO RLE dicts, when the
            pipeline ran with ``output_rle_mask=True``) and ``"scores"`` ``(N,)``. Or one
            image's ``SamProcessor.post_process_masks(...)[i]``: ``(P, 3, H, W)`` (three masks a
            prompt, flattened prompt-major to ``3 P`` masks) or ``(P, H, W)``, bool (or exact
            0/1; logits from ``binarize=False`` are refused: threshold them first).
        scores : array or tensor, optional
            Scores for array input: ``outputs.iou_scores[i]``, ``(P, 3)``, ``(1, P, 3)`` or
            ``(P,)``; one per mask after flattening.
        size : (H, W), optional
            Needed when there are no masks; checked against the masks otherwise.
        """
        if isinstance(output, Mapping):
            if "masks" not in output and "rle_mask" not in output:
                raise ValueError(
                    "a mask-generation pipeline output is a dict with 'masks' and "
                    f"'scores'; got keys {sorted(output)}"
                )
            if scores is None:
                scores = output.get("scores")
            masks = output.get("masks")
            if (masks is None or len(masks) == 0) and output.get("rle_mask"):
                out = cls.from_rle(output["rle_mask"], size)
            elif masks is None or len(masks) == 0:
                if size is None:
                    raise ValueError("the pipeline output holds no masks; pass size=(H, W)")
                out = cls.empty(size)
            else:
                out = cls.from_dense(np.stack([to_numpy(m) for m in masks]))
        else:
            arr = to_numpy(output)
            if isinstance(output, (list, tuple)) and arr.ndim == 5:
                raise ValueError(
                    "post_process_masks returns one (P, 3, H, W) tensor per image; "
                    "pass one image's masks, e.g. masks[0]"
                )
            if arr.ndim == 4:
                arr = arr.reshape(-1, *arr.shape[2:])
            if arr.ndim != 3:
                raise ValueError(
                    f"SamModel masks must be (P, 3, H, W) or (P, H, W), got shape {arr.shape}"
                )
            out = cls.from_dense(arr) if arr.shape[0] else cls.empty(arr.shape[1:])
        if size is not None and _check_size(size) != out.size:
            raise ValueError(f"size={tuple(size)} but the masks are {out.size}")
        if scores is not None:
            sc = to_numpy(scores).astype(np.float64).reshape(-1)
            if sc.size != len(out):
                raise ValueError(
                    f"{sc.size} scores for {len(out)} masks; pass the scores of "
                    "the same image (iou_scores[i])"
                )
            out.meta["predicted_iou"] = sc
        return out

    def _check_meta(self) -> None:
        for k, v in self.meta.items():
            if v.shape[:1] != (len(self),):
                raise ValueError(
                    f"meta[{k!r}] has first dimension {v.shape[:1]}, expected ({len(self)},)"
                )

    # ---------------------------------------------------------------- conversions

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __repr__(self) -> str:
        h, w = self.size
        return f"Proposals(n={len(self)}, size=({h}, {w}), runs={self.starts.size})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Proposals):
            return NotImplemented
        return (
            self.size == other.size
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.lengths, other.lengths)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-equality semantics: unhashable

    @property
    def area(self) -> np.ndarray:
        """Foreground pixels per mask, ``(N,)`` int64 (computed once; do not modify)."""
        area = self._area
        if area is None:
            cs = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
            area = cs[self.offsets[1:]] - cs[self.offsets[:-1]]
            object.__setattr__(self, "_area", area)
        return area

    @property
    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The runs split at column boundaries, what matching and geometry read.

        Returns
        -------
        x, y0, y1 : (G,) int32
            Rows ``[y0, y1)`` of column ``x``, mask after mask, sorted by column.
        offsets : (N + 1,) int64
            Segments of mask ``k`` are ``offsets[k]:offsets[k + 1]``.

        Computed on first use and kept (the proposals are immutable), so matching one image
        again and again splits its runs once. Do not modify the arrays.
        """
        segments = self._segments
        if segments is None:
            segments = _rle.runs_to_segments(self.starts, self.lengths, self.offsets, self.size[0])
            object.__setattr__(self, "_segments", segments)
        return segments

    @property
    def bbox(self) -> np.ndarray:
        """Boxes ``(N, 4)`` float64, XYWH in pixels, as ``pycocotools.mask.toBbox``."""
        return _rle.segments_bbox(self.segments)

    def to_dense(self) -> np.ndarray:
        """Decode to ``(N, H, W)`` bool, row-major."""
        return _rle.segments_to_dense(self.segments, *self.size)

    def counts(self, k: int) -> np.ndarray:
        """COCO counts (int64) of mask ``k``."""
        a, b = self.offsets[k], self.offsets[k + 1]
        return _rle.runs_to_counts(self.starts[a:b], self.lengths[a:b], self.size[0] * self.size[1])

    def to_rle(self, compressed: bool = True) -> list[dict]:
        """pycocotools RLE dicts: ``counts`` as bytes (compressed) or a list of ints.

        Equal to ``pycocotools.mask.encode`` of the decoded masks.
        """
        h, w = self.size
        out = []
        for k in range(len(self)):
            c = self.counts(k)
            counts = _rle.counts_to_string(c) if compressed else c.tolist()
            out.append({"size": [h, w], "counts": counts})
        return out

    def __getitem__(self, index: Any) -> Proposals:
        """A subset: ``index`` is an int, a slice, an int array or a bool mask ``(N,)``."""
        n = len(self)
        idx = np.arange(n)[index]
        idx = np.atleast_1d(idx).astype(np.int64)
        lens = self.offsets[idx + 1] - self.offsets[idx]
        off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        take = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if idx.size
            else np.zeros(0, np.int64)
        )
        meta = {k: v[idx] for k, v in self.meta.items()}
        return Proposals(
            self.starts[take], self.lengths[take], off, self.size, meta, validate=False
        )

    # ---------------------------------------------------------------- geometry

    def _remap(self, col_src: np.ndarray, row_lo: np.ndarray, out_hw: tuple[int, int]) -> Proposals:
        s, ln, off = _rle.remap_segments(self.segments, self.size[1], col_src, row_lo, out_hw[0])
        return Proposals(s, ln, off, out_hw, dict(self.meta), validate=False)

    def resize(self, size: Sequence[int], mode: str = "nearest") -> Proposals:
        """Nearest-neighbour resize to ``size = (H', W')``, on runs (nothing decoded).

        ``mode`` picks the library whose rule is reproduced pixel for pixel on the decoded
        masks (tested against each):

        * ``"nearest"`` (default): ``torch.nn.functional.interpolate(dense[None].float(),
          size=size, mode="nearest")`` (torch's legacy rule; the SemiRES reference code's);
        * ``"nearest-exact"``: the same with ``mode="nearest-exact"``;
        * ``"pil"``: ``PIL.Image.fromarray(mask).resize((W', H'), Image.NEAREST)``, what
          UniMatch-style pipelines use for label maps.

        Metadata is carried over unchanged (boxes and points stay in the original pixel frame).
        """
        h2, w2 = _check_size(size)
        if mode not in _rle.RESIZE_MODES:
            raise ValueError(f"mode must be one of {_rle.RESIZE_MODES}, got {mode!r}")
        if (h2, w2) == self.size:
            return self
        return self._remap(*_rle.resize_maps(self.size, (h2, w2), mode), (h2, w2))

    def hflip(self) -> Proposals:
        """Mirror left-right, on runs."""
        return self._remap(*_rle.hflip_maps(self.size), self.size)

    def crop(self, box: Sequence[int]) -> Proposals:
        """Crop to ``box = (x, y, w, h)`` (ints, pixels); parts outside the image are empty.

        A box reaching outside the image pads with background, as padding an image and then
        cropping it would.
        """
        try:
            x, y, bw, bh = (_as_int(v, "crop box") for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"box must be (x, y, w, h) ints, got {box!r}") from None
        if bw <= 0 or bh <= 0:
            raise ValueError(f"crop box must have positive width and height, got {box!r}")
        return self._remap(*_rle.crop_maps(self.size, (x, y, bw, bh)), (bh, bw))


def _unpickle_proposals(
    starts: np.ndarray,
    lengths: np.ndarray,
    offsets: np.ndarray,
    size: tuple[int, int],
    meta: dict[str, np.ndarray],
) -> Proposals:
    return Proposals(starts, lengths, offsets, size, meta, validate=False)


def __getattr__(name: str) -> Any:
    # ``from samrefine.proposals import ProposalBatch`` (its home before it moved to
    # proposal_batch.py, and the module old pickles name) keeps working; imported on first
    # use, because proposal_batch imports this module
    if name == "ProposalBatch":
        from .proposal_batch import ProposalBatch

        return ProposalBatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
