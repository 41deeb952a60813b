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

The threshold sweep reruns each strategy on a grid (IOM ``iom_thresh``; CPI-U ``under``; CPI-O
``over``; CPI the ``under x over`` grid) and :meth:`AuditReport.recommend` picks, per strategy
and overall, the setting with the highest mean IoU after refinement (ties: fewer negative
corrections, then closer to the paper's default).

Cost: per batch and per setting, one :func:`samrefine.refine` call (scores computed on runs)
plus two pixel counts over ``B x H x W``; memory ``O(batch_size x H x W)``; per-sample IoUs of
the main strategies are kept (``8 x (1 + strategies)`` bytes per sample).

Contents: :func:`audit`, :class:`AuditReport`, :class:`StrategyStats`, :data:`DEFAULT_SWEEP`.
"""

from __future__ import annotations

import functools
import json
import numbers
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _config
from ._common import binary_labels, iou_from_counts, to_numpy
from .match import STRATEGIES, refine
from .proposals import ProposalBatch, Proposals

__all__ = ["DEFAULT_STRATEGIES", "DEFAULT_SWEEP", "AuditReport", "StrategyStats", "audit"]

#: Strategies audited by default (the four of the paper's Fig. 6).
DEFAULT_STRATEGIES = ("iom", "cpi", "cpi-u", "cpi-o")
#: Default threshold grid of the sweep (strict thresholds, as everywhere).
DEFAULT_SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

_CATEGORIES = ("positive", "negative", "tie", "no_correction")
# per-sample category codes
_POS, _NEG, _TIE, _NONE = 0, 1, 2, 3


@dataclass
class StrategyStats:
    """Correction counts and IoUs of one strategy at one threshold setting.

    Attributes
    ----------
    strategy : str
        ``"iom"``, ``"cpi"``, ``"cpi-u"`` or ``"cpi-o"``.
    thresholds : dict of str to float or None
        The thresholds used: ``iom_thresh`` (IOM) or ``under`` / ``over`` (CPI family).
    n : int
        Samples audited.
    positive, negative, tie, no_correction : int
        Sample counts per category (see the module table); they sum to ``n``.
    miou_before, miou_after : float
        Mean per-sample IoU with the ground truth of the pseudo-labels and of the refined masks.
    oiou_before, oiou_after : float
        Overall IoU, ``sum(intersection) / sum(union)`` over all samples.
    mean_gain_matched : float
        Mean of ``IoU(R, G) - IoU(P, G)`` over matched samples (0 when none matched).
    """

    strategy: str
    thresholds: dict
    n: int = 0
    positive: int = 0
    negative: int = 0
    tie: int = 0
    no_correction: int = 0
    miou_before: float = 0.0
    miou_after: float = 0.0
    oiou_before: float = 0.0
    oiou_after: float = 0.0
    mean_gain_matched: float = 0.0

    @property
    def matched(self) -> int:
        """Samples where a proposal replaced the pseudo-label (positive + negative + tie)."""
        return self.positive + self.negative + self.tie

    @property
    def match_rate(self) -> float:
        """Share of matched samples, in [0, 1]."""
        return self.matched / self.n if self.n else 0.0

    @property
    def gain(self) -> float:
        """``miou_after - miou_before``."""
        return self.miou_after - self.miou_before

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, with ``matched``, ``match_rate`` and ``gain`` added."""
        d = asdict(self)
        d.update(matched=self.matched, match_rate=self.match_rate, gain=self.gain)
        return d


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
        return StrategyStats(
            self.strategy, self.thresholds, n, *(int(c) for c in self.counts),
            miou_before=self.sum_iou_b / n if n else 0.0,
            miou_after=self.sum_iou_a / n if n else 0.0,
            oiou_before=self.sum_i_b / self.sum_u_b if self.sum_u_b else 1.0,
            oiou_after=self.sum_i_a / self.sum_u_a if self.sum_u_a else 1.0,
            mean_gain_matched=self.sum_gain_m / m if m else 0.0)


@dataclass
class AuditReport:
    """What :func:`audit` returns.

    Attributes
    ----------
    n_samples : int
    strategies : dict of str to StrategyStats
        The audited strategies at the requested thresholds, in the requested order.
    sweep : list of StrategyStats
        One entry per (strategy, threshold setting) of the sweep; empty without a sweep.
    iou_before : np.ndarray, (n_samples,) float64
        Per-sample IoU of the pseudo-label with the ground truth.
    iou_after : dict of str to np.ndarray, (n_samples,) float64
        Per-sample IoU of the refined mask, per strategy.
    category : dict of str to np.ndarray, (n_samples,) int8
        Per-sample category per strategy: 0 positive, 1 negative, 2 tie, 3 no-correction.
    """

    n_samples: int
    strategies: dict[str, StrategyStats]
    sweep: list[StrategyStats] = field(default_factory=list)
    iou_before: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iou_after: dict[str, np.ndarray] = field(default_factory=dict)
    category: dict[str, np.ndarray] = field(default_factory=dict)

    def recommend(self, objective: str = "miou") -> dict:
        """Best threshold setting per strategy and overall, from the sweep.

        Parameters
        ----------
        objective : {"miou", "oiou"}
            Maximise the mean per-sample IoU after refinement, or the overall IoU.

        Returns
        -------
        dict
            ``{"strategy", "thresholds", "objective", "before", "after", "per_strategy":
            {name: {"thresholds", "after", "negative", "match_rate"}}, "n_samples", "note"}``.
            Ties are broken by fewer negative corrections, then by closeness to the paper's
            defaults (IOM 0.5, CPI 0.7). Without a sweep the audited settings are compared.
        """
        if objective not in ("miou", "oiou"):
            raise ValueError(f"objective must be 'miou' or 'oiou', got {objective!r}")
        rows = self.sweep or list(self.strategies.values())
        if not rows:
            raise ValueError("nothing to recommend: the audit ran no strategy")
        key = f"{objective}_after"

        def rank(s: StrategyStats):
            dist = sum(abs(v - _default_for(k)) for k, v in s.thresholds.items() if v is not None)
            return (-getattr(s, key), s.negative, dist)

        per = {}
        for name in dict.fromkeys(r.strategy for r in rows):
            best = min((r for r in rows if r.strategy == name), key=rank)
            per[name] = {"thresholds": best.thresholds, "after": getattr(best, key),
                         "negative": best.negative, "match_rate": best.match_rate}
        top = min(rows, key=rank)
        note = ("few samples (< 100): the recommendation is noisy" if self.n_samples < 100
                else "chosen on the audited samples; confirm on held-out data")
        return {"strategy": top.strategy, "thresholds": top.thresholds, "objective": objective,
                "before": getattr(top, f"{objective}_before"), "after": getattr(top, key),
                "per_strategy": per, "n_samples": self.n_samples, "note": note}

    def to_dict(self, per_sample: bool = False) -> dict:
        """JSON-ready dict; ``per_sample=True`` adds the per-sample IoUs and categories."""
        d = {
            "n_samples": self.n_samples,
            "definitions": {
                "positive": "matched and IoU(refined, gt) > IoU(pseudo, gt)",
                "negative": "matched and IoU(refined, gt) < IoU(pseudo, gt)",
                "tie": "matched and IoU(refined, gt) == IoU(pseudo, gt) (exact, integer counts)",
                "no_correction": "unmatched: refined = pseudo, weighted by PWA in training",
                "iou": "|A n G| / |A u G|, 1 when both are empty",
                "oiou": "sum |A n G| / sum |A u G| over samples",
            },
            "strategies": {k: v.to_dict() for k, v in self.strategies.items()},
            "sweep": [s.to_dict() for s in self.sweep],
            "recommendation": self.recommend() if (self.sweep or self.strategies) else None,
        }
        if per_sample:
            d["per_sample"] = {
                "iou_before": self.iou_before.tolist(),
                "iou_after": {k: v.tolist() for k, v in self.iou_after.items()},
                "category": {k: [_CATEGORIES[c] for c in v] for k, v in self.category.items()},
            }
        return d

    def to_json(self, path, per_sample: bool = False) -> None:
        """Write :meth:`to_dict` to ``path`` (UTF-8, indented)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(per_sample), f, indent=2)
            f.write("\n")

    def table(self, sweep: bool = False) -> str:
        """The report as fixed-width text: the strategies, the best sweep settings, the
        recommendation; ``sweep=True`` lists every sweep row as well."""
        head = (f"{'strategy':<8} {'thresholds':<19} {'positive':>8} {'negative':>8} "
                f"{'tie':>5} {'no-corr':>7} {'matched':>7} {'mIoU bef':>8} {'mIoU aft':>8} "
                f"{'oIoU bef':>8} {'oIoU aft':>8}")

        def line(s: StrategyStats) -> str:
            return (f"{s.strategy:<8} {_fmt_thresh(s.thresholds):<19} {s.positive:>8} "
                    f"{s.negative:>8} {s.tie:>5} {s.no_correction:>7} {s.match_rate:>7.1%} "
                    f"{s.miou_before:>8.4f} {s.miou_after:>8.4f} {s.oiou_before:>8.4f} "
                    f"{s.oiou_after:>8.4f}")

        out = [(f"audit of {self.n_samples} samples (no-corr = unmatched, left to PWA; "
               "tie = matched, IoU unchanged)"), head, "-" * len(head)]
        out += [line(s) for s in self.strategies.values()]
        if self.sweep:
            rec = self.recommend()
            best = [next(r for r in self.sweep if r.strategy == name
                         and r.thresholds == v["thresholds"])
                    for name, v in rec["per_strategy"].items()]
            out += ["", "best setting per strategy (threshold sweep, by mean IoU after)", head,
                    "-" * len(head)]
            out += [line(s) for s in best]
            if sweep:
                out += ["", f"all {len(self.sweep)} sweep settings", head, "-" * len(head)]
                out += [line(s) for s in self.sweep]
            out += ["", (f"recommended: {rec['strategy']} {_fmt_thresh(rec['thresholds'])} "
                    f"(mean IoU {rec['before']:.4f} -> {rec['after']:.4f}; {rec['note']})")]
        return "\n".join(out)


def _default_for(key: str) -> float:
    return _config.IOM_THRESH if key == "iom_thresh" else _config.CPI_UNDER


def _fmt_thresh(t: dict) -> str:
    return " ".join(f"{k.replace('_thresh', '')}={v:g}" for k, v in t.items() if v is not None)


# ------------------------------------------------------------------------------- validation


def _binary(x, name: str, prob_thresh: float | None, where: str = "") -> np.ndarray:
    """A bool array from hard labels ({0, 1} or bool) or probabilities with ``prob_thresh``."""
    pseudo = name == "pseudo"  # only pseudo-labels may be probabilities
    return binary_labels(to_numpy(x), name, prob_thresh if pseudo else None, where,
                         probabilities=pseudo)


def _check_thresholds(strategies, iom_thresh, under, over, sweep):
    strategies = tuple(strategies)
    if not strategies:
        raise ValueError("strategies is empty; pass e.g. ('iom', 'cpi-u')")
    for s in strategies:
        if s not in STRATEGIES or s == "none":
            valid = ", ".join(k for k in STRATEGIES if k != "none")
            raise ValueError(f"unknown strategy {s!r}; valid: {valid}")
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies has duplicates: {strategies}")
    for name, v in (("iom_thresh", iom_thresh), ("under", under), ("over", over)):
        if isinstance(v, bool) or not (isinstance(v, numbers.Real) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if sweep is None:
        return strategies, ()
    grid = tuple(float(v) for v in sweep)
    if any(not 0.0 <= v <= 1.0 for v in grid):
        raise ValueError(f"sweep thresholds must lie in [0, 1], got {grid}")
    return strategies, tuple(sorted(set(grid)))


def _settings(strategies, iom_thresh, under, over, grid):
    """(main settings, sweep settings): lists of (strategy, thresholds dict)."""
    def one(s, t_iom, u, o):
        if s == "iom":
            return s, {"iom_thresh": float(t_iom)}
        u = None if s == "cpi-o" else float(u)
        o = None if s == "cpi-u" else float(o)
        return s, {"under": u, "over": o}

    main = [one(s, iom_thresh, under, over) for s in strategies]
    sweep = []
    for s in strategies:
        if s == "cpi":
            sweep += [one(s, 0, u, o) for u in grid for o in grid]
        else:
            sweep += [one(s, t, t, t) for t in grid]
    return main, sweep


# ------------------------------------------------------------------------------- the audit


def _samples(pseudo, proposals, gt, prob_thresh, resize):
    """Yield validated (pseudo (H, W) bool, Proposals, gt (H, W) bool)."""
    if proposals is None and gt is None:
        it = pseudo
        if not isinstance(it, Iterable):
            raise TypeError("pass pseudo, proposals and gt arrays, or one iterable of "
                            "(pseudo, proposals, gt) tuples")
    else:
        if proposals is None or gt is None:
            raise ValueError("pass both proposals and gt (or one iterable of (pseudo, proposals, "
                             "gt) tuples as the first argument)")
        p = to_numpy(pseudo)
        g = to_numpy(gt)
        if p.ndim == 2:
            p, g = p[None], (g[None] if g.ndim == 2 else g)
            if isinstance(proposals, Proposals):
                proposals = [proposals]
        if p.ndim != 3:
            raise ValueError(f"pseudo must be (B, H, W) or (H, W), got shape {p.shape}")
        if g.shape != p.shape:
            raise ValueError(f"gt has shape {g.shape} but pseudo has {p.shape}; they must match "
                             "(resize the ground truth to the pseudo-label size, nearest)")
        if isinstance(proposals, ProposalBatch):
            proposals = [proposals[b] for b in range(len(proposals))]
        proposals = list(proposals)
        if len(proposals) != p.shape[0]:
            raise ValueError(f"pseudo has {p.shape[0]} samples but proposals has "
                             f"{len(proposals)}; pass one Proposals per sample")
        it = zip(p, proposals, g)
    for i, item in enumerate(it):
        try:
            ps, pr, g = item
        except (TypeError, ValueError):
            raise TypeError(f"sample {i}: expected a (pseudo, proposals, gt) tuple, got "
                            f"{type(item).__name__}") from None
        where = f" (sample {i})"
        ps = _binary(ps, "pseudo", prob_thresh, where)
        g = _binary(g, "gt", None, where)
        if ps.ndim != 2:
            raise ValueError(f"pseudo{where} must be (H, W), got shape {ps.shape}")
        if g.shape != ps.shape:
            raise ValueError(f"gt{where} has shape {g.shape} but pseudo has {ps.shape}; resize "
                             "the ground truth to the pseudo-label size (nearest)")
        if not isinstance(pr, Proposals):
            raise TypeError(f"proposals{where} must be a samrefine.Proposals, got "
                            f"{type(pr).__name__}; build one with Proposals.from_rle / "
                            "from_dense")
        if tuple(pr.size) != ps.shape:
            if not resize:
                raise ValueError(f"proposals{where} are {pr.size[0]}x{pr.size[1]} but pseudo is "
                                 f"{ps.shape[0]}x{ps.shape[1]}; pass resize=True (nearest, as "
                                 f"in training) or Proposals.resize({ps.shape})")
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
    return (np.count_nonzero(a & g, axis=(1, 2)).astype(np.int64),
            np.count_nonzero(a | g, axis=(1, 2)).astype(np.int64))


def _categorise(i_b, u_b, i_a, u_a, matched) -> np.ndarray:
    # IoU = i / u with 0/0 -> 1: compare i_a / u_a with i_b / u_b exactly by cross-multiplying
    ib, ub = np.where(u_b > 0, i_b, 1), np.where(u_b > 0, u_b, 1)
    ia, ua = np.where(u_a > 0, i_a, 1), np.where(u_a > 0, u_a, 1)
    lhs, rhs = ia * ub, ib * ua
    cat = np.where(lhs > rhs, _POS, np.where(lhs < rhs, _NEG, _TIE))
    return np.where(matched, cat, _NONE).astype(np.int8)


def audit(pseudo, proposals=None, gt=None, strategies: Sequence[str] = DEFAULT_STRATEGIES, *,
          sweep: Sequence[float] | None = DEFAULT_SWEEP, iom_thresh: float = _config.IOM_THRESH,
          under: float = _config.CPI_UNDER, over: float = _config.CPI_OVER,
          prob_thresh: float | None = None, resize: bool = False, batch_size: int = 32,
          progress: bool | None = None, backend: str | None = None) -> AuditReport:
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
        Thresholds of the main (non-sweep) rows, strict. CPI uses ``under`` and ``over``,
        CPI-U ``under`` only, CPI-O ``over`` only. Defaults: the paper's 0.5, 0.7, 0.7.
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
    if prob_thresh is not None and not (isinstance(prob_thresh, numbers.Real)
                                        and 0.0 <= prob_thresh <= 1.0):
        raise ValueError(f"prob_thresh must be a number in [0, 1], got {prob_thresh!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    main, sweep_settings = _settings(strategies, iom_thresh, under, over, grid)
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
    from tqdm.auto import tqdm

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


# ------------------------------------------------------------------------------- demo data


@functools.lru_cache(maxsize=4)
def _demo_library(photo: str) -> Proposals:
    """Classical proposals of a demo photo downscaled to <= 320 px (cached: ~1.5 s each)."""
    from PIL import Image

    from .demo import photo as _photo
    from .library.classical import classical_proposals

    img = _photo(photo)
    h, w = img.shape[:2]
    s = min(1.0, 320 / max(h, w))
    small = np.asarray(Image.fromarray(img).resize((round(w * s), round(h * s)),
                                                   Image.BILINEAR))
    return classical_proposals(small)


def demo_data(photo: str = "coffee", samples: int = 16, size: int = 256, seed: int = 0,
              strength: float = 0.6, hold_out_gt: bool = True, max_area: float = 0.5) -> dict:
    """Pseudo-labels, proposals and ground truth on a real photo, for trying the audit.

    The photo (``skimage.data``) is downscaled to at most 320 pixels on its longer side and
    given classical multi-scale proposals (:func:`samrefine.library.classical.
    classical_proposals`, not SAM); the proposals are resized to ``size x size`` as a training
    pipeline would. Each sample's ground truth is one proposal covering 3-30% of the image
    (:func:`samrefine.demo.pick_object`) and its pseudo-label that object corrupted as a noisy
    teacher would (:func:`samrefine.demo.corrupt_mask`). With ``hold_out_gt`` the object's own
    proposal is removed from that sample's proposals, so the library does not contain the exact
    answer (as with SAM on real data). Classical regions covering more than ``max_area`` of
    the image are dropped: the coarsest superpixel scale merges most of a photo into one region
    that contains every object, which SAM's "segment everything" output does not do.

    Parameters
    ----------
    photo : str
        A name from :data:`samrefine.demo.PHOTOS`.
    samples : int
        Number of samples (objects may repeat when the photo has few).
    size : int
        Side of the square model input, pixels.
    seed : int
        Seed of the object choice and the corruption.
    strength : float
        Corruption strength (boundary shift about ``strength x size / 40`` pixels).
    hold_out_gt : bool
        Remove each sample's ground-truth proposal from its proposals.
    max_area : float in (0, 1]
        Drop classical regions larger than this share of the image.

    Returns
    -------
    dict
        ``image`` (size, size, 3) uint8; ``pseudo`` and ``gt`` (samples, size, size) bool;
        ``proposals`` list of ``samples`` :class:`samrefine.Proposals` at (size, size);
        ``library`` the photo's full :class:`samrefine.Proposals` at (size, size).
    """
    from PIL import Image

    from .demo import corrupt_mask, pick_object
    from .demo import photo as _photo

    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16 (pixels), got {size!r}")
    if not 0.0 < max_area <= 1.0:
        raise ValueError(f"max_area must be in (0, 1], got {max_area!r}")
    rng = np.random.default_rng(seed)
    img = _photo(photo)
    library = _demo_library(photo).resize((size, size))
    library = library[library.area <= max_area * size * size]
    image = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    dense = library.to_dense()
    objs = [pick_object(library, rng) for _ in range(samples)]
    gt = dense[objs]
    pseudo = np.stack([corrupt_mask(g, rng, strength) for g in gt])
    keep = np.ones(len(library), bool)
    props = []
    for k in objs:
        if hold_out_gt:
            keep[:] = True
            keep[k] = False
            props.append(library[keep])
        else:
            props.append(library)
    return {"image": image, "pseudo": pseudo, "gt": gt, "proposals": props, "library": library}


# ------------------------------------------------------------------------------- CLI


def _load_proposals(path: str, data, n: int, hw) -> list[Proposals]:
    """Per-sample proposals from a .npz (dense + offsets) or .json (lists of COCO RLEs)."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if isinstance(raw, dict):
            raw = raw.get("proposals")
        if not isinstance(raw, list) or len(raw) != n:
            raise ValueError(f"{path}: expected a JSON list of {n} lists of COCO RLE dicts "
                             "(one list per sample), or {\"proposals\": [...]}")
        props = [Proposals.from_rle(r, size=None if r else hw) for r in raw]
    else:
        if data is None:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        if "proposals" not in data or "proposal_offsets" not in data:
            raise ValueError(f"{path}: needs arrays 'proposals' (M, h, w) bool and "
                             "'proposal_offsets' (B + 1,) int (sample b owns proposals["
                             "offsets[b]:offsets[b + 1]]); or pass --proposals FILE.json")
        masks, off = data["proposals"], np.asarray(data["proposal_offsets"], np.int64)
        if masks.ndim != 3:
            raise ValueError(f"{path}: 'proposals' must be (M, h, w), got {masks.shape}")
        if off.shape != (n + 1,) or off[0] != 0 or off[-1] != len(masks) or \
                np.any(np.diff(off) < 0):
            raise ValueError(f"{path}: 'proposal_offsets' must be ({n + 1},), non-decreasing, "
                             f"from 0 to {len(masks)}; got shape {off.shape}")
        library = Proposals.from_dense(masks)
        props = [library[off[b]:off[b + 1]] for b in range(n)]
    return [p if tuple(p.size) == tuple(hw) else p.resize(hw) for p in props]


def _library_proposals(path: str, data: dict, args, n: int, hw) -> list[Proposals]:
    """Proposals of ``data['image_ids']`` from a ProposalLibrary, resized to ``hw``."""
    from .library import ProposalLibrary

    if args.proposals:
        raise ValueError("pass either --proposals or --library, not both")
    if "image_ids" not in data:
        raise ValueError(f"{args.data}: --library needs an array 'image_ids' (B,) int, the "
                         "library image id of every sample")
    ids = np.asarray(data["image_ids"]).reshape(-1)
    if ids.shape != (n,) or ids.dtype.kind not in "iu":
        raise ValueError(f"{args.data}: 'image_ids' must be ({n},) integers, got {ids.dtype} "
                         f"{ids.shape}")
    with ProposalLibrary.open(path) as lib:
        missing = [int(i) for i in ids if int(i) not in lib]
        if missing:
            raise ValueError(f"{len(missing)} image id(s) are not in {path}, e.g. "
                             f"{missing[:5]}; check 'image_ids' or the library")
        return [lib[int(i)].resize(hw) for i in ids]


def _load_inputs(args) -> dict:
    if args.demo:
        if args.data:
            raise ValueError("pass either DATA or --demo, not both")
        d = demo_data(args.photo, samples=args.samples, size=args.size, seed=args.seed)
        return {"pseudo": d["pseudo"], "gt": d["gt"], "proposals": d["proposals"],
                "image": np.broadcast_to(d["image"], (len(d["pseudo"]), *d["image"].shape))}
    if not args.data:
        raise ValueError("give DATA (.npz with 'pseudo' and 'gt') or --demo")
    with np.load(args.data) as z:
        data = {k: z[k] for k in z.files}
    for key in ("pseudo", "gt"):
        if key not in data:
            raise ValueError(f"{args.data}: missing array {key!r}; it must hold 'pseudo' "
                             "(B, H, W) and 'gt' (B, H, W)")
    pseudo = data["pseudo"]
    if pseudo.ndim != 3:
        raise ValueError(f"{args.data}: 'pseudo' must be (B, H, W), got {pseudo.shape}")
    n, hw = pseudo.shape[0], pseudo.shape[1:]
    if getattr(args, "library", None):
        props = _library_proposals(args.library, data, args, n, hw)
    else:
        props = _load_proposals(args.proposals or args.data, None if args.proposals else data,
                                n, hw)
    image = data.get("image")
    if image is not None and (image.ndim != 4 or image.shape[0] != n or image.shape[3] != 3):
        raise ValueError(f"{args.data}: 'image' must be (B, h, w, 3) uint8, got {image.shape}")
    return {"pseudo": pseudo, "gt": data["gt"], "proposals": props, "image": image}


def _parse_list(text: str, cast=str):
    return tuple(cast(t) for t in text.split(",") if t.strip())


def _pick_show(report: AuditReport, strategy: str, n: int) -> list[int]:
    """Alternately the most negative and the most positive corrections of ``strategy``."""
    gain = report.iou_after[strategy] - report.iou_before
    order = np.argsort(gain, kind="stable")
    out: list[int] = []
    lo, hi = 0, len(order) - 1
    while len(out) < min(n, len(order)):
        out.append(int(order[lo]))
        lo += 1
        if len(out) < n and lo <= hi:
            out.append(int(order[hi]))
            hi -= 1
        if lo > hi:
            break
    return out


def _cmd_audit(args) -> int:
    import os

    inp = _load_inputs(args)
    strategies = _parse_list(args.strategies)
    sweep = None if args.sweep.lower() == "none" else _parse_list(args.sweep, float)
    report = audit(inp["pseudo"], inp["proposals"], inp["gt"], strategies, sweep=sweep,
                   iom_thresh=args.iom_thresh, under=args.under, over=args.over,
                   prob_thresh=args.prob_thresh, batch_size=args.batch_size,
                   progress=False if args.no_progress else None)
    print(report.table(sweep=args.all_sweep))
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "audit.json")
    report.to_json(json_path, per_sample=args.per_sample)
    written = [json_path]
    from . import viz

    bars = os.path.join(args.out, "corrections.png")
    viz.audit_bars(report, bars)
    written.append(bars)
    if args.show:
        show = _parse_list(args.show_strategies) if args.show_strategies else \
            tuple(s for s in ("iom", "cpi") if s in strategies) or strategies[:2]
        if show[-1] not in report.iou_after:
            raise ValueError(f"--show-strategies {','.join(show)}: the last one picks the "
                             f"samples and must be audited (--strategies {','.join(strategies)})")
        pseudo = to_numpy(inp["pseudo"])
        for i in _pick_show(report, show[-1], args.show):
            path = os.path.join(args.out, f"sample_{i:05d}.png")
            p = pseudo[i] > args.prob_thresh if args.prob_thresh is not None else pseudo[i]
            image = None if inp["image"] is None else inp["image"][i]
            viz.overlay_refinement(image, p, inp["proposals"][i], path, show, gt=inp["gt"][i],
                                   iom_thresh=args.iom_thresh, under=args.under, over=args.over,
                                   title=f"sample {i}")
            written.append(path)
    print("\nwrote " + ", ".join(written))
    return 0


