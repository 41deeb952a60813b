"""``samrefine audit``: correction counts per strategy against ground truth, with pictures.

With ``--semantic`` the pseudo-labels and ground truth are integer class maps, audited by
:func:`samrefine.audit_semantic` (per-class IoU, corrections per (image, class)).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from ..audit_report import AuditReport
from ..auditing import DEFAULT_STRATEGIES, DEFAULT_SWEEP, audit
from ..semantic_audit import audit_semantic
from ..viz import audit_bars, overlay_refinement
from ._common import add_threshold_args, parse_list
from .inputs import load_inputs

__all__ = ["add_parser"]


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


def _cmd_audit(args: argparse.Namespace) -> int:
    if args.semantic:
        return _cmd_audit_semantic(args)
    for flag in ("num_classes", "skip_classes"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} is for label maps; add --semantic")
    inp = load_inputs(args)
    strategies = parse_list(args.strategies)
    sweep_text = args.sweep if args.sweep is not None else ",".join(f"{v:g}" for v in DEFAULT_SWEEP)
    sweep = None if sweep_text.lower() == "none" else parse_list(sweep_text, float)
    report = audit(
        inp["pseudo"],
        inp["proposals"],
        inp["gt"],
        strategies,
        sweep=sweep,
        iom_thresh=args.iom_thresh,
        under=args.under,
        over=args.over,
        prob_thresh=args.prob_thresh,
        batch_size=args.batch_size,
        progress=False if args.no_progress else None,
    )
    print(report.table(sweep=args.all_sweep))
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "audit.json")
    report.to_json(json_path, per_sample=args.per_sample)
    written = [json_path]
    bars = os.path.join(args.out, "corrections.png")
    audit_bars(report, bars)
    written.append(bars)
    if args.show:
        show = (
            parse_list(args.show_strategies)
            if args.show_strategies
            else tuple(s for s in ("iom", "cpi") if s in strategies) or strategies[:2]
        )
        if show[-1] not in report.iou_after:
            raise ValueError(
                f"--show-strategies {','.join(show)}: the last one picks the "
                f"samples and must be audited (--strategies {','.join(strategies)})"
            )
        pseudo = np.asarray(inp["pseudo"])
        for i in _pick_show(report, show[-1], args.show):
            path = os.path.join(args.out, f"sample_{i:05d}.png")
            p = pseudo[i] > args.prob_thresh if args.prob_thresh is not None else pseudo[i]
            image = None if inp["image"] is None else inp["image"][i]
            overlay_refinement(
                image,
                p,
                inp["proposals"][i],
                path,
                show,
                gt=inp["gt"][i],
                iom_thresh=args.iom_thresh,
                under=args.under,
                over=args.over,
                title=f"sample {i}",
            )
            written.append(path)
    print("\nwrote " + ", ".join(written))
    return 0


def _cmd_audit_semantic(args: argparse.Namespace) -> int:
    """``--semantic``: per-class IoU and corrections of class maps (audit_semantic)."""
    if args.demo:
        raise ValueError("--demo generates binary masks; --semantic audits class maps from DATA")
    binary_only = {
        "--prob-thresh": args.prob_thresh is not None,
        "--sweep": args.sweep,
        "--show": args.show,
        "--show-strategies": args.show_strategies,
        "--all-sweep": args.all_sweep,
        "--per-sample": args.per_sample,
    }
    given = [flag for flag, v in binary_only.items() if v]
    if given:
        raise ValueError(f"{', '.join(given)}: for binary pseudo-labels only, not with --semantic")
    if args.num_classes is None:
        raise ValueError(
            "--semantic needs --num-classes K (classes 0..K-1; other values "
            "than --ignore-index are an error)"
        )
    inp = load_inputs(args)
    skip = parse_list(args.skip_classes, int) if args.skip_classes else ()
    report = audit_semantic(
        inp["pseudo"],
        inp["proposals"],
        inp["gt"],
        num_classes=args.num_classes,
        strategies=parse_list(args.strategies),
        per=args.per,
        ignore_index=args.ignore_index,
        skip_classes=skip,
        give_up=args.give_up,
        iom_thresh=args.iom_thresh,
        under=args.under,
        over=args.over,
    )
    print(report.table())
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "audit.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(report.to_dict(), f, indent=2)
    print(f"\nwrote {json_path}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``samrefine audit``."""
    a = sub.add_parser(
        "audit",
        help="count positive/negative corrections per strategy against ground truth",
        description="Refine pseudo-labels with every strategy, compare with the ground truth, "
        "sweep the thresholds and recommend values. DATA is an .npz with 'pseudo' (B, H, W) "
        "{0,1} or probabilities (with --prob-thresh), 'gt' (B, H, W) {0,1}, optional 'image' "
        "(B, h, w, 3) uint8 and, unless --proposals or --library is given, 'proposals' "
        "(M, h, w) bool with 'proposal_offsets' (B + 1,). Writes OUT/audit.json, "
        "OUT/corrections.png and, with "
        "--show N, OUT/sample_*.png overlays. With --semantic, 'pseudo' and 'gt' are integer "
        "class maps (B, H, W) and only OUT/audit.json is written (per-class IoU, corrections "
        "per image and class).",
    )
    a.add_argument("data", nargs="?", metavar="DATA", help="input .npz (see above)")
    a.add_argument(
        "--proposals",
        metavar="FILE",
        help="proposals: .npz ('proposals' + 'proposal_offsets') or .json (a list "
        "per sample of COCO RLE dicts); resized (nearest) to the pseudo-label size",
    )
    a.add_argument(
        "--library",
        metavar="PATH",
        help="a ProposalLibrary (file, shard glob or folder); DATA then needs "
        "'image_ids' (B,) and proposals are resized (nearest) to the pseudo-labels",
    )
    a.add_argument(
        "--demo",
        action="store_true",
        help="audit generated data: a real photo, classical proposals, corrupted "
        "objects (no files needed)",
    )
    a.add_argument("--photo", default="coffee", help="--demo photo (skimage.data name)")
    a.add_argument("--samples", type=int, default=24, help="--demo samples (default 24)")
    a.add_argument("--size", type=int, default=256, help="--demo input size (default 256)")
    a.add_argument("--seed", type=int, default=0, help="--demo seed")
    a.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help="comma-separated (default %(default)s)",
    )
    add_threshold_args(a)
    a.add_argument(
        "--sweep",
        default=None,
        help="threshold grid, comma-separated, or 'none' (default "
        + ",".join(f"{v:g}" for v in DEFAULT_SWEEP)
        + "; binary pseudo-labels only)",
    )
    a.add_argument(
        "--prob-thresh",
        type=float,
        default=None,
        help="pseudo holds probabilities: foreground is p > this",
    )
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--out", default="samrefine-audit", help="output directory")
    a.add_argument(
        "--show",
        type=int,
        default=0,
        metavar="N",
        help="write overlays of N samples (alternately the worst and best "
        "corrections of the last --show-strategies entry)",
    )
    a.add_argument(
        "--show-strategies", default=None, help="strategies in the overlays (default iom,cpi)"
    )
    a.add_argument("--all-sweep", action="store_true", help="print every sweep row")
    a.add_argument(
        "--per-sample", action="store_true", help="add per-sample IoUs and categories to audit.json"
    )
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = a.add_argument_group("label maps (semantic segmentation)")
    s.add_argument(
        "--semantic",
        action="store_true",
        help="'pseudo' and 'gt' are integer class maps: audit with audit_semantic",
    )
    s.add_argument(
        "--num-classes",
        type=int,
        default=None,
        metavar="K",
        help="classes 0..K-1 (required with --semantic)",
    )
    s.add_argument(
        "--ignore-index",
        type=int,
        default=255,
        help="void label of the class maps (default %(default)s)",
    )
    s.add_argument(
        "--skip-classes",
        default=None,
        metavar="C,...",
        help="classes not refined, comma-separated, e.g. 0 for background",
    )
    s.add_argument(
        "--per",
        choices=("class", "component"),
        default="class",
        help="one region per class of an image, or per 8-connected component",
    )
    s.add_argument(
        "--give-up",
        choices=("ignore", "keep"),
        default="ignore",
        help="label of pixels a matched region gives up (default %(default)s)",
    )
    a.set_defaults(func=_cmd_audit)
