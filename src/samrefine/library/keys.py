"""Image keys of a proposal library: integers (COCO ids) or names (file stems, relative paths).

A key is either a Python ``int`` (a signed 64-bit COCO image id, ``42``) or a ``str`` name
(Pascal VOC ``"2007_000032"``, ADE20K ``"ADE_train_00000001"``, Cityscapes
``"aachen/aachen_000000_000019"``). ``42`` and ``"42"`` are different keys: the type is part
of the key, and one library holds keys of one type.

Text from a file or a command line (``--ids``, a file stem) is read by :func:`parse_image_key`:
a plain decimal integer without leading zeros (``"42"``, ``"-7"``, ``"0"``) becomes an int,
anything else (``"2007_000032"``, ``"000123"``, ``"1e3"``) stays a name, so zero-padded or
underscored names keep their exact spelling (``int("2007_000032")`` would be 2007000032).

Digests use a fixed byte form of each key (:func:`key_bytes`): ``struct.pack("<q", k)`` for
an int (as format version 1), ``struct.pack("<I", len(b)) + b`` with ``b`` the UTF-8 name.
"""

from __future__ import annotations

import math
import re
import struct

import numpy as np

__all__ = ["ImageKey", "image_key", "json_image_key", "key_bytes", "key_type", "parse_image_key"]

ImageKey = int | str

#: Longest name accepted (characters).
MAX_NAME = 1024
_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]*)")


def image_key(value) -> int | str:
    """Validate a key given in Python: an int (or numpy integer) or a str (or numpy str).

    Raises
    ------
    TypeError
        For floats, bools, bytes and other types (``1.9`` is not silently ``1``).
    ValueError
        For ints outside signed 64 bits, empty names, names longer than :data:`MAX_NAME`,
        with leading or trailing whitespace, or with control characters.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"image keys are ints or str names, got bool {value!r}")
    if isinstance(value, (int, np.integer)):
        key = int(value)
        if not -(2**63) <= key < 2**63:
            raise ValueError(f"image id {key} does not fit in a signed 64-bit integer")
        return key
    if isinstance(value, str):
        name = str(value)
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"image name {name[:60]!r} must have 1..{MAX_NAME} characters")
        if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise ValueError(
                f"image name {name!r} has surrounding whitespace or control "
                "characters (a stray '\\r' from a Windows list file?); strip it"
            )
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"image name {name!r} is not valid Unicode text") from None
        return name
    raise TypeError(
        f"image keys are ints (COCO ids) or str names, got {type(value).__name__} {value!r}"
    )


def parse_image_key(text: str) -> int | str:
    """A key written as text (an ``--ids`` line, a file stem): ints only for plain decimals.

    >>> parse_image_key("42"), parse_image_key("2007_000032"), parse_image_key("000123")
    (42, '2007_000032', '000123')
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_image_key takes text, got {type(text).__name__}")
    t = text.strip()
    if _INT_TEXT.fullmatch(t):
        return image_key(int(t))
    return image_key(t)


def json_image_key(value, where: str = "image_id") -> int | str:
    """A key read from JSON: ints and strings as :func:`image_key`; integral floats (``3.0``,
    as some tools write) become ints; other floats are refused (``1.2`` and ``1.9`` must not
    both become image 1)."""
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{where} is {value!r}, not an integer or a name")
        value = int(value)
    try:
        return image_key(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def key_type(keys) -> str | None:
    """``"int"``, ``"str"`` or None (no keys) for validated keys of one type; raises
    ``ValueError`` for a mix."""
    kinds = {type(k) for k in keys}
    if not kinds:
        return None
    if len(kinds) > 1:
        raise ValueError("image keys mix ints and names; one library holds keys of one type")
    return "int" if kinds.pop() is int else "str"


def key_bytes(key: int | str) -> bytes:
    """Fixed byte form of a key for digests (see the module docstring)."""
    if isinstance(key, int):
        return struct.pack("<q", key)
    b = key.encode("utf-8")
    return struct.pack("<I", len(b)) + b
