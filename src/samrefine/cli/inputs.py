"""Loading the inputs of ``samrefine audit`` and ``samrefine viz``: ``.npz`` / ``.json`` files,
a proposal library, or the demo data.

The ``.npz`` holds ``pseudo`` (B, H, W), ``gt`` (B, H, W), optional ``image`` (B, h, w, 3)
uint8, and either ``proposals`` (M, h, w) bool with ``proposal_offsets`` (B + 1,) or, for a
library, ``image_ids`` (B,). Proposals are resized (nearest) to the pseudo-label size.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np

from ..demo import demo_data
from ..library import ProposalLibrary
from ..proposals import Proposals

__all__ = ["load_inputs", "load_proposals", "load_single_proposals"]


def load_proposals(path: str, data: dict | None, n: int, hw: Sequence[int]) -> list[Proposals]:
    """Per-sample proposals from a .npz (dense + offsets) or .json (lists of COCO RLEs)."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if isinstance(raw, dict):
            raw = raw.get("proposals")
        if not isinstance(raw, list) or len(raw) != n:
            raise ValueError(
                f"{path}: expected a JSON list of {n} lists of COCO RLE dicts "
                '(one list per sample), or {"proposals": [...]}'
            )
        props = [Proposals.from_rle(r, size=None if r else hw) for r in raw]
    else:
        if data is None:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        if "proposals" not in data or "proposal_offsets" not in data:
            raise ValueError(
                f"{path}: needs arrays 'proposals' (M, h, w) bool and "
                "'proposal_offsets' (B + 1,) int (sample b owns proposals["
                "offsets[b]:offsets[b + 1]]); or pass --proposals FILE.json"
            )
        masks, off = data["proposals"], np.asarray(data["proposal_offsets"], np.int64)
        if masks.ndim != 3:
            raise ValueError(f"{path}: 'proposals' must be (M, h, w), got {masks.shape}")
        if (
            off.shape != (n + 1,)
            or off[0] != 0
            or off[-1] != len(masks)
            or np.any(np.diff(off) < 0)
        ):
            raise ValueError(
                f"{path}: 'proposal_offsets' must be ({n + 1},), non-decreasing, "
                f"from 0 to {len(masks)}; got shape {off.shape}"
            )
        library = Proposals.from_dense(masks)
        props = [library[off[b] : off[b + 1]] for b in range(n)]
    return [p if tuple(p.size) == tuple(hw) else p.resize(hw) for p in props]


def _library_proposals(
    path: str, data: dict, args: argparse.Namespace, n: int, hw: Sequence[int]
) -> list[Proposals]:
    """Proposals of ``data['image_ids']`` from a ProposalLibrary, resized to ``hw``."""
    if args.proposals:
        raise ValueError("pass either --proposals or --library, not both")
    if "image_ids" not in data:
        raise ValueError(
            f"{args.data}: --library needs an array 'image_ids' (B,) int, the "
            "library image id of every sample"
        )
    ids = np.asarray(data["image_ids"]).reshape(-1)
    if ids.shape != (n,) or ids.dtype.kind not in "iu":
        raise ValueError(
            f"{args.data}: 'image_ids' must be ({n},) integers, got {ids.dtype} {ids.shape}"
        )
    with ProposalLibrary.open(path) as lib:
        missing = [int(i) for i in ids if int(i) not in lib]
        if missing:
            raise ValueError(
                f"{len(missing)} image id(s) are not in {path}, e.g. "
                f"{missing[:5]}; check 'image_ids' or the library"
            )
        return [lib[int(i)].resize(hw) for i in ids]


def load_inputs(args: argparse.Namespace) -> dict:
    """``{"pseudo", "gt", "proposals", "image"}`` from DATA (+ --proposals / --library) or
    ``--demo``; ``image`` is None when the data has none."""
    if args.demo:
        if args.data:
            raise ValueError("pass either DATA or --demo, not both")
        d = demo_data(args.photo, samples=args.samples, size=args.size, seed=args.seed)
        return {
            "pseudo": d["pseudo"],
            "gt": d["gt"],
            "proposals": d["proposals"],
            "image": np.broadcast_to(d["image"], (len(d["pseudo"]), *d["image"].shape)),
        }
    if not args.data:
        raise ValueError("give DATA (.npz with 'pseudo' and 'gt') or --demo")
    with np.load(args.data) as z:
        data = {k: z[k] for k in z.files}
    for key in ("pseudo", "gt"):
        if key not in data:
            raise ValueError(
                f"{args.data}: missing array {key!r}; it must hold 'pseudo' "
                "(B, H, W) and 'gt' (B, H, W)"
            )
    pseudo = data["pseudo"]
    if pseudo.ndim != 3:
        raise ValueError(f"{args.data}: 'pseudo' must be (B, H, W), got {pseudo.shape}")
    n, hw = pseudo.shape[0], pseudo.shape[1:]
    if getattr(args, "library", None):
        props = _library_proposals(args.library, data, args, n, hw)
    else:
        props = load_proposals(args.proposals or args.data, None if args.proposals else data, n, hw)
    image = data.get("image")
    if image is not None and (image.ndim != 4 or image.shape[0] != n or image.shape[3] != 3):
        raise ValueError(f"{args.data}: 'image' must be (B, h, w, 3) uint8, got {image.shape}")
    return {"pseudo": pseudo, "gt": data["gt"], "proposals": props, "image": image}


def load_single_proposals(path: str, index: int, hw: Sequence[int] | None) -> Proposals:
    """One image's proposals from a .json list of RLE dicts (or one list per sample: take
    ``index``) or an .npz ``proposals`` stack (with ``proposal_offsets``: sample ``index``)."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw and isinstance(raw[0], list):  # a list per sample: take --index
            raw = raw[index]
        if not raw and hw is None:
            raise ValueError(f"{path}: no proposals and no --image to take the size from")
        return Proposals.from_rle(raw, size=None if raw else hw)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    if "proposals" not in data:
        raise ValueError(f"{path}: needs an array 'proposals' (N, h, w) bool")
    if "proposal_offsets" in data:
        off = data["proposal_offsets"]
        return load_proposals(path, data, len(off) - 1, data["proposals"].shape[1:])[index]
    return Proposals.from_dense(data["proposals"])
