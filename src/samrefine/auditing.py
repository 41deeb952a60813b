"""Audit pseudo-label refinement against ground truth: corrections per strategy, threshold sweep.

Format
------
For every sample ``i`` with pseudo-label ``P``, ground truth ``G`` and refined mask ``R`` (from
:func:`samrefine.refine` with one strategy), ``IoU(A, G) = |A n G| / |A u G|`` (pixels; 1 when
both masks are empty) and the sample falls in exactly one category (the paper's Fig. 6, plus ties):

==============  ====================================================================
category        condition
==============  ====================================================================
positive        matched and ``IoU(R, G) > IoU(P, G)``
negative        matched and ``IoU(R, G) < IoU(P, G)``
tie             matched and ``IoU(R, G) == IoU(P, G)`` exactly (e.g. ``R == P``)
no-correction   unmatched: nothing selected, ``R = P``; training weights it with PWA
==============  ====================================================================

IoUs are compared exactly, as fractions of integer pixel counts (``i_R u_P`` vs ``i_P u_R``), so
a tie is a true tie, never a rounding accident. Ties are neither positive nor negative; the four
counts sum to the number of samples. Means: ``miou`` is the mean of per-sample IoUs, ``oiou``
the RES "overall IoU" ``sum(|A n G|) / sum(|A u G|)``; "before" uses ``P``, "after" uses ``R``
(which is ``P`` for unmatched samples).

Worked example: ``P`` covers 4 pixels of which 3 are in ``G`` (``|G| = 6``), so ``IoU(P, G) =
3 / 7``. A proposal equal to ``G`` gives ``IoU(R, G) = 1 > 3 / 7``: positive.

The threshold sweep reruns each strategy on a grid of every threshold it reads (as listed in
:data:`samrefine.STRATEGIES`: IOM ``iom_thresh``; CPI-U ``under``; CPI-O ``over``; CPI the
``under x over`` grid) and :meth:`AuditReport.recommend` picks, per strategy
and overall, the setting with the highest mean IoU after refinement (ties: fewer negative
corrections, then closer to the paper's default).

Cost: per batch and per setting, one :func:`samrefine.refine` call (scores computed on runs)
plus two pixel counts over ``B x H x W``; memory ``O(batch_size x H x W)``; per-sample IoUs of
the main strategies are kept (``8 x (1 + strategies)`` bytes per sample).

Contents: :func:`audit`, :data:`DEFAULT_STRATEGIES`, :data:`DEFAULT_SWEEP`; the report types are
in :mod:`samrefine.audit_report`.
"""

from __future__ import annotations

import itertools
import numbers
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import _config
from ._common import binary_labels, iou_from_counts, to_numpy
from .audit_report import CATEGORIES, AuditReport, StrategyStats
from .match import STRATEGIES, KernelMode, refine, resolve_strategy
from .proposal_batch import ProposalBatch
from .proposals import Proposals

__all__ = ["DEFAULT_STRATEGIES", "DEFAULT_SWEEP", "audit"]

#: Strategies audited by default: every one that matches (the four of the paper's Fig. 6).
DEFAULT_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.mode != KernelMode.NONE)
#: Default threshold grid of the sweep (strict thresholds, as everywhere).
DEFAULT_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# per-sample category codes: indices into CATEGORIES
_POS, _NEG, _TIE, _NONE = (CATEGORIES.index(c) for c in CATEGORIES)


class _Accumulator:
    """Running sums for one (strategy, thresholds) setting."""

    def __init__(self, strategy: str, thresholds: dict):
        self.strategy, self.thresholds = strategy, dict(thresholds)
        self.counts = np.zeros(4, np.int64)
        self.n = 0
        self.sum_iou_b = self.sum_iou_a = self.sum_gain_m = 0.0
        self.sum_i_b = self.sum_u_b = self.sum_i_a = self.sum_u_a = 0

    def add(self, cat, i_b, u_b, i_a, u_a, matched):
        self.counts += np.bincount(cat, minlength=4)
        self.n += cat.size
        iou_b, iou_a = iou_from_counts(i_b, u_b), iou_from_counts(i_a, u_a)
        self.sum_iou_b += float(iou_b.sum())
        self.sum_iou_a += float(iou_a.sum())
        self.sum_gain_m += float((iou_a - iou_b)[matched].sum())
        self.sum_i_b += int(i_b.sum())
        self.sum_u_b += int(u_b.sum())
        self.sum_i_a += int(i_a.sum())
        self.sum_u_a += int(u_a.sum())

    def stats(self) -> StrategyStats:
        n = self.n
        m = int(self.counts[:3].sum())
        pos, neg, tie, none = (int(c) for c in self.counts)
        return StrategyStats(
            self.strategy,
            self.thresholds,
            n,
            positive=pos,
            negative=neg,
            tie=tie,
            no_correction=none,
            miou_before=self.sum_iou_b / n if n else 0.0,
            miou_after=self.sum_iou_a / n if n else 0.0,
            oiou_before=self.sum_i_b / self.sum_u_b if self.sum_u_b else 1.0,
            oiou_after=self.sum_i_a / self.sum_u_a if self.sum_u_a else 1.0,
            mean_gain_matched=self.sum_gain_m / m if m else 0.0,
        )


