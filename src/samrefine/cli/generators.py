"""Which generator ``samrefine build`` runs, and checking its ``--param KEY=VALUE`` settings.

``--generator`` names a registered generator (``sam``, ``sam2``, ``classical``), a factory
``package.module:callable`` or ``path/to/file.py:callable`` (the library records that text as
its generator), or an installed entry point of the group :data:`ENTRY_POINT_GROUP`, e.g. in a
plug-in's ``pyproject.toml``::

    [project.entry-points."samrefine.generators"]
    mine = "my_package.generators:mine"

A factory takes the generator's parameters as keyword arguments and returns a
:class:`~samrefine.library.Generator` or a callable ``image -> masks`` (see
:func:`~samrefine.library.register_generator`). Factories loaded here are not added to the
process-wide registry.

``--param`` values are JSON (``max_masks=50``, ``scales=[64,256]``, ``output_mode=coco_rle``;
a value that is not JSON is a string). Before any model is loaded or image read, every value is
checked against the generator's parameters: unknown names, wrong types and values out of range
(:data:`RULES`, from what the generators do with each value) are errors that name the parameter
and what it accepts. Parameters of a user's factory are checked by name and by the type of
their default or annotation.
"""

from __future__ import annotations

import inspect
import json
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..library.generate import Generator, get_generator, list_generators
from ._common import load_callable

__all__ = [
    "ENTRY_POINT_GROUP",
    "RULES",
    "Rule",
    "check_params",
    "make_generator",
    "parse_params",
    "resolve_generator",
]

#: Entry-point group in which installed packages register generator factories.
ENTRY_POINT_GROUP = "samrefine.generators"


@dataclass(frozen=True)
class Rule:
    """What one generator parameter accepts.

    Attributes
    ----------
    kind : {"int", "float", "bool", "str", "list"}
        JSON type (``float`` accepts integers; ``bool`` is never an ``int`` here).
    lo, hi : float, optional
        Bounds of a number (or of every list item); ``lo_open`` / ``hi_open`` make them strict.
    choices : tuple of str, optional
        The allowed strings.
    item : {"int", "float"}, optional
        Type of the items of a list.
    empty : bool
        Whether a list may be empty.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    item: str | None = None
    empty: bool = False

    def describe(self) -> str:
        """The accepted values in words, e.g. ``"an int >= 1"``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = {
            "int": "an int",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "list": f"a list of {'ints' if self.item == 'int' else 'numbers'}",
        }[self.kind]
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {self.lo:g}"
        return what

    def check(self, name: str, value: Any) -> Any:
        """``value`` converted to the rule's type; ValueError naming ``name`` if it does not fit."""
        bad = ValueError(f"--param {name}={json.dumps(value)}: {name} must be {self.describe()}")
        if self.kind == "list":
            if not isinstance(value, list) or (not value and not self.empty):
                raise bad
            return [self._number(v, self.item or "float", bad) for v in value]
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        return self._number(value, self.kind, bad)

    def _number(self, v: Any, kind: str, bad: ValueError) -> int | float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise bad
        if kind == "int":
            if not isinstance(v, numbers.Integral):
                raise bad
            v = int(v)
        else:
            v = float(v)
            if v != v:  # NaN
                raise bad
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise bad
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise bad
        return v


_UNIT = Rule("float", 0.0, 1.0)
_COUNT = Rule("int", 1)
_NON_NEGATIVE_INT = Rule("int", 0)
# Parameters of the automatic mask generators of segment-anything and sam2 (their meaning in
# SamAutomaticMaskGenerator's docstring), and the generator factories' own settings.
_AMG = {
    "points_per_side": _COUNT,
    "points_per_batch": _COUNT,
    "pred_iou_thresh": _UNIT,
    "stability_score_thresh": _UNIT,
    "stability_score_offset": Rule("float", 0.0),
    "mask_threshold": Rule("float"),
    "box_nms_thresh": _UNIT,
    "crop_n_layers": _NON_NEGATIVE_INT,
    "crop_nms_thresh": _UNIT,
    "crop_overlap_ratio": Rule("float", 0.0, 1.0, hi_open=True),
    "crop_n_points_downscale_factor": _COUNT,
    "min_mask_region_area": _NON_NEGATIVE_INT,
    "output_mode": Rule("str", choices=("binary_mask", "uncompressed_rle", "coco_rle")),
    "use_m2m": Rule("bool"),
    "multimask_output": Rule("bool"),
    "checkpoint": Rule("str"),
    "device": Rule("str"),
}
#: Parameter rules of the built-in generators: generator -> parameter -> :class:`Rule`.
RULES: dict[str, dict[str, Rule]] = {
    "sam": {**_AMG, "model_type": Rule("str", choices=("vit_h", "vit_l", "vit_b"))},
    "sam2": {**_AMG, "config": Rule("str")},
    # samrefine.library.classical.classical_proposals; the same ranges as the library's own
    # check of these parameters (on the 'library' branch), which also needs one label map
    "classical": {
        "scales": Rule("list", 0.0, lo_open=True, item="float", empty=True),
        "slic_segments": Rule("list", 1, item="int", empty=True),
        "min_area_frac": Rule("float", 0.0, 1.0, hi_open=True),
        "max_masks": _COUNT,
        "smooth_radius": _NON_NEGATIVE_INT,
        "dedup_iou": Rule("float", 0.0, 1.0, lo_open=True),
        "seed": Rule("int"),
    },
}
# set only from Python (arrays, model objects) or by a dedicated flag
_NOT_ON_COMMAND_LINE = {
    "point_grids": "the Python API (a list of arrays)",
    "model": "--model-factory MODULE:FUNCTION",
}


