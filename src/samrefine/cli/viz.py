"""``samrefine viz overlay | grid``: refinement overlays (Fig. 5) and proposal grids."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..demo import demo_data
from ..library import ProposalLibrary
from ..viz import overlay_refinement, proposal_grid
from ._common import add_threshold_args, parse_list
from .inputs import load_inputs, load_single_proposals

__all__ = ["add_parser"]


def _cmd_overlay(args: argparse.Namespace) -> int:
    inp = load_inputs(args)
    n = len(inp["pseudo"])
    idx = parse_list(args.index, int) if args.index else tuple(range(min(n, 4)))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"--index {bad} out of range: the data has {n} samples (0..{n - 1})")
    strategies = parse_list(args.strategies)
    for i in idx:
        p = inp["pseudo"][i]
        if args.prob_thresh is not None:
            p = p > args.prob_thresh
        image = None if inp["image"] is None else inp["image"][i]
        path = os.path.join(args.out, f"overlay_{i:05d}.png")
        overlay_refinement(
            image,
            p,
            inp["proposals"][i],
            path,
            strategies,
            gt=inp["gt"][i],
            iom_thresh=args.iom_thresh,
            under=args.under,
            over=args.over,
            panel=args.panel,
            title=f"sample {i}",
        )
        print(path)
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    if args.demo:
        d = demo_data(args.photo, samples=1, size=args.size, seed=args.seed)
        image, props = d["image"], d["library"]
    else:
        if not args.proposals and not args.library:
            raise ValueError(
                "give --proposals FILE (.npz or .json), --library PATH with --image-id, or --demo"
            )
        image = None
        if args.image:
            from PIL import Image  # optional extra

            image = np.asarray(Image.open(args.image).convert("RGB"))
        hw = None if image is None else image.shape[:2]
        if args.library:
            if args.image_id is None:
                raise ValueError("--library needs --image-id ID")
            with ProposalLibrary.open(args.library) as lib:
                props = lib[args.image_id]
        else:
            props = load_single_proposals(args.proposals, args.index, hw)
    path = os.path.join(args.out, "proposals.png")
    proposal_grid(
        image,
        props,
        path,
        max_masks=args.max_masks,
        cols=args.cols,
        panel=args.panel,
        order=args.order,
    )
    print(path)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``samrefine viz overlay|grid``."""
    v = sub.add_parser(
        "viz",
        help="pictures: refinement overlays (Fig. 5) and proposal grids",
        description="Write PNG pictures of refinement and of proposals.",
    )
    vs = v.add_subparsers(dest="viz_command", required=True, metavar="PICTURE")
    o = vs.add_parser(
        "overlay",
        help="image | pseudo-label | selected proposals and refined mask per strategy",
        description="DATA is the .npz of 'samrefine audit' ('pseudo', 'gt', optional 'image', "
        "'proposals' + 'proposal_offsets' unless --proposals). Writes OUT/overlay_<i>.png.",
    )
    o.add_argument("data", nargs="?", metavar="DATA")
    o.add_argument("--proposals", metavar="FILE", help="as in 'samrefine audit'")
    o.add_argument("--library", metavar="PATH", help="as in 'samrefine audit'")
    o.add_argument("--demo", action="store_true", help="use generated demo data")
    o.add_argument("--photo", default="coffee")
    o.add_argument("--samples", type=int, default=4)
    o.add_argument("--size", type=int, default=256)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument(
        "--index", default=None, help="comma-separated sample indices (default the first four)"
    )
    o.add_argument("--strategies", default="iom,cpi")
    add_threshold_args(o)
    o.add_argument("--prob-thresh", type=float, default=None)
    o.add_argument("--panel", type=int, default=256, help="panel size, pixels")
    o.add_argument("--out", default="samrefine-viz", help="output directory")
    o.set_defaults(func=_cmd_overlay)
    g = vs.add_parser(
        "grid",
        help="every proposal of one image",
        description="Write OUT/proposals.png: all proposals, then one panel per proposal.",
    )
    g.add_argument(
        "--proposals",
        metavar="FILE",
        help=".json (a list of COCO RLE dicts, or one list per sample) or .npz "
        "('proposals' (N, h, w), optionally 'proposal_offsets')",
    )
    g.add_argument("--library", metavar="PATH", help="a ProposalLibrary; with --image-id")
    g.add_argument("--image-id", type=int, help="the library image to show")
    g.add_argument("--index", type=int, default=0, help="sample, when FILE holds several")
    g.add_argument("--image", metavar="FILE", help="the image (PNG/JPEG), any size")
    g.add_argument("--demo", action="store_true", help="a demo photo's classical proposals")
    g.add_argument("--photo", default="coffee")
    g.add_argument("--size", type=int, default=256)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-masks", type=int, default=47)
    g.add_argument("--cols", type=int, default=8)
    g.add_argument("--panel", type=int, default=128)
    g.add_argument("--order", choices=("area", "index"), default="area")
    g.add_argument("--out", default="samrefine-viz", help="output directory")
    g.set_defaults(func=_cmd_grid)
