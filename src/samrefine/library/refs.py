"""Reading the refer toolkit's ``refs(<split_by>).p`` files without running code from them.

A refs file is a pickle of a list of dicts (``ref_id``, ``ann_id``, ``image_id``, ``split``,
``sentences``, ...) holding only lists, dicts, strings and numbers. ``pickle.load`` would also
run any callable a crafted file names (``os.system``, ...), and a downloaded refs file is
untrusted input; :func:`read_refs_pickle` admits only builtin containers and scalars and
refuses anything else, naming the file and the global it asked for.
"""

from __future__ import annotations

import io
import os
import pickle

from .format import LibraryError

__all__ = ["UnsafePickleError", "load_refs", "read_refs_pickle"]

#: The only globals a refs pickle may name: builtin containers and scalars (a Python 2 pickle
#: names them as ``__builtin__``, mapped to ``builtins``), and ``_codecs.encode``, which
#: protocol-2 pickles written by Python 3 use for bytes.
_ALLOWED = {
    (m, n)
    for m in ("builtins", "__builtin__")
    for n in (
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "int",
        "float",
        "complex",
        "bool",
    )
}
_ALLOWED.add(("_codecs", "encode"))


class UnsafePickleError(LibraryError):
    """A pickle asks for something other than builtin containers and scalars."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, encoding: str):
        super().__init__(file, fix_imports=True, encoding=encoding)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._path}: refuses to load {module}.{name}: a refs file holds only lists, "
            "dicts, strings and numbers, and this one names code that unpickling would run "
            "(a crafted or corrupted file); re-download it from the refer annotations"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refuses a persistent id ({pid!r}); not a refs file")


def read_refs_pickle(path) -> object:
    """Unpickle ``path`` admitting only builtin containers and scalars (no code runs).

    Python 2 ``str`` values are decoded as UTF-8 (latin-1 if that fails), as the refer files
    were written by Python 2.

    Raises
    ------
    UnsafePickleError
        If the pickle names any other global (the message names the file and the global).
    LibraryError
        If the file is not a readable pickle.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    last = None
    for encoding in ("utf-8", "latin-1"):
        try:
            return _DataOnlyUnpickler(io.BytesIO(data), path, encoding).load()
        except UnsafePickleError:
            raise
        except UnicodeDecodeError as e:
            last = e
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            AttributeError,
            KeyError,
            MemoryError,
        ) as e:
            raise LibraryError(
                f"{path}: not a readable refs pickle ({type(e).__name__}: {e})"
            ) from None
    raise LibraryError(f"{path}: not a readable refs pickle ({last})")


def load_refs(path, split: str | None = "train") -> list[dict]:
    """Referents of a RefCOCO-format ``refs(<splitBy>).p``, read safely
    (:func:`read_refs_pickle`), filtered by exact ``split`` (``None`` keeps all).

    Returns
    -------
    list of dict
        Each with at least ``ref_id`` and ``image_id``.
    """
    path = os.fspath(path)
    refs = read_refs_pickle(path)
    if (
        not isinstance(refs, list)
        or not all(isinstance(r, dict) for r in refs[:1])
        or (refs and not {"ref_id", "image_id"} <= set(refs[0]))
    ):
        raise LibraryError(f"{path}: expected a list of refs with ref_id and image_id")
    if split is not None:
        refs = [r for r in refs if r.get("split") == split]
    return refs
