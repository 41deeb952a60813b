"""The ``samrefine`` command line. ``samrefine --help`` lists the commands.

Every command prints one line ``samrefine <command>: error: <reason>`` and exits with status 2
when it cannot do its work; ``verify`` exits 1 when a library is damaged and ``build`` exits 1
when some images failed (the library is then left resumable).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from . import audit, demo, library, viz
from ._common import error_line

__all__ = ["build_parser", "main"]

# errors reported as one line (anything else is a bug: its traceback is shown)
_REPORTED = (KeyError, ValueError, TypeError, OSError, RuntimeError, ImportError, sqlite3.Error)


def build_parser() -> argparse.ArgumentParser:
    """The ``samrefine`` argument parser with every command."""
    p = argparse.ArgumentParser(prog="samrefine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub)
    library.add_parsers(sub)
    audit.add_parser(sub)
    viz.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samrefine`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _REPORTED as e:
        print(f"samrefine {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