# ------------------------------------------------------------------------------- validation


def _binary(x, name: str, prob_thresh: float | None, where: str = "") -> np.ndarray:
    """A bool array from hard labels ({0, 1} or bool) or probabilities with ``prob_thresh``."""
    pseudo = name == "pseudo"  # only pseudo-labels may be probabilities
    return binary_labels(
        to_numpy(x), name, prob_thresh if pseudo else None, where, probabilities=pseudo
    )


def _check_thresholds(strategies, iom_thresh, under, over, sweep):
    strategies = tuple(strategies)
    if not strategies:
        raise ValueError("strategies is empty; pass e.g. ('iom', 'cpi-u')")
    for s in strategies:
        if s not in DEFAULT_STRATEGIES:
            valid = ", ".join(DEFAULT_STRATEGIES)
            raise ValueError(f"unknown strategy {s!r}; valid: {valid}")
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies has duplicates: {strategies}")
    for name, v in (("iom_thresh", iom_thresh), ("under", under), ("over", over)):
        if isinstance(v, bool) or not (isinstance(v, numbers.Real) and 0.0 <= float(v) <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if sweep is None:
        return strategies, ()
    grid = tuple(float(v) for v in sweep)
    if any(not 0.0 <= v <= 1.0 for v in grid):
        raise ValueError(f"sweep thresholds must lie in [0, 1], got {grid}")
    return strategies, tuple(sorted(set(grid)))


def _settings(strategies: Sequence[str], given: dict[str, float], grid: tuple[float, ...]):
    """(main settings, sweep settings): lists of (strategy, the thresholds it reads).

    Each strategy takes from ``given`` the thresholds it reads (:data:`samrefine.STRATEGIES`);
    its sweep is the grid over each of them (CPI: every pair).
    """

    def one(s: str, values: dict[str, float]) -> tuple[str, dict]:
        return s, resolve_strategy(s, **values).thresholds

    main = [one(s, {k: given[k] for k in STRATEGIES[s].thresholds}) for s in strategies]
    sweep = []
    for s in strategies:
        keys = STRATEGIES[s].thresholds
        sweep += [
            one(s, dict(zip(keys, values))) for values in itertools.product(grid, repeat=len(keys))
        ]
    return main, sweep


# ------------------------------------------------------------------------------- the audit


def _samples(pseudo, proposals, gt, prob_thresh, resize):
    """Yield validated (pseudo (H, W) bool, Proposals, gt (H, W) bool)."""
    if proposals is None and gt is None:
        it = pseudo
        if not isinstance(it, Iterable):
            raise TypeError(
                "pass pseudo, proposals and gt arrays, or one iterable of "
                "(pseudo, proposals, gt) tuples"
            )
    else:
        if proposals is None or gt is None:
            raise ValueError(
                "pass both proposals and gt (or one iterable of (pseudo, proposals, "
                "gt) tuples as the first argument)"
            )
        p = to_numpy(pseudo)
        g = to_numpy(gt)
        if p.ndim == 2:
            p, g = p[None], (g[None] if g.ndim == 2 else g)
            if isinstance(proposals, Proposals):
                proposals = [proposals]
        if p.ndim != 3:
            raise ValueError(f"pseudo must be (B, H, W) or (H, W), got shape {p.shape}")
        if g.shape != p.shape:
            raise ValueError(
                f"gt has shape {g.shape} but pseudo has {p.shape}; they must match "
                "(resize the ground truth to the pseudo-label size, nearest)"
            )
        if isinstance(proposals, ProposalBatch):
            proposals = [proposals[b] for b in range(len(proposals))]
        proposals = list(proposals)
        if len(proposals) != p.shape[0]:
            raise ValueError(
                f"pseudo has {p.shape[0]} samples but proposals has "
                f"{len(proposals)}; pass one Proposals per sample"
            )
        it = zip(p, proposals, g)
    for i, item in enumerate(it):
        try:
            ps, pr, g = item
        except (TypeError, ValueError):
            raise TypeError(
                f"sample {i}: expected a (pseudo, proposals, gt) tuple, got {type(item).__name__}"
            ) from None
        where = f" (sample {i})"
        ps = _binary(ps, "pseudo", prob_thresh, where)
        g = _binary(g, "gt", None, where)
        if ps.ndim != 2:
            raise ValueError(f"pseudo{where} must be (H, W), got shape {ps.shape}")
        if g.shape != ps.shape:
            raise ValueError(
                f"gt{where} has shape {g.shape} but pseudo has {ps.shape}; resize "
                "the ground truth to the pseudo-label size (nearest)"
            )
        if not isinstance(pr, Proposals):
            raise TypeError(
                f"proposals{where} must be a samrefine.Proposals, got "
                f"{type(pr).__name__}; build one with Proposals.from_rle / "
                "from_dense"
            )
        if tuple(pr.size) != ps.shape:
            if not resize:
                raise ValueError(
                    f"proposals{where} are {pr.size[0]}x{pr.size[1]} but pseudo is "
                    f"{ps.shape[0]}x{ps.shape[1]}; pass resize=True (nearest, as "
                    f"in training) or Proposals.resize({ps.shape})"
                )
            pr = pr.resize(ps.shape)
        yield ps, pr, g


def _batches(samples, batch_size):
    """Group samples into lists of at most ``batch_size`` sharing one (H, W)."""
    cur: list = []
    for s in samples:
        if cur and (len(cur) == batch_size or s[0].shape != cur[0][0].shape):
            yield cur
            cur = []
        cur.append(s)
    if cur:
        yield cur


def _counts(a: np.ndarray, g: np.ndarray):
    """Per-sample |a n g| and |a u g| (int64) of (B, H, W) bool arrays."""
    return (
        np.count_nonzero(a & g, axis=(1, 2)).astype(np.int64),
        np.count_nonzero(a | g, axis=(1, 2)).astype(np.int64),
    )


def _categorise(i_b, u_b, i_a, u_a, matched) -> np.ndarray:
    # IoU = i / u with 0/0 -> 1: compare i_a / u_a with i_b / u_b exactly by cross-multiplying
    ib, ub = np.where(u_b > 0, i_b, 1), np.where(u_b > 0, u_b, 1)
    ia, ua = np.where(u_a > 0, i_a, 1), np.where(u_a > 0, u_a, 1)
    lhs, rhs = ia * ub, ib * ua
    cat = np.where(lhs > rhs, _POS, np.where(lhs < rhs, _NEG, _TIE))
    return np.where(matched, cat, _NONE).astype(np.int8)


def audit(
    pseudo,
    proposals=None,
    gt=None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    *,
    sweep: Sequence[float] | None = DEFAULT_SWEEP,
    iom_thresh: float = _config.IOM_THRESH,
    under: float = _config.CPI_UNDER,
    over: float = _config.CPI_OVER,
    prob_thresh: float | None = None,
    resize: bool = False,
    batch_size: int = 32,
    progress: bool | None = None,
    backend: str | None = None,
) -> AuditReport:
    """Count positive / negative / tie / no-correction refinements per strategy; sweep thresholds.

    Parameters
    ----------
    pseudo : np.ndarray or torch.Tensor, (B, H, W) or (H, W); or an iterable
        Pseudo-labels: bool or {0, 1}, or float probabilities in [0, 1] with ``prob_thresh``.
        Or, for data that does not fit in memory, an iterable (a generator is fine) of
        ``(pseudo (H, W), Proposals, gt (H, W))`` tuples, with ``proposals`` and ``gt`` left
        out. Sizes may differ between samples.
    proposals : list of Proposals or ProposalBatch, optional
        One :class:`samrefine.Proposals` per sample, at the pseudo-label's ``(H, W)`` (or any
        size with ``resize=True``).
    gt : np.ndarray or torch.Tensor, (B, H, W) or (H, W), optional
        Ground-truth masks, bool or {0, 1}, same shape as ``pseudo``.
    strategies : sequence of str
        Any of ``"iom"``, ``"cpi"``, ``"cpi-u"``, ``"cpi-o"``; default all four.
    sweep : sequence of float in [0, 1] or None
        Threshold grid; None skips the sweep. Default :data:`DEFAULT_SWEEP` (0.3 to 0.9).
    iom_thresh, under, over : float in [0, 1]
        Thresholds of the main (non-sweep) rows, strict. Each strategy reads those
        :data:`samrefine.STRATEGIES` lists for it (IOM ``iom_thresh``, CPI ``under`` and
        ``over``, CPI-U ``under``, CPI-O ``over``). Defaults: the paper's 0.5, 0.7, 0.7.
    prob_thresh : float, optional
        Foreground is ``pseudo > prob_thresh`` when ``pseudo`` holds probabilities.
    resize : bool
        Resize proposals of another size to ``(H, W)`` (nearest, on runs, as training does).
    batch_size : int
        Samples matched per :func:`samrefine.refine` call.
    progress : bool, optional
        Show a tqdm progress bar; default: when stderr is a terminal.
    backend : {"numba", "torch"}, optional
        Matching backend, see :func:`samrefine.refine`.

    Returns
    -------
    AuditReport
        ``strategies`` (counts and IoUs per strategy), ``sweep``, per-sample arrays,
        ``recommend()``, ``table()``, ``to_json(path)``.

    Raises
    ------
    TypeError, ValueError
        On a wrong type, shape or value (the message names the sample and the fix).

    Notes
    -----
    SemiRES, Appendix G and Fig. 6: positive / negative corrections and no corrections (PWA).
    The paper does not say how ties count; here they are a separate category.

    Examples
    --------
    >>> import numpy as np, samrefine as sr
    >>> gt = np.zeros((1, 4, 4), bool); gt[0, :2, :3] = True          # 6 pixels
    >>> pseudo = np.zeros_like(gt); pseudo[0, :2, :2] = True          # 4 pixels, IoU 4/6
    >>> props = [sr.Proposals.from_dense(gt)]                          # the object itself
    >>> rep = sr.audit(pseudo, props, gt, ["iom"], sweep=None)
    >>> rep.strategies["iom"].positive, round(rep.strategies["iom"].miou_after, 3)
    (1, 1.0)
    """
    strategies, grid = _check_thresholds(strategies, iom_thresh, under, over, sweep)
    if prob_thresh is not None and not (
        isinstance(prob_thresh, numbers.Real) and 0.0 <= prob_thresh <= 1.0
    ):
        raise ValueError(f"prob_thresh must be a number in [0, 1], got {prob_thresh!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    given = {"iom_thresh": iom_thresh, "under": under, "over": over}
    main, sweep_settings = _settings(strategies, given, grid)
    main_acc = [_Accumulator(s, t) for s, t in main]
    sweep_acc = [_Accumulator(s, t) for s, t in sweep_settings]
    iou_before: list[np.ndarray] = []
    iou_after: dict[str, list] = {s: [] for s in strategies}
    category: dict[str, list] = {s: [] for s in strategies}

    total = None
    if proposals is not None:
        shape = np.shape(to_numpy(pseudo))
        total = 1 if len(shape) == 2 else shape[0]
    elif hasattr(pseudo, "__len__"):
        total = len(pseudo)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=total, desc="audit", unit="sample", disable=not progress)
    n = 0
    for batch in _batches(_samples(pseudo, proposals, gt, prob_thresh, resize), batch_size):
        p = np.stack([b[0] for b in batch])
        g = np.stack([b[2] for b in batch])
        pb = ProposalBatch([b[1] for b in batch])
        i_b, u_b = _counts(p, g)
        iou_before.append(iou_from_counts(i_b, u_b))
        for k, acc in enumerate(main_acc + sweep_acc):
            ref = refine(p, pb, acc.strategy, backend=backend, **acc.thresholds)
            matched = np.asarray(ref.matched, bool)
            i_a, u_a = _counts(np.asarray(ref.masks, bool), g)
            cat = _categorise(i_b, u_b, i_a, u_a, matched)
            acc.add(cat, i_b, u_b, i_a, u_a, matched)
            if k < len(main_acc):
                iou_after[acc.strategy].append(iou_from_counts(i_a, u_a))
                category[acc.strategy].append(cat)
        n += len(batch)
        bar.update(len(batch))
    bar.close()
    if n == 0:
        raise ValueError("no samples to audit (the input is empty)")

    def cat_(parts, dtype):
        return np.concatenate(parts).astype(dtype)

    return AuditReport(
        n_samples=n,
        strategies={a.strategy: a.stats() for a in main_acc},
        sweep=[a.stats() for a in sweep_acc],
        iou_before=cat_(iou_before, np.float64),
        iou_after={s: cat_(v, np.float64) for s, v in iou_after.items()},
        category={s: cat_(v, np.int8) for s, v in category.items()},
    )