def add_cli(sub) -> None:
    """Register ``samrefine audit`` on an ``argparse`` sub-parser collection."""
    a = sub.add_parser(
        "audit", help="count positive/negative corrections per strategy against ground truth",
        description="Refine pseudo-labels with every strategy, compare with the ground truth, "
        "sweep the thresholds and recommend values. DATA is an .npz with 'pseudo' (B, H, W) "
        "{0,1} or probabilities (with --prob-thresh), 'gt' (B, H, W) {0,1}, optional 'image' "
        "(B, h, w, 3) uint8 and, unless --proposals or --library is given, 'proposals' "
        "(M, h, w) bool with 'proposal_offsets' (B + 1,). Writes OUT/audit.json, "
        "OUT/corrections.png and, with "
        "--show N, OUT/sample_*.png overlays.")
    a.add_argument("data", nargs="?", metavar="DATA", help="input .npz (see above)")
    a.add_argument("--proposals", metavar="FILE",
                   help="proposals: .npz ('proposals' + 'proposal_offsets') or .json (a list "
                   "per sample of COCO RLE dicts); resized (nearest) to the pseudo-label size")
    a.add_argument("--library", metavar="PATH",
                   help="a ProposalLibrary (file, shard glob or folder); DATA then needs "
                   "'image_ids' (B,) and proposals are resized (nearest) to the pseudo-labels")
    a.add_argument("--demo", action="store_true",
                   help="audit generated data: a real photo, classical proposals, corrupted "
                   "objects (no files needed)")
    a.add_argument("--photo", default="coffee", help="--demo photo (skimage.data name)")
    a.add_argument("--samples", type=int, default=24, help="--demo samples (default 24)")
    a.add_argument("--size", type=int, default=256, help="--demo input size (default 256)")
    a.add_argument("--seed", type=int, default=0, help="--demo seed")
    a.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated (default iom,cpi,cpi-u,cpi-o)")
    a.add_argument("--iom-thresh", type=float, default=_config.IOM_THRESH)
    a.add_argument("--under", type=float, default=_config.CPI_UNDER,
                   help="CPI s1 threshold (CPI, CPI-U)")
    a.add_argument("--over", type=float, default=_config.CPI_OVER,
                   help="CPI s2 threshold (CPI, CPI-O)")
    a.add_argument("--sweep", default=",".join(f"{v:g}" for v in DEFAULT_SWEEP),
                   help="threshold grid, comma-separated, or 'none'")
    a.add_argument("--prob-thresh", type=float, default=None,
                   help="pseudo holds probabilities: foreground is p > this")
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--out", default="samrefine-audit", help="output directory")
    a.add_argument("--show", type=int, default=0, metavar="N",
                   help="write overlays of N samples (alternately the worst and best "
                   "corrections of the last --show-strategies entry)")
    a.add_argument("--show-strategies", default=None,
                   help="strategies in the overlays (default iom,cpi)")
    a.add_argument("--all-sweep", action="store_true", help="print every sweep row")
    a.add_argument("--per-sample", action="store_true",
                   help="add per-sample IoUs and categories to audit.json")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_audit)
