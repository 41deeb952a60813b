"""Audit semantic (multi-class) refinement against ground truth: per-class IoU, corrections.

Format
------
For teacher class maps ``T``, ground truth ``G`` (both ``(H, W)`` integer, ``ignore_index`` =
void) and refined maps ``R`` (:func:`samrefine.refine_semantic`, one per strategy):

* **IoU of class c** over the dataset: ``|A = c and G = c| / |(A = c or G = c) and G valid|``,
  summed over all images (the usual semantic-segmentation confusion-matrix IoU). Pixels where
  ``G`` is void are not counted; pixels where ``A`` is void (``ignore_index``, e.g. given up by
  refinement) count as misses of ``G``'s class. ``miou`` is the mean over classes with a
  non-empty union. ``coverage`` is the share of valid ``G`` pixels that ``A`` labels (not void),
  ``accuracy_labelled`` the pixel accuracy on those.
* **corrections**, per *unit* = (image, class) for every class that forms a refined region in
  the image (``skip_classes`` excluded), comparing that class's IoU in that image before (``T``)
  and after (``R``), exactly (integer cross-multiplication):

  ==============  =========================================================
  positive        a region of the unit matched and ``IoU(R) > IoU(T)``
  negative        a region of the unit matched and ``IoU(R) < IoU(T)``
  tie             a region of the unit matched and ``IoU(R) == IoU(T)``
  no-correction   no region of the unit matched (``R = T`` on it, PWA in training)
  ==============  =========================================================

  With ``per="component"`` a unit is matched when any of its components is. A unit whose union
  is empty in both maps cannot occur (the class is present in ``T``).

Worked example: ``T = [1 1 1 1 2 2]``, ``G = [0 1 1 1 1 2]`` (0 = background), one proposal
``[0 1 1 1 1 0]``, CPI-U: ``R = [255 1 1 1 1 2]``. Class 1: IoU 3/5 before, 4/4 after (the void
pixel 0 is not class 1): positive. Class 2: unmatched, so no-correction, although its IoU
rises from 1/2 to 1/1 (class 1 claimed pixel 4; the dataset IoUs show it). Background: IoU 0/1
before and after (pixel 0 is labelled 1, then void): a miss both times, coverage 6/6 -> 5/6.

Cost: one :func:`refine_semantic` call per image and strategy plus two ``bincount`` of
``H W`` per image; memory ``O(num_classes^2)`` accumulators.

Contents: :func:`audit_semantic`, :class:`SemanticAuditReport`, :class:`SemanticStrategyStats`.

Command line: ``samrefine audit DATA --semantic --num-classes K`` (:mod:`samrefine.cli.audit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _config
from ._common import to_numpy
from .auditing import DEFAULT_STRATEGIES
from .match import STRATEGIES
from .proposals import Proposals
from .semantic import refine_semantic

__all__ = ["SemanticAuditReport", "SemanticStrategyStats", "audit_semantic"]

_POS, _NEG, _TIE, _NONE = 0, 1, 2, 3


def _ious(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU from a (K, K + 1) confusion matrix (rows G, columns A, last column void);
    NaN where the union is empty."""
    k = cm.shape[0]
    inter = np.diag(cm[:, :k]).astype(np.float64)
    union = cm.sum(1) + cm[:, :k].sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


@dataclass
class SemanticStrategyStats:
    """Per-class IoU and correction counts of one refined map (or of the teacher's).

    Attributes
    ----------
    strategy : str
        ``"teacher"`` for the unrefined maps, else the strategy name.
    iou : (K,) float64
        Per-class IoU over the dataset (NaN for classes absent from both maps).
    miou : float
        Mean of ``iou`` over classes with a non-empty union.
    coverage : float
        Share of valid ground-truth pixels that the map labels (not void).
    accuracy_labelled : float
        Pixel accuracy on the labelled valid pixels.
    positive, negative, tie, no_correction : int
        Units (image, class) per category (module table); all 0 for ``"teacher"``.
    region_match_rate : float
        Share of refined regions matched.
    """

    strategy: str
    iou: np.ndarray
    miou: float
    coverage: float
    accuracy_labelled: float
    positive: int = 0
    negative: int = 0
    tie: int = 0
    no_correction: int = 0
    region_match_rate: float = 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["iou"] = [None if np.isnan(v) else float(v) for v in self.iou]
        return d


