"""The ``samrefine`` command line. ``samrefine --help`` lists the commands.

Every command prints one line ``samrefine <command>: error: <reason>`` and exits with status 2
when it cannot do its work; ``verify`` exits 1 when a library is damaged and ``build`` exits 1
when some images failed (the library is then left resumable). A missing optional package names
the ``pip install "samrefine[...]"`` that provides it. When the reader of the output goes away
(``samrefine info --json | head``) the command stops quietly with status 141, as Unix tools
killed by SIGPIPE do.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence

from .. import __version__
from . import audit, demo, library, viz
from ._common import error_line

__all__ = ["build_parser", "main"]

#: Exit status after the output pipe closed early (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
# errors reported as one line (anything else is a bug: its traceback is shown)
_REPORTED = (KeyError, ValueError, TypeError, OSError, RuntimeError, ImportError, sqlite3.Error)


def build_parser() -> argparse.ArgumentParser:
    """The ``samrefine`` argument parser with every command."""
    p = argparse.ArgumentParser(
        prog="samrefine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"samrefine {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub)
    library.add_parsers(sub)
    audit.add_parser(sub)
    viz.add_parser(sub)
    return p


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (e.g. captured)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samrefine`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except _REPORTED as e:
        print(f"samrefine {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
