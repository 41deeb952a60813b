"""The ``samrefine`` command line. ``samrefine --help`` lists the commands."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.photo, size=args.size, samples=args.samples, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samrefine", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="refine corrupted pseudo-labels on a real photo; print a table")
    d.add_argument("--photo", default="coffee", help="skimage.data photo name (default coffee)")
    d.add_argument("--size", type=int, default=480, help="model input size (default 480)")
    d.add_argument("--samples", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"samrefine {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
