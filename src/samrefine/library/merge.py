"""Merging the finished shards of one build into one finished library (merge_libraries)."""

from __future__ import annotations

import os

import numpy as np

from .format import DuplicateImageError, LibraryError
from .reader import ProposalLibrary
from .writer import _sorted_keys, create_library

__all__ = ["merge_libraries"]


def _check_complete(shards, allow_partial: bool) -> None:
    """Refuse inputs that are not exactly the shards of one build (unless allowed)."""
    if allow_partial:
        return
    metas = [(s.path, s.meta.get("shard"), s.meta.get("build_id")) for s in shards]
    if len(metas) == 1 and metas[0][1] is None:
        return  # one unsharded library
    if any(m[1] is None for m in metas):
        raise LibraryError(
            "merge inputs include unsharded libraries ("
            + ", ".join(p for p, sh, _ in metas if sh is None)
            + "); they are not the shards of one build: pass allow_partial=True "
            "to merge them anyway"
        )
    builds = {b for _, _, b in metas}
    if len(builds) > 1:
        raise LibraryError(
            f"merge inputs come from {len(builds)} different builds (build ids "
            f"{sorted(str(b) for b in builds)}); merge the shards of one build, or "
            "pass allow_partial=True"
        )
    counts = {sh[1] for _, sh, _ in metas}
    if len(counts) > 1:
        raise LibraryError(f"merge inputs disagree on the shard count ({sorted(counts)})")
    n = counts.pop()
    seen: dict[int, str] = {}
    for p, sh, _ in metas:
        if sh[0] in seen:
            raise LibraryError(f"{p} and {seen[sh[0]]} are both shard {sh[0]} of {n}")
        seen[sh[0]] = p
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise LibraryError(
            f"merge inputs hold {len(seen)} of {n} shards; missing shard(s) "
            + ", ".join(f"{i}/{n}" for i in missing[:10])
            + (" ..." if len(missing) > 10 else "")
            + ": finish and add them, or pass allow_partial=True for a partial "
            "library"
        )


def merge_libraries(
    shards,
    output,
    *,
    if_exists: str = "error",
    vacuum: bool = True,
    progress: bool = True,
    allow_partial: bool = False,
) -> str:
    """Merge finished shards of one build into one finished library.

    Parameters
    ----------
    shards : path, glob pattern or sequence of paths
        The shard files (all finished, from one build, with disjoint image ids).
    output : str or os.PathLike
        The merged library; must not be one of the shards.
    if_exists : {"error", "resume", "overwrite"}
        As in :func:`create_library` (``"resume"`` continues an interrupted merge).
    allow_partial : bool
        Merge inputs that are not exactly shards ``0..n-1`` of one build (some shards missing,
        shards of different builds with equal settings, separate unsharded libraries).

    Returns
    -------
    str
        The output path.

    Raises
    ------
    LibraryError
        If the inputs are not one complete build (a shard missing, two builds, a shard twice)
        and ``allow_partial`` is False.
    DuplicateImageError
        If an image id is in two shards (the error names both files).
    """
    src = ProposalLibrary.open(shards)
    try:
        return _merge(src, output, if_exists, vacuum, progress, allow_partial)
    finally:
        src.close()


def _merge(src, output, if_exists, vacuum, progress, allow_partial) -> str:
    from tqdm.auto import tqdm

    out_abs = os.path.abspath(os.fspath(output))
    if out_abs in src.paths:
        raise LibraryError(f"merge output {out_abs} is one of its inputs; choose a new path")
    for s in src._shards:
        if not s.finished:
            raise LibraryError(
                f"shard {s.path} is not finished; finish (resume) its build before merging"
            )
    _check_complete(src._shards, allow_partial)
    owner: dict = {}
    for s in src._shards:
        keys = s.keys()
        for key in keys.tolist() if isinstance(keys, np.ndarray) else keys:
            if key in owner:
                raise DuplicateImageError(
                    f"image {key!r} is in both {owner[key]} and "
                    f"{s.path}; shards of one build must hold disjoint "
                    "ids"
                )
            owner[key] = s.path
    m = src._shards[0].meta
    writer = create_library(
        out_abs,
        generator=m.get("generator", "custom"),
        model=m.get("model"),
        checkpoint_sha256=m.get("checkpoint_sha256"),
        params=m.get("params"),
        if_exists=if_exists,
        commit_every=256,
        compression=m.get("compression", "none"),
        with_geometry=m.get("with_geometry", True),
        build_id=m.get("build_id"),
        extra={**(m.get("extra") or {}), "merged_from": [os.path.basename(p) for p in src.paths]},
    )
    by_path = {s.path: s for s in src._shards}
    try:
        todo = _sorted_keys(k for k in owner if k not in writer)
        for key in tqdm(todo, desc="merge", unit="img", disable=not progress):
            got = by_path[owner[key]].raw(key)
            writer.append_record(key, got[3])
        return writer.finish(vacuum=vacuum)
    finally:
        writer.close()