@dataclass
class SemanticAuditReport:
    """What :func:`audit_semantic` returns: ``teacher`` (before) and one row per strategy."""

    num_classes: int
    n_images: int
    teacher: SemanticStrategyStats
    strategies: dict[str, SemanticStrategyStats] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: mIoU, coverage and correction counts per strategy."""
        head = (
            f"{'strategy':<9}{'mIoU':>7}{'cover':>7}{'acc':>7}{'positive':>9}"
            f"{'negative':>9}{'tie':>5}{'no-corr':>8}{'match':>7}"
        )
        rows = [head, "-" * len(head)]
        for s in [self.teacher, *self.strategies.values()]:
            rows.append(
                f"{s.strategy:<9}{s.miou:>7.4f}{s.coverage:>7.3f}"
                f"{s.accuracy_labelled:>7.3f}{s.positive:>9}{s.negative:>9}{s.tie:>5}"
                f"{s.no_correction:>8}{s.region_match_rate:>7.2f}"
            )
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "n_images": self.n_images,
            "teacher": self.teacher.to_dict(),
            "strategies": {k: v.to_dict() for k, v in self.strategies.items()},
        }


def _samples(labels, proposals, gt):
    if proposals is None and gt is None:
        for i, item in enumerate(labels):
            if not isinstance(item, (tuple, list)) or len(item) != 3:
                raise TypeError(f"sample {i}: expected a (labels, Proposals, gt) tuple")
            yield item
        return
    if proposals is None or gt is None:
        raise ValueError(
            "pass labels, proposals and gt together, or one iterable of "
            "(labels, Proposals, gt) tuples"
        )
    lab, g = to_numpy(labels), to_numpy(gt)
    if lab.ndim == 2:
        lab, g = lab[None], g[None]
        proposals = [proposals] if isinstance(proposals, Proposals) else proposals
    if len(proposals) != len(lab) or g.shape != lab.shape:
        raise ValueError(
            f"labels {lab.shape}, gt {g.shape} and {len(proposals)} proposals do "
            "not describe the same images"
        )
    for i in range(len(lab)):
        yield lab[i], proposals[i], g[i]


def audit_semantic(
    labels,
    proposals=None,
    gt=None,
    *,
    num_classes: int,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    per: str = "class",
    ignore_index: int = 255,
    skip_classes: Iterable[int] = (),
    give_up: str = "ignore",
    iom_thresh: float = _config.IOM_THRESH,
    under: float = _config.CPI_UNDER,
    over: float = _config.CPI_OVER,
    backend: str | None = None,
) -> SemanticAuditReport:
    """Per-class IoU before / after refinement and correction counts per strategy.

    Parameters
    ----------
    labels : (B, H, W) or (H, W) integer array / tensor, or an iterable
        Teacher class maps; or an iterable of ``(labels (H, W), Proposals, gt (H, W))``
        tuples (sizes may differ between images) with ``proposals`` and ``gt`` left out.
    proposals : list of Proposals, optional
        One per image, at the label map's size.
    gt : same shape as ``labels``, optional
        Ground-truth class maps, ``ignore_index`` = void.
    num_classes : int
        Classes ``0..num_classes-1``; anything else but ``ignore_index`` is an error.
    strategies : sequence of str
        Any of ``"iom"``, ``"cpi"``, ``"cpi-u"``, ``"cpi-o"``.
    per, ignore_index, skip_classes, give_up, backend
        As :func:`samrefine.refine_semantic`.
    iom_thresh, under, over : float
        IOM uses ``iom_thresh``; CPI ``under`` and ``over``; CPI-U ``under``; CPI-O ``over``.

    Returns
    -------
    SemanticAuditReport
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    strategies = tuple(strategies)
    given = {"iom_thresh": iom_thresh, "under": under, "over": over}
    for s in strategies:
        if s not in DEFAULT_STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; valid: {', '.join(DEFAULT_STRATEGIES)}")
    # each strategy takes the thresholds it reads (samrefine.STRATEGIES), as audit does
    thresholds = {s: {k: given[k] for k in STRATEGIES[s].thresholds} for s in strategies}
    k = num_classes
    cm_t = np.zeros((k, k + 1), np.int64)
    cms = {s: np.zeros((k, k + 1), np.int64) for s in strategies}
    counts = {s: np.zeros(4, np.int64) for s in strategies}
    regions = {s: [0, 0] for s in strategies}
    n = 0
    for i, (lab, props, g) in enumerate(_samples(labels, proposals, gt)):
        lab, g = to_numpy(lab), to_numpy(g)
        if g.shape != lab.shape:
            raise ValueError(f"image {i}: gt is {g.shape} but labels are {lab.shape}")
        if g.dtype.kind not in "iu":
            raise TypeError(f"image {i}: gt must be an integer class map, got {g.dtype}")
        gv = g != ignore_index
        if ((g[gv] < 0) | (g[gv] >= k)).any():
            raise ValueError(
                f"image {i}: gt holds classes outside 0..{k - 1} that are not "
                f"ignore_index ({ignore_index})"
            )
        before = _image_cm(lab, g, gv, k, ignore_index)
        cm_t += before
        for s in strategies:
            ref = refine_semantic(
                lab,
                props,
                strategy=s,
                per=per,
                ignore_index=ignore_index,
                skip_classes=skip_classes,
                give_up=give_up,
                num_classes=k,
                backend=backend,
                **thresholds[s],
            )
            after = _image_cm(to_numpy(ref.labels), g, gv, k, ignore_index)
            cms[s] += after
            cls = to_numpy(ref.regions.cls)
            m = to_numpy(ref.regions.matched)
            regions[s][0] += int(m.sum())
            regions[s][1] += int(m.size)
            for c in np.unique(cls):
                if not m[cls == c].any():
                    counts[s][_NONE] += 1
                    continue
                counts[s][_compare(before, after, int(c), k)] += 1
        n += 1
    report = SemanticAuditReport(num_classes=k, n_images=n, teacher=_stats("teacher", cm_t))
    for s in strategies:
        st = _stats(s, cms[s])
        st.positive, st.negative, st.tie, st.no_correction = (int(v) for v in counts[s])
        st.region_match_rate = regions[s][0] / regions[s][1] if regions[s][1] else 0.0
        report.strategies[s] = st
    return report


