"""Helpers shared by the ``samrefine`` commands: list and callable arguments, error lines."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from .. import _config
from ..match import STRATEGIES

__all__ = [
    "error_line",
    "install_hint",
    "load_callable",
    "one_or_many",
    "parse_list",
    "show_progress",
    "strategies_reading",
]

#: Top-level module -> the ``samrefine`` extra that installs it (``pyproject.toml``).
EXTRA_OF_MODULE = {
    "segment_anything": "sam",
    "cv2": "sam",
    "torchvision": "sam",
    "sam2": "sam2",
    "skimage": "classical",
    "scipy": "classical",
    "timm": "example",
    "transformers": "example",
    "yaml": "example",
    "matplotlib": "docs",
}
#: Top-level module -> pip package, for modules several extras share.
PACKAGE_OF_MODULE = {"PIL": "pillow"}

#: Python-API wording in library messages -> the flag a command-line user passes instead.
#: Library messages name the Python argument exactly as written here (a test checks that
#: every such argument in ``src/samrefine/library`` has an entry and that each flag exists in
#: the commands that can raise it), so a message reads right from both sides.
FLAG_FOR = {
    "if_exists='resume'": "--resume",
    "if_exists='overwrite'": "--overwrite",
    "allow_partial=True": "--allow-partial",
    "fail_fast=0": "--fail-fast 0",
    "shard='i/n'": "--shard i/n",
    "pass sizes={image_key: (H, W)}": "pass --instances instances.json (the image sizes)",
}


def strategies_reading(threshold: str) -> str:
    """``"cpi, cpi-u"``: the strategies that read ``threshold`` (for help texts)."""
    return ", ".join(name for name, s in STRATEGIES.items() if threshold in s.thresholds)


def show_progress(args: argparse.Namespace) -> bool:
    """Draw a progress bar: unless ``--no-progress``, and only on a terminal (a bar redrawn
    with carriage returns fills a log file with lines)."""
    return not args.no_progress and sys.stderr.isatty()


def parse_list(text: str, cast: Callable[[str], Any] = str) -> tuple[Any, ...]:
    """``"a,b,,c"`` -> ``(cast("a"), cast("b"), cast("c"))``."""
    return tuple(cast(t.strip()) for t in text.split(",") if t.strip())


def one_or_many(items: list[str]) -> str | list[str]:
    """One path as itself (it may be a glob pattern), several as a list."""
    return items[0] if len(items) == 1 else items


def load_callable(spec: str, flag: str) -> Callable[..., Any]:
    """The callable named by ``module.path:attr`` or ``path/to/file.py:attr``.

    Parameters
    ----------
    spec : str
        What the user passed.
    flag : str
        The option it came from (named in error messages), e.g. ``"--model-factory"``.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"{flag} takes MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise FileNotFoundError(f"{flag}: file {target} does not exist")
        name = "_samrefine_user_" + re.sub(r"\W", "_", os.path.splitext(target)[0])
        file_spec = importlib.util.spec_from_file_location(name, target)
        if file_spec is None or file_spec.loader is None:
            raise ImportError(f"{flag}: cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TypeError(f"{flag} {spec}: {attr} is not a callable in {target}")
    return fn


def install_hint(exc: ModuleNotFoundError) -> str | None:
    """``pip install ...`` for a missing optional package, or None when it is not ours."""
    top = (exc.name or "").split(".")[0]
    if top in EXTRA_OF_MODULE:
        return f'pip install "samrefine[{EXTRA_OF_MODULE[top]}]"'
    if top in PACKAGE_OF_MODULE:
        return f"pip install {PACKAGE_OF_MODULE[top]}"
    return None


def error_line(exc: BaseException) -> str:
    """The one-line reason printed after ``samrefine COMMAND: error:``."""
    if isinstance(exc, KeyError):
        msg = str(exc.args[0]) if exc.args else repr(exc)
    else:
        msg = str(exc) or type(exc).__name__
    if isinstance(exc, ModuleNotFoundError):
        hint = install_hint(exc)
        if hint:
            msg = f"{msg}: an optional dependency is missing; install it with: {hint}"
    for words, flag in FLAG_FOR.items():
        msg = msg.replace(words, flag)
    return " ".join(msg.split())


def add_threshold_args(parser: argparse.ArgumentParser) -> None:
    """``--iom-thresh``, ``--under`` and ``--over`` (floats in [0, 1], the paper's defaults),
    each help naming the strategies that read it (shared by ``audit`` and ``viz overlay``)."""
    for flag, default, what, name in (
        ("--iom-thresh", _config.IOM_THRESH, "IoU threshold", "iom_thresh"),
        ("--under", _config.CPI_UNDER, "s1 threshold", "under"),
        ("--over", _config.CPI_OVER, "s2 threshold", "over"),
    ):
        parser.add_argument(
            flag, type=float, default=default, help=f"{what}, read by {strategies_reading(name)}"
        )
