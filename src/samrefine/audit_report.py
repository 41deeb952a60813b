"""What :func:`samrefine.audit` returns: per-strategy correction counts and IoUs, the threshold
sweep, the recommendation, and the report as text or JSON.

The categories and IoUs are defined in :mod:`samrefine.auditing`, which computes them.

Contents: :class:`AuditReport`, :class:`StrategyStats`, :data:`CATEGORIES`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from .match import STRATEGIES

__all__ = ["CATEGORIES", "AuditReport", "StrategyStats"]

#: Per-sample category names, indexed by the codes in :attr:`AuditReport.category`.
CATEGORIES = ("positive", "negative", "tie", "no_correction")


@dataclass
class StrategyStats:
    """Correction counts and IoUs of one strategy at one threshold setting.

    Attributes
    ----------
    strategy : str
        ``"iom"``, ``"cpi"``, ``"cpi-u"`` or ``"cpi-o"``.
    thresholds : dict of str to float or None
        The thresholds used, those the strategy reads (:data:`samrefine.STRATEGIES`): e.g.
        ``{"iom_thresh": 0.5}`` for IOM, ``{"under": 0.7}`` for CPI-U; ``refine(...,
        strategy, **thresholds)`` repeats the setting.
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
            defaults = STRATEGIES[s.strategy].defaults
            dist = sum(abs(v - defaults[k]) for k, v in s.thresholds.items() if v is not None)
            return (-getattr(s, key), s.negative, dist)

        per = {}
        for name in dict.fromkeys(r.strategy for r in rows):
            best = min((r for r in rows if r.strategy == name), key=rank)
            per[name] = {
                "thresholds": best.thresholds,
                "after": getattr(best, key),
                "negative": best.negative,
                "match_rate": best.match_rate,
            }
        top = min(rows, key=rank)
        note = (
            "few samples (< 100): the recommendation is noisy"
            if self.n_samples < 100
            else "chosen on the audited samples; confirm on held-out data"
        )
        return {
            "strategy": top.strategy,
            "thresholds": top.thresholds,
            "objective": objective,
            "before": getattr(top, f"{objective}_before"),
            "after": getattr(top, key),
            "per_strategy": per,
            "n_samples": self.n_samples,
            "note": note,
        }

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
                "category": {k: [CATEGORIES[c] for c in v] for k, v in self.category.items()},
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
        head = (
            f"{'strategy':<8} {'thresholds':<19} {'positive':>8} {'negative':>8} "
            f"{'tie':>5} {'no-corr':>7} {'matched':>7} {'mIoU bef':>8} {'mIoU aft':>8} "
            f"{'oIoU bef':>8} {'oIoU aft':>8}"
        )

        def line(s: StrategyStats) -> str:
            return (
                f"{s.strategy:<8} {_fmt_thresh(s.thresholds):<19} {s.positive:>8} "
                f"{s.negative:>8} {s.tie:>5} {s.no_correction:>7} {s.match_rate:>7.1%} "
                f"{s.miou_before:>8.4f} {s.miou_after:>8.4f} {s.oiou_before:>8.4f} "
                f"{s.oiou_after:>8.4f}"
            )

        out = [
            (
                f"audit of {self.n_samples} samples (no-corr = unmatched, left to PWA; "
                "tie = matched, IoU unchanged)"
            ),
            head,
            "-" * len(head),
        ]
        out += [line(s) for s in self.strategies.values()]
        if self.sweep:
            rec = self.recommend()
            best = [
                next(
                    r for r in self.sweep if r.strategy == name and r.thresholds == v["thresholds"]
                )
                for name, v in rec["per_strategy"].items()
            ]
            out += [
                "",
                "best setting per strategy (threshold sweep, by mean IoU after)",
                head,
                "-" * len(head),
            ]
            out += [line(s) for s in best]
            if sweep:
                out += ["", f"all {len(self.sweep)} sweep settings", head, "-" * len(head)]
                out += [line(s) for s in self.sweep]
            out += [
                "",
                (
                    f"recommended: {rec['strategy']} {_fmt_thresh(rec['thresholds'])} "
                    f"(mean IoU {rec['before']:.4f} -> {rec['after']:.4f}; {rec['note']})"
                ),
            ]
        return "\n".join(out)


def _fmt_thresh(t: dict) -> str:
    return " ".join(f"{k.replace('_thresh', '')}={v:g}" for k, v in t.items() if v is not None)