def parse_params(items: Iterable[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: json.loads(v) or the string v}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"--param {key} is given twice")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def resolve_generator(name: str) -> tuple[str, Callable[..., Any] | None]:
    """``(name, factory)``: factory None for a registered name, else the callable that
    ``module:callable`` or the entry point ``name`` loads."""
    if ":" in name:
        return name, load_callable(name, "--generator")
    if name in list_generators():
        return name, None
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    if found:
        return name, found[0].load()
    raise KeyError(
        f"unknown generator {name!r}; registered: {', '.join(list_generators())}; "
        f"or give MODULE:FACTORY, FILE.py:FACTORY, or install a package with an "
        f"entry point in the group {ENTRY_POINT_GROUP!r}"
    )


def _builtin_signature(name: str) -> dict[str, inspect.Parameter]:
    """Parameters of a built-in generator: its factory's settings and its model's."""
    if name == "classical":
        from ..library.classical import classical_proposals

        params = dict(inspect.signature(classical_proposals).parameters)
        params.pop("image")
        return params
    if name == "sam":
        from segment_anything import SamAutomaticMaskGenerator as amg
    else:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as amg
    params = {
        k: p
        for k, p in inspect.signature(amg.__init__).parameters.items()
        if k not in ("self", "model", "kwargs")
    }
    for own in ("checkpoint", "device", "model_type" if name == "sam" else "config"):
        params[own] = inspect.Parameter(
            own, inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str"
        )
    return params


def _rule_from_signature(p: inspect.Parameter) -> Rule | None:
    """A type-only rule from a parameter's default (or plain annotation); None if unknown."""
    d = p.default
    if isinstance(d, bool):
        return Rule("bool")
    if isinstance(d, numbers.Integral):
        return Rule("int")
    if isinstance(d, numbers.Real):
        return Rule("float")
    if isinstance(d, str):
        return Rule("str")
    if isinstance(d, (list, tuple)) and d and all(isinstance(v, numbers.Real) for v in d):
        return Rule("list", item="int" if all(isinstance(v, int) for v in d) else "float")
    if d is not None and d is not inspect.Parameter.empty:
        return None
    ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
    return {
        "int": Rule("int"),
        "float": Rule("float"),
        "bool": Rule("bool"),
        "str": Rule("str"),
    }.get(str(ann))


def check_params(
    generator: str, factory: Callable[..., Any] | None, params: Mapping[str, Any]
) -> dict[str, Any]:
    """``params`` checked against the generator's parameters, values converted.

    Parameters
    ----------
    generator : str
        The registry name (see :func:`resolve_generator`).
    factory : callable, optional
        The factory the CLI loaded (``module:callable`` or an entry point).
    params : mapping
        From :func:`parse_params`.

    Raises
    ------
    ValueError
        For an unknown parameter (the valid ones are listed), a wrong type or a value out of
        range (the message names the parameter and what it accepts).
    ModuleNotFoundError
        When the generator's optional package is not installed.
    """
    if factory is not None:
        sig = dict(inspect.signature(factory).parameters)
        open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
        sig = {k: p for k, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        rules: Mapping[str, Rule] = {}
    elif generator in RULES:
        sig, open_ended, rules = _builtin_signature(generator), False, RULES[generator]
    else:
        return dict(params)  # registered from Python in this process: its factory checks
    out = {}
    for key, value in params.items():
        if key in _NOT_ON_COMMAND_LINE and factory is None:
            raise ValueError(
                f"--param {key} cannot be set on the command line; use {_NOT_ON_COMMAND_LINE[key]}"
            )
        if key not in sig:
            if open_ended:
                out[key] = value
                continue
            valid = ", ".join(k for k in sig if k not in _NOT_ON_COMMAND_LINE)
            raise ValueError(
                f"--param {key}: the {generator!r} generator has no parameter "
                f"{key!r}; valid: {valid}"
            )
        rule = rules.get(key) or _rule_from_signature(sig[key])
        if value is None and sig[key].default is None:
            out[key] = None
        elif rule is None:
            out[key] = value
        else:
            out[key] = rule.check(key, value)
    return out


def make_generator(
    name: str, factory: Callable[..., Any] | None, params: Mapping[str, Any]
) -> Generator:
    """The generator ``name`` built with ``params``: from the registry, or from ``factory``
    (a :class:`~samrefine.library.Generator`, or a callable wrapped in one named ``name``)."""
    if factory is None:
        return get_generator(name, **params)
    made = factory(**params)
    if isinstance(made, Generator):
        return made
    if not callable(made):
        raise TypeError(
            f"generator factory {name!r} returned {type(made).__name__}, not a callable"
        )
    return Generator(name, made, params=dict(params))