def _image_cm(pred: np.ndarray, g: np.ndarray, gv: np.ndarray, k: int, ignore_index: int):
    p = pred[gv].astype(np.int64)
    p = np.where(p == ignore_index, k, p)
    if ((p < 0) | (p > k)).any():
        raise ValueError(f"labels hold classes outside 0..{k - 1} that are not ignore_index")
    return np.bincount(g[gv].astype(np.int64) * (k + 1) + p, minlength=k * (k + 1)).reshape(
        k, k + 1
    )


def _compare(before: np.ndarray, after: np.ndarray, c: int, k: int) -> int:
    """Category of class ``c``'s IoU change, compared exactly (an empty union is IoU 1)."""

    def frac(cm):
        inter = int(cm[c, c])
        union = int(cm[c].sum() + cm[:, c].sum() - inter)
        return (inter, union) if union else (1, 1)

    ib, ub = frac(before)
    ia, ua = frac(after)
    lhs, rhs = ia * ub, ib * ua
    return _POS if lhs > rhs else _NEG if lhs < rhs else _TIE


def _stats(name: str, cm: np.ndarray) -> SemanticStrategyStats:
    iou = _ious(cm)
    valid = cm.sum()
    labelled = cm[:, :-1].sum()
    k = cm.shape[0]
    return SemanticStrategyStats(
        strategy=name,
        iou=iou,
        miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        coverage=float(labelled / valid) if valid else 0.0,
        accuracy_labelled=float(np.trace(cm[:, :k]) / labelled) if labelled else 0.0,
    )
