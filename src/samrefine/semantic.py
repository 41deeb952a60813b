"""Semantic (multi-class) refinement: IOM / CPI on every class region of a label map at once.

A semantic pseudo-label is an integer class map ``L`` (``(H, W)`` or ``(B, H, W)``, e.g. the
teacher's ``argmax``), with ``ignore_index`` marking void pixels. It is cut into *regions*:

===============  =====================================================================
``per``          region
===============  =====================================================================
``"class"``      all pixels of one class in one image (``P_c = {L == c}``)
``"component"``  one connected component of one class, **8-connectivity** (pixels touching
                 by an edge or a corner belong together)
===============  =====================================================================

Pixels equal to ``ignore_index`` and pixels of ``skip_classes`` (e.g. ``(0,)``, VOC's
background) belong to no region. Every region is refined as a binary pseudo-label would be by
:func:`samrefine.refine` (same strategies, same strict thresholds, same scores ``IoU``, ``s1``,
``s2`` of paper Eqs. 6-8 computed with the region as ``P``), against all proposals of its image.
A region with a selection (CPI) or a match (IOM) is *matched*; its refined mask ``R_r`` is the
union of its selected proposals (CPI) or its chosen proposal (IOM).

Composition rules (explicit, and tested):

* **claims**: a pixel inside some matched region's ``R_r`` takes that region's class, whatever
  it held before (another class, a skipped class, or ``ignore_index``), and is ``matched``.
* **conflicts**: a pixel inside the ``R_r`` of several matched regions goes to the region with
  the highest *region score*, ties to the lowest region id (image, then class, then component).
  The region score is the IoU of its chosen proposal (IOM) or the largest IoU with the region
  among its selected proposals (CPI family).
* **give-ups**: a pixel of a matched region that no matched region claims (it lay in ``P_r`` but
  outside ``R_r``) becomes ``ignore_index`` with ``give_up="ignore"`` (the default: the teacher
  said ``c``, the proposals say "not ``c``", nobody says what it is) or keeps its teacher label
  with ``give_up="keep"``. Either way it is not ``matched``.
* every other pixel keeps its teacher label and is not ``matched`` (PWA weights it in training).

Worked example (CPI-U, ``under=0.7``): a 1 x 6 map ``[1 1 1 1 2 2]`` and one proposal
``[0 1 1 1 1 0]``. Region class 1 (4 pixels): ``|P n S| = 3``, ``s1 = 0.75 > 0.7``: matched,
``R = S``. Region class 2 (2 pixels): ``s1 = 0.5``: unmatched. Pixel 0 is given up, pixels 1-4
are claimed by class 1, pixel 5 keeps class 2: ``[255 1 1 1 1 2]`` with ``give_up="ignore"``,
``matched = [0 1 1 1 1 0]``.

Cost: one pass over the label map (per-column runs and a per-pixel run index) plus one pass
over the proposals' column segments (each finds its first and last run in O(1) and adds its
overlap to the regions it crosses): ``O(H W + segments + crossings)`` for the whole map, not
per class. Writing the output adds ``O(H W + k log k)`` for the ``k`` selected segments and
matched runs (each column's intervals are swept by their end points). Numba on the CPU (numpy
arrays and CPU tensors), torch on CUDA tensors, ``backend=`` overrides; results are identical.
``per="component"`` labels components with the Numba kernel on the host, also for CUDA input
(one host round trip of the label map). The torch kernels expand the selected proposals to
pixels to resolve conflicts (``O(total area of the selected proposals)``): fine on a GPU, slow
on a CPU, where the Numba kernels run by default.

Contents: :func:`refine_semantic`, :class:`SemanticRefinement`, :class:`SemanticRegions`,
:class:`RegionScores`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _config, kernels
from ._common import UNSET, is_torch
from .kernels import KernelMode
from .match import ResolvedStrategy, _as_batch, as_resolved

__all__ = ["RegionScores", "SemanticRefinement", "SemanticRegions", "refine_semantic"]

_PER = ("class", "component")
_GIVE_UP = ("ignore", "keep")


@dataclass(frozen=True)
class SemanticRegions:
    """One row per region of the batch (``R`` rows), ordered by image, class, component.

    Arrays are numpy for numpy input, torch tensors on the input's device for tensor input.

    Attributes
    ----------
    image : (R,) int64
        Image index within the batch.
    cls : (R,) int64
        Class id.
    component : (R,) int64
        Component index within (image, class), numbered by first pixel in row-major order;
        0 for ``per="class"``.
    area : (R,) int64
        Pixels of the region in the teacher label map.
    matched : (R,) bool
        Whether proposals replaced the region.
    score : (R,) float64 in [0, 1]
        Region score used for conflicts (module docstring); 0 for unmatched regions.
    chosen : (R,) int64
        IOM: the chosen proposal's index within its image's proposals; -1 otherwise.
    """

    image: Any
    cls: Any
    component: Any
    area: Any
    matched: Any
    score: Any
    chosen: Any

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class RegionScores:
    """Scores of every (region, proposal) pair with a non-zero intersection (``Q`` rows),
    ordered by (image, proposal, region). Pairs not listed intersect in 0 pixels: their
    scores are 0 and never pass a (strict) threshold.

    Attributes
    ----------
    region : (Q,) int64
        Row of :class:`SemanticRegions`.
    proposal : (Q,) int64
        Proposal index within its image's proposals.
    intersection : (Q,) int64
        ``|P_r n S_k|`` in pixels (> 0).
    iou, s1, s2 : (Q,) float64
        Paper Eqs. 6-8 with the region as the pseudo-label.
    selected : (Q,) bool
        Whether the proposal is part of the region's refined mask.
    """

    region: Any
    proposal: Any
    intersection: Any
    iou: Any
    s1: Any
    s2: Any
    selected: Any

    def __len__(self) -> int:
        return int(self.region.shape[0])


@dataclass(frozen=True)
class SemanticRefinement:
    """What :func:`refine_semantic` returns.

    Attributes
    ----------
    labels : array or tensor, (H, W) or (B, H, W)
        Refined class map: same kind, dtype, device and shape as the input labels.
    matched : array or tensor, same shape, bool
        True where the pixel's label comes from a matched region's refined mask.
    regions : SemanticRegions
        The region table.
    pairs : RegionScores
        Scores of intersecting (region, proposal) pairs and the selection.
    region_offsets : (B + 1,) int64 numpy
        Regions of image ``b`` are rows ``region_offsets[b]:region_offsets[b + 1]``.
    strategy, per, give_up : str
    """

    labels: Any
    matched: Any
    regions: SemanticRegions
    pairs: RegionScores
    region_offsets: np.ndarray
    strategy: str
    per: str
    give_up: str

    @property
    def match_rate(self) -> float:
        """Share of regions matched (a host float; 0 when there are no regions)."""
        m = self.regions.matched
        if len(self.regions) == 0:
            return 0.0
        return float(m.float().mean()) if is_torch(m) else float(np.mean(m))

    def selected(self, region: int) -> np.ndarray:
        """Indices (within the image's proposals) of the proposals forming region ``region``'s
        refined mask, ascending; empty when the region is unmatched."""
        r = _host(self.pairs.region)
        sel = _host(self.pairs.selected)
        return _host(self.pairs.proposal)[(r == int(region)) & sel]


def _host(x) -> np.ndarray:
    return x.cpu().numpy() if is_torch(x) else np.asarray(x)


# ---------------------------------------------------------------------------- validation


def _check_labels(labels, ignore_index, num_classes, skip, give_up, with_runs=False):
    """Validate; return (labels (B, H, W), squeeze, n_classes for lookup tables, runs).

    ``with_runs`` (numpy labels only): cut the map into column runs
    (:func:`~samrefine.kernels.semantic_numba.column_runs`) and read the class range from the
    runs, so the map is read once for validation and scoring; ``runs`` is None otherwise."""
    torch_in = is_torch(labels)
    if torch_in:
        import torch

        ok = labels.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
        kind = labels.dtype
    else:
        labels = np.asarray(labels)
        ok = labels.dtype.kind in "iu"
        kind = labels.dtype
    if not ok:
        hint = (
            " (a bool mask is a binary pseudo-label: use samrefine.refine)"
            if str(kind).endswith("bool")
            else " (pass the class map, e.g. logits.argmax(1), not probabilities)"
        )
        raise TypeError(f"labels must be an integer class map, got dtype {kind}{hint}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (B, H, W), got shape {tuple(labels.shape)}")
    squeeze = labels.ndim == 2
    if squeeze:
        labels = labels[None]
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        ignore_index = int(ignore_index)
    if give_up == "ignore":
        if ignore_index is None:
            raise ValueError(
                "give_up='ignore' writes ignore_index into given-up pixels; pass "
                "an ignore_index or use give_up='keep'"
            )
        info = torch.iinfo(labels.dtype) if torch_in else np.iinfo(labels.dtype)
        if not info.min <= ignore_index <= info.max:
            raise ValueError(
                f"ignore_index={ignore_index} does not fit labels of dtype "
                f"{labels.dtype}; cast the labels to a wider integer dtype"
            )
    runs = None
    if labels.numel() if torch_in else labels.size:
        if torch_in:
            v = labels.to(torch.int64) if labels.dtype != torch.int64 else labels
            valid = (
                v != ignore_index
                if ignore_index is not None
                else torch.ones_like(v, dtype=torch.bool)
            )
            if bool(valid.any()):
                lo, hi = int(v[valid].min()), int(v[valid].max())
            else:
                lo = hi = 0
        else:
            from .kernels import semantic_numba as kn

            ign = np.int64(ignore_index if ignore_index is not None else 0)
            if with_runs:
                runs = kn.column_runs(np.ascontiguousarray(labels))
                lo, hi, found = kn.key_range(runs[2], ign, ignore_index is not None)
            else:
                lo, hi, found = kn.label_range(
                    np.ascontiguousarray(labels), ign, ignore_index is not None
                )
            lo, hi = (int(lo), int(hi)) if found else (0, 0)
    else:
        lo = hi = 0
    if lo < 0:
        raise ValueError(
            f"labels hold a negative class {lo} that is not ignore_index "
            f"({ignore_index}); classes are 0..num_classes-1"
        )
    if num_classes is not None:
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, (int, np.integer))
            or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if hi >= num_classes:
            raise ValueError(
                f"labels hold class {hi} but num_classes={num_classes}; classes "
                f"must be 0..{num_classes - 1} or ignore_index ({ignore_index})"
            )
        n_classes = int(num_classes)
    else:
        n_classes = hi + 1
        if n_classes > 65536:
            raise ValueError(
                f"labels hold class {hi}; pass num_classes (or mark void pixels "
                "with ignore_index) if that is intended"
            )
    for c in skip:
        if c >= n_classes:
            if num_classes is not None:
                raise ValueError(f"skip_classes holds {c} >= num_classes={num_classes}")
            n_classes = c + 1
    return labels, squeeze, n_classes, runs


def _check_skip(skip_classes: Iterable[int]) -> tuple[int, ...]:
    try:
        skip = tuple(skip_classes)
    except TypeError:
        raise TypeError(f"skip_classes must be a sequence of ints, got {skip_classes!r}") from None
    for c in skip:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
            raise ValueError(f"skip_classes must hold non-negative ints, got {c!r}")
    return tuple(int(c) for c in skip)


# ---------------------------------------------------------------------------- entry point


def refine_semantic(
    labels,
    proposals,
    *,
    strategy: str | ResolvedStrategy = "cpi-u",
    per: str = "class",
    ignore_index: int | None = 255,
    skip_classes: Iterable[int] = (),
    give_up: str = "ignore",
    num_classes: int | None = None,
    iom_thresh: float | None = UNSET,
    under: float | None = UNSET,
    over: float | None = UNSET,
    backend: str | None = None,
) -> SemanticRefinement:
    """Refine a semantic (multi-class) pseudo-label map with mask proposals.

    Parameters
    ----------
    labels : np.ndarray or torch.Tensor, (H, W) or (B, H, W), integer
        Class map (e.g. the teacher's ``argmax``), values ``0..num_classes-1`` or
        ``ignore_index``. Any integer dtype; any device.
    proposals : Proposals, list of Proposals, or ProposalBatch
        One image's proposals per label map, at the label map's ``(H, W)``.
    strategy : {"iom", "cpi", "cpi-u", "cpi-o", "none"} or ResolvedStrategy, default "cpi-u"
        As :func:`samrefine.refine`, applied to each region (a :class:`ResolvedStrategy`
        from :func:`samrefine.resolve_strategy` carries its thresholds).
    per : {"class", "component"}, default "class"
        One region per class of an image, or per 8-connected component of each class.
    ignore_index : int or None, default 255
        Void label: its pixels belong to no region; written into given-up pixels with
        ``give_up="ignore"``. ``None``: no void label.
    skip_classes : sequence of int, default ()
        Classes not refined (e.g. ``(0,)`` for background). Their pixels can still be claimed
        by a refined region.
    give_up : {"ignore", "keep"}, default "ignore"
        Label of pixels a matched region gives up (see the module docstring).
    num_classes : int, optional
        When given, labels ``>= num_classes`` (other than ``ignore_index``) are an error.
    iom_thresh, under, over : float or None
        Strategy thresholds (strict), resolved by :func:`samrefine.resolve_strategy` as for
        :func:`samrefine.refine`: defaults are the strategy's, a threshold the strategy does
        not read raises, and with ``cpi`` ``None`` switches a test off.
    backend : {"numba", "torch"}, optional
        Default: torch for CUDA tensors, numba otherwise.

    Returns
    -------
    SemanticRefinement
        ``labels`` (same kind, dtype, device, shape as the input), per-pixel ``matched``,
        the ``regions`` table and the ``pairs`` scores.

    Raises
    ------
    TypeError
        Non-integer labels (floats, bool), a bad ``ignore_index`` or ``skip_classes``.
    ValueError
        A bad shape, negative or out-of-range classes, an unknown strategy or a threshold it
        does not read, an unknown ``per`` / ``give_up``, ``ignore_index`` not fitting the
        dtype, or proposals of another batch or image size.

    Examples
    --------
    >>> import numpy as np
    >>> from samrefine import Proposals, refine_semantic
    >>> lab = np.array([[1, 1, 1, 1, 2, 2]], np.uint8)
    >>> props = Proposals.from_dense(np.array([[[0, 1, 1, 1, 1, 0]]], bool))
    >>> out = refine_semantic(lab, props)
    >>> out.labels.tolist(), out.matched.astype(int).tolist()
    ([[255, 1, 1, 1, 1, 2]], [[0, 1, 1, 1, 1, 0]])
    """
    resolved = as_resolved(strategy, iom_thresh, under, over)
    mode = resolved.mode
    t_iom = resolved.iom_thresh if resolved.iom_thresh is not None else 0.0
    u, o = resolved.under, resolved.over
    if per not in _PER:
        raise ValueError(f"per must be one of {_PER}, got {per!r}")
    if give_up not in _GIVE_UP:
        raise ValueError(f"give_up must be one of {_GIVE_UP}, got {give_up!r}")
    skip = _check_skip(skip_classes)
    torch_in = is_torch(labels)
    device = labels.device if torch_in else None
    be = kernels.pick_backend(backend, device)
    # numpy labels, per class, on numba: the column runs validate and score (one read)
    lab, squeeze, n_classes, runs = _check_labels(
        labels,
        ignore_index,
        num_classes,
        skip,
        give_up,
        with_runs=be == "numba" and per == "class" and not torch_in,
    )
    n_img, h, w = lab.shape
    batch = _as_batch(proposals, n_img, (h, w))
    skip_mask = np.zeros(n_classes, np.bool_)
    skip_mask[list(skip)] = True
    # give_up="ignore" with ignore_index None was refused by _check_labels
    fill = ignore_index if give_up == "ignore" and ignore_index is not None else 0
    if be == "numba":
        res = _run_numba(
            lab.cpu().numpy() if torch_in else lab,
            runs,
            batch,
            mode,
            t_iom,
            u,
            o,
            per,
            ignore_index,
            skip_mask,
            n_classes,
            give_up == "ignore",
            fill,
        )
        if torch_in:
            import torch

            res = {
                k: torch.from_numpy(v).to(device)
                if isinstance(v, np.ndarray) and k != "region_offsets"
                else v
                for k, v in res.items()
            }
    else:
        import torch

        lt = lab if torch_in else torch.from_numpy(np.ascontiguousarray(lab))
        res = _run_torch(
            lt,
            batch,
            mode,
            t_iom,
            u,
            o,
            per,
            ignore_index,
            skip_mask,
            n_classes,
            give_up == "ignore",
            fill,
        )
        if not torch_in:
            res = {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in res.items()}
    out, matched = res["labels"], res["matched"]
    if squeeze:
        out, matched = out[0], matched[0]
    regions = SemanticRegions(
        res["r_image"],
        res["r_class"],
        res["r_comp"],
        res["r_area"],
        res["r_matched"],
        res["r_score"],
        res["r_chosen"],
    )
    pairs = RegionScores(
        res["p_region"],
        res["p_proposal"],
        res["p_inter"],
        res["p_iou"],
        res["p_s1"],
        res["p_s2"],
        res["p_selected"],
    )
    return SemanticRefinement(
        out, matched, regions, pairs, res["region_offsets"], resolved.name, per, give_up
    )


#: What both backends return, in order: the painted labels and matched map, the per-image region
#: offsets, the region table (SemanticRegions' fields) and the pair table (RegionScores' fields).
_RESULT_KEYS = (
    "labels", "matched", "region_offsets",
    "r_image", "r_class", "r_comp", "r_area", "r_matched", "r_score", "r_chosen",
    "p_region", "p_proposal", "p_inter", "p_iou", "p_s1", "p_s2", "p_selected",
)  # fmt: skip


def _backend_result(*values: Any) -> dict[str, Any]:
    """The backends' result as one dict keyed by :data:`_RESULT_KEYS` (one list of names for
    the numba and the torch path)."""
    if len(values) != len(_RESULT_KEYS):
        raise AssertionError(f"{len(values)} result fields for {len(_RESULT_KEYS)} names")
    return dict(zip(_RESULT_KEYS, values))


def _local(flat_m, image, mask_offsets):
    return flat_m - mask_offsets[image]


def _run_numba(
    lab,
    runs,
    batch,
    mode,
    t_iom,
    u,
    o,
    per,
    ignore_index,
    skip_mask,
    n_classes,
    give_up_ignore,
    fill,
):
    from .kernels import semantic_numba as k

    lab = np.ascontiguousarray(lab)
    seg = batch.segments()  # host arrays, from each Proposals' cached column segments
    ign, has_ign = (
        np.int64(ignore_index if ignore_index is not None else 0),
        ignore_index is not None,
    )
    if per == "class":  # no region map: runs of the class map and a class -> region table
        colptr, run_y0, run_key, loc = runs if runs is not None else k.column_runs(lab)
        lut, r_off, r_class, r_comp, r_area, run_r = k.class_regions(
            colptr,
            run_y0,
            run_key,
            np.int64(lab.shape[1]),
            ign,
            has_ign,
            skip_mask,
            np.int64(n_classes),
        )
    else:
        keys, r_off, r_class, r_comp, r_area = k.region_map_component(
            lab, ign, has_ign, skip_mask, np.int64(n_classes)
        )
        colptr, run_y0, run_key, loc = k.column_runs(keys)
        run_r = run_key.astype(np.int32)
    if mode == KernelMode.NONE:
        n_reg = int(r_off[-1])
        z = np.zeros(0, np.int64)
        zf = np.zeros(0, np.float64)
        return {
            "labels": lab.copy(),
            "matched": np.zeros(lab.shape, np.bool_),
            "region_offsets": r_off,
            "r_image": np.repeat(np.arange(lab.shape[0], dtype=np.int64), np.diff(r_off)),
            "r_class": r_class,
            "r_comp": r_comp,
            "r_area": r_area,
            "r_matched": np.zeros(n_reg, bool),
            "r_score": np.zeros(n_reg),
            "r_chosen": np.full(n_reg, -1, np.int64),
            "p_region": z,
            "p_proposal": z,
            "p_inter": z,
            "p_iou": zf,
            "p_s1": zf,
            "p_s2": zf,
            "p_selected": np.zeros(0, bool),
        }
    (out, out_m, r_image, p_local, p_r, p_t, iou, s1, s2, sel, chosen_local, r_matched, score) = (
        k.refine_regions(
            lab, colptr, run_y0, run_r, loc, r_off, r_class, r_area,
            seg.x, seg.y0, seg.y1, seg.seg_offsets, seg.mask_offsets, seg.area,
            int(mode), float(t_iom), u is not None, float(u or 0.0), o is not None,
            float(o or 0.0), float(_config.CPI_EPS), give_up_ignore, np.int64(fill),
        )
    )  # fmt: skip
    return _backend_result(
        out, out_m, r_off, r_image, r_class, r_comp, r_area, r_matched, score, chosen_local,
        p_r, p_local, p_t, iou, s1, s2, sel,
    )  # fmt: skip


def _run_torch(
    lab, batch, mode, t_iom, u, o, per, ignore_index, skip_mask, n_classes, give_up_ignore, fill
):
    import torch

    from .kernels import semantic_numba as kn
    from .kernels import semantic_torch as kt

    dev = lab.device
    if per == "class":
        region, r_off, r_class, r_comp, r_area = kt.region_map_class(
            lab, ignore_index, torch.from_numpy(skip_mask).to(dev), n_classes
        )
        r_off_host = r_off.cpu().numpy()
    else:  # connected components on the host (module docstring)
        host = kn.region_map_component(
            np.ascontiguousarray(lab.cpu().numpy()),
            np.int64(ignore_index if ignore_index is not None else 0),
            ignore_index is not None,
            skip_mask,
            np.int64(n_classes),
        )
        region, r_off, r_class, r_comp, r_area = (torch.from_numpy(a).to(dev) for a in host)
        r_off_host = host[1]
    n_reg = int(r_off_host[-1])
    r_image = torch.repeat_interleave(
        torch.arange(lab.shape[0], device=dev), r_off.diff(), output_size=n_reg
    )
    tb = batch if (batch.is_torch and batch.device == dev) else batch.to(dev)
    if mode == KernelMode.NONE:
        z = torch.zeros(0, dtype=torch.int64, device=dev)
        zf = torch.zeros(0, dtype=torch.float64, device=dev)
        return {
            "labels": lab.clone(),
            "matched": torch.zeros_like(lab, dtype=torch.bool),
            "region_offsets": r_off_host,
            "r_image": r_image,
            "r_class": r_class,
            "r_comp": r_comp,
            "r_area": r_area,
            "r_matched": torch.zeros(n_reg, dtype=torch.bool, device=dev),
            "r_score": torch.zeros(n_reg, dtype=torch.float64, device=dev),
            "r_chosen": torch.full((n_reg,), -1, dtype=torch.int64, device=dev),
            "p_region": z,
            "p_proposal": z,
            "p_inter": z,
            "p_iou": zf,
            "p_s1": zf,
            "p_s2": zf,
            "p_selected": torch.zeros(0, dtype=torch.bool, device=dev),
        }
    p_m, p_r, p_t = kt.score_pairs(region, n_reg, tb)
    iou, s1, s2, sel, chosen, r_matched, score = kt.select(
        p_m, p_r, p_t, r_area, tb.area, n_reg, int(mode), float(t_iom), u, o, float(_config.CPI_EPS)
    )
    out, out_m = kt.paint(
        lab, region, r_image, r_class, r_matched, score, p_m, p_r, sel, tb, give_up_ignore, fill
    )
    moff = tb.mask_offsets
    chosen_local = torch.where(chosen >= 0, chosen - moff[r_image], -1)
    return _backend_result(
        out,
        out_m,
        r_off_host,
        r_image,
        r_class,
        r_comp,
        r_area,
        r_matched,
        score,
        chosen_local,
        p_r,
        _local(p_m, r_image[p_r], moff),
        p_t,
        iou,
        s1,
        s2,
        sel,
    )
