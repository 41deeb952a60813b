"""``samrefine demo``: refine corrupted pseudo-labels on a real photo and print a table."""

from __future__ import annotations

import argparse

from ..demo import run_demo

__all__ = ["add_parser"]


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.photo, size=args.size, samples=args.samples, seed=args.seed)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``samrefine demo``."""
    d = sub.add_parser("demo", help="refine corrupted pseudo-labels on a real photo; print a table")
    d.add_argument("--photo", default="coffee", help="skimage.data photo name (default coffee)")
    d.add_argument("--size", type=int, default=480, help="model input size (default 480)")
    d.add_argument("--samples", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
