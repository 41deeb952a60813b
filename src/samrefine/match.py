"""IOM and CPI: refine pseudo-labels with mask proposals (SemiRES, Algorithm 1).

For a pseudo-label ``P`` and proposals ``S_1..S_N`` of the same image (pixels counted exactly):

========  =====================================  ============================================
strategy  score of proposal k                     refined mask
========  =====================================  ============================================
iom       IoU_k = |P n S_k| / |P u S_k|   (Eq.6)  the arg-max ``S_k`` among IoU_k > iom_thresh
                                                  (ties: lowest k)
cpi       s1 = |P n S_k| / (|P| + eps)    (Eq.7)  union of ``S_k`` with s1 > under or s2 > over
          s2 = |P n S_k| / |S_k|          (Eq.8)
cpi-u     s1 only (reads ``under``)               union of ``S_k`` with s1 > under
cpi-o     s2 only (reads ``over``)                union of ``S_k`` with s2 > over
none      --                                      ``P`` unchanged, never matched
========  =====================================  ============================================

The table lives once, in :data:`STRATEGIES` (name, kernel mode, thresholds read, defaults);
:func:`resolve_strategy` applies it for every caller. A threshold the named strategy does not
read is an error (``refine(p, s, "cpi-u", over=0.7)`` raises, naming ``under``); with ``cpi``,
``None`` switches one test off. Thresholds are strict.

When nothing is selected the sample is *unmatched*: the refined mask is ``P`` itself and
training weights it with PWA. ``0/0`` scores (empty ``P`` and ``S_k``) are 0.
Defaults are the paper's: IOM 0.5, CPI 0.7 / 0.7, and CPI-U (the paper's best) for ``refine``.

Cost: ``O(B H W + runs)``; no proposal is decoded to be scored. Numba on the CPU (numpy arrays
and CPU tensors, zero-copy), torch on CUDA tensors; ``backend=`` overrides. Both give identical
results (integer counts, float64 scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from . import _config, kernels
from ._common import UNSET, binary_labels, check_unit_interval, is_torch
from .kernels import KernelMode
from .proposal_batch import ProposalBatch
from .proposals import Proposals

__all__ = [
    "STRATEGIES",
    "KernelMode",
    "Refinement",
    "ResolvedStrategy",
    "Scores",
    "Strategy",
    "cpi",
    "iom",
    "refine",
    "resolve_strategy",
]

#: What the entry points accept as proposals: one image's, a list of them, or a batch.
ProposalsLike = Proposals | Sequence[Proposals] | ProposalBatch

# ---------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Strategy:
    """One matching strategy of the registry (:data:`STRATEGIES`).

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"cpi-u"``.
    mode : KernelMode
        What the kernel computes: ``IOM`` (best proposal), ``CPI`` (union), ``NONE`` (no
        matching).
    thresholds : tuple of str
        The threshold keywords this strategy reads, in order (``"iom_thresh"``, ``"under"``,
        ``"over"``); any other threshold given with a number is an error.
    defaults : mapping of str to float
        The value of each of ``thresholds`` when the caller gives none.
    may_disable : bool
        Whether ``None`` may switch one of ``thresholds`` off (only ``cpi``, which keeps at
        least one test; ``cpi-u`` and ``cpi-o`` are exactly that).
    description : str
        One line, for help texts.
    """

    name: str
    mode: KernelMode
    thresholds: tuple[str, ...]
    defaults: Mapping[str, float]
    may_disable: bool
    description: str


@dataclass(frozen=True)
class ResolvedStrategy:
    """A strategy with every threshold decided (what :func:`resolve_strategy` returns).

    Attributes
    ----------
    name : str
        Registry name.
    mode : KernelMode
    iom_thresh : float or None
        IOM's IoU threshold (strict) for ``iom``, else None.
    under, over : float or None
        CPI thresholds on s1 / s2 (strict); None when the test is off or not CPI.
    """

    name: str
    mode: KernelMode
    iom_thresh: float | None
    under: float | None
    over: float | None

    @property
    def thresholds(self) -> dict[str, float | None]:
        """The thresholds the strategy reads, by keyword (e.g. ``{"under": 0.7}`` for cpi-u)."""
        return {k: getattr(self, k) for k in STRATEGIES[self.name].thresholds}


def _strategy(
    name: str,
    mode: KernelMode,
    defaults: dict[str, float],
    description: str,
    may_disable: bool = False,
) -> Strategy:
    return Strategy(
        name, mode, tuple(defaults), MappingProxyType(defaults), may_disable, description
    )


#: Registry of matching strategies: name -> :class:`Strategy` (read-only).
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            _strategy(
                "iom",
                KernelMode.IOM,
                {"iom_thresh": _config.IOM_THRESH},
                "IoU-based optimal matching: the best proposal with IoU > iom_thresh (Eq. 6)",
            ),
            _strategy(
                "cpi",
                KernelMode.CPI,
                {"under": _config.CPI_UNDER, "over": _config.CPI_OVER},
                "composite parts integration: union of proposals with s1 > under or s2 > over "
                "(Eqs. 7-8)",
                may_disable=True,
            ),
            _strategy(
                "cpi-u",
                KernelMode.CPI,
                {"under": _config.CPI_UNDER},
                "CPI, under-segmentation test only: union of proposals with s1 > under",
            ),
            _strategy(
                "cpi-o",
                KernelMode.CPI,
                {"over": _config.CPI_OVER},
                "CPI, over-segmentation test only: union of proposals with s2 > over",
            ),
            _strategy(
                "none", KernelMode.NONE, {}, "no matching: the pseudo-label, always unmatched"
            ),
        )
    }
)

_THRESHOLDS = ("iom_thresh", "under", "over")


def resolve_strategy(
    name: str,
    *,
    iom_thresh: float | None = UNSET,
    under: float | None = UNSET,
    over: float | None = UNSET,
) -> ResolvedStrategy:
    """Decide a strategy's thresholds: the one place strategy semantics are applied.

    Parameters
    ----------
    name : {"iom", "cpi", "cpi-u", "cpi-o", "none"}
        A key of :data:`STRATEGIES`.
    iom_thresh, under, over : float in [0, 1], or None, optional
        Thresholds (strict). One the strategy reads defaults to the registry's value when not
        given; ``None`` switches a CPI test off, which only ``cpi`` allows (it keeps at least
        one). A threshold the strategy does not read may be omitted or None, never a number.

    Returns
    -------
    ResolvedStrategy

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones); a number for a threshold the
        strategy does not read (the message names those it does); a required threshold set to
        None; a value outside [0, 1].
    TypeError
        For a threshold that is not a number.

    Examples
    --------
    >>> resolve_strategy("cpi-u").thresholds
    {'under': 0.7}
    >>> resolve_strategy("cpi-u", over=0.7)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: strategy 'cpi-u' does not read over (it reads: under); use strategy 'cpi' ...
    """
    spec = STRATEGIES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    given = {"iom_thresh": iom_thresh, "under": under, "over": over}
    values: dict[str, float | None] = dict.fromkeys(_THRESHOLDS)
    for key in _THRESHOLDS:
        v = given[key]
        if key not in spec.thresholds:
            if v is not UNSET and v is not None:
                reads = ", ".join(spec.thresholds) or "no thresholds"
                hint = ""
                if key in ("under", "over") and spec.mode == KernelMode.CPI:
                    hint = "; use strategy 'cpi' to test both s1 > under and s2 > over"
                elif key == "iom_thresh" or spec.mode == KernelMode.IOM:
                    hint = "; iom_thresh is IOM's threshold, under/over are CPI's"
                raise ValueError(f"strategy {name!r} does not read {key} (it reads: {reads}){hint}")
            continue
        if v is UNSET:
            values[key] = spec.defaults[key]
        elif v is None:
            if not spec.may_disable:
                raise ValueError(f"strategy {name!r} needs {key}, a number in [0, 1], got None")
        else:
            values[key] = check_unit_interval(key, v)
    if spec.may_disable and all(values[k] is None for k in spec.thresholds):
        raise ValueError(
            f"strategy {name!r} needs at least one of "
            f"{'/'.join(spec.thresholds)} (None switches a test off)"
        )
    return ResolvedStrategy(
        spec.name, spec.mode, values["iom_thresh"], values["under"], values["over"]
    )


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Scores:
    """Per-proposal scores, flat over the batch (``M`` masks; see ``ProposalBatch``).

    intersection : (M,) int64, |P n S| in pixels
    iou, s1, s2 : (M,) float64 in [0, 1]
    """

    intersection: Any
    iou: Any
    s1: Any
    s2: Any


@dataclass(frozen=True)
class Refinement:
    """What a matching step returns.

    Attributes
    ----------
    masks : array or tensor, (H, W) or (B, H, W)
        Refined labels: same kind, device and shape as the input ``pseudo``; its dtype, or
        bool when the input was probabilities thresholded with ``prob_thresh``.
    matched : (B,) bool
        Whether a proposal replaced the pseudo-label (numpy, or a tensor on the input device).
    selected_mask : (M,) bool
        Which of the batch's ``M`` flat proposals were used.
    chosen : (B,) int64
        IOM: index (within the image's own proposals) of the chosen proposal, -1 when none.
        CPI: -1.
    scores : Scores
        ``intersection``, ``iou``, ``s1``, ``s2`` for every proposal, (M,).
    mask_offsets : (B + 1,) int64 numpy
        Proposals of image ``b`` are ``mask_offsets[b]:mask_offsets[b + 1]`` of the flat arrays.
    strategy : str
    """

    masks: Any
    matched: Any
    selected_mask: Any
    chosen: Any
    scores: Scores
    mask_offsets: np.ndarray
    strategy: str

    @property
    def batch_size(self) -> int:
        return len(self.mask_offsets) - 1

    @property
    def match_rate(self) -> float:
        """Share of samples matched (a host float; syncs a CUDA tensor)."""
        m = self.matched
        return float(m.float().mean()) if is_torch(m) else float(np.mean(m))

    @property
    def selected(self) -> list[np.ndarray]:
        """Per image, the indices of the selected proposals within that image (host arrays)."""
        sel = self.selected_mask
        sel = sel.cpu().numpy() if is_torch(sel) else np.asarray(sel)
        off = self.mask_offsets
        return [np.flatnonzero(sel[off[b] : off[b + 1]]) for b in range(self.batch_size)]


# ---------------------------------------------------------------------------- validation


def _binarize(pseudo: Any, prob_thresh: float | None) -> tuple[Any, bool, Any]:
    """Return (uint8 {0, 1} (B, H, W) view or copy, squeeze flag, output dtype)."""
    torch_in = is_torch(pseudo)
    x = pseudo.detach() if torch_in else np.asarray(pseudo)
    if x.ndim not in (2, 3):
        raise ValueError(f"pseudo must be (H, W) or (B, H, W), got shape {tuple(x.shape)}")
    out_dtype = "bool" if prob_thresh is not None else x.dtype
    hard = binary_labels(x, "pseudo", prob_thresh)
    squeeze = hard.ndim == 2
    if squeeze:
        hard = hard[None]
    if torch_in:
        import torch  # already loaded: ``pseudo`` is a tensor

        return hard.view(torch.uint8), squeeze, out_dtype
    return hard.view(np.uint8), squeeze, out_dtype


def _as_batch(proposals: Any, n_img: int, hw: tuple[int, int]) -> ProposalBatch:
    if isinstance(proposals, Proposals):
        proposals = ProposalBatch([proposals])
    elif isinstance(proposals, Sequence) and not isinstance(proposals, ProposalBatch):
        proposals = ProposalBatch(list(proposals))
    if not isinstance(proposals, ProposalBatch):
        raise TypeError(
            f"proposals must be Proposals, a list of them or a ProposalBatch, got "
            f"{type(proposals).__name__}"
        )
    if len(proposals) != n_img:
        raise ValueError(f"pseudo has {n_img} images but proposals have {len(proposals)}")
    if tuple(proposals.size) != tuple(hw):
        raise ValueError(
            f"pseudo-labels are {hw[0]}x{hw[1]} but proposals are "
            f"{proposals.size[0]}x{proposals.size[1]}; resize the proposals with "
            f"Proposals.resize(({hw[0]}, {hw[1]}))"
        )
    return proposals


# ---------------------------------------------------------------------------- entry points


def as_resolved(
    strategy: str | ResolvedStrategy, iom_thresh: Any = UNSET, under: Any = UNSET, over: Any = UNSET
) -> ResolvedStrategy:
    """``strategy`` as a :class:`ResolvedStrategy`: resolved from a name and the thresholds
    given (:func:`resolve_strategy`), or taken as it is, in which case no threshold may be given
    beside it. Shared by :func:`refine` and :func:`samrefine.refine_semantic`."""
    if isinstance(strategy, ResolvedStrategy):
        if any(v is not UNSET for v in (iom_thresh, under, over)):
            raise ValueError("pass thresholds to resolve_strategy, not beside a ResolvedStrategy")
        return strategy
    return resolve_strategy(strategy, iom_thresh=iom_thresh, under=under, over=over)


def refine(
    pseudo: Any,
    proposals: ProposalsLike,
    strategy: str | ResolvedStrategy = "cpi-u",
    *,
    iom_thresh: float | None = UNSET,
    under: float | None = UNSET,
    over: float | None = UNSET,
    prob_thresh: float | None = None,
    backend: str | None = None,
) -> Refinement:
    """Refine pseudo-labels with proposals by a named strategy.

    Parameters
    ----------
    pseudo : np.ndarray or torch.Tensor, (H, W) or (B, H, W)
        Hard pseudo-labels (bool or {0, 1} of any integer/float dtype), or probabilities in
        [0, 1] with ``prob_thresh`` set (foreground where ``prob > prob_thresh``).
    proposals : Proposals, list of Proposals, or ProposalBatch
        One image's proposals per pseudo-label, at the pseudo-label's size.
    strategy : {"iom", "cpi", "cpi-u", "cpi-o", "none"} or ResolvedStrategy
        See the module table and :data:`STRATEGIES`. Default ``"cpi-u"``, the paper's best.
        A :class:`ResolvedStrategy` (from :func:`resolve_strategy`) carries its thresholds.
    iom_thresh : float in [0, 1]
        IOM's IoU threshold (strict). Default 0.5. Only for ``iom``.
    under, over : float in [0, 1] or None
        CPI thresholds on s1 and s2 (strict). Defaults from the strategy: cpi 0.7/0.7,
        cpi-u 0.7 (reads ``under`` only), cpi-o 0.7 (reads ``over`` only). With ``cpi``, None
        switches one test off.
    prob_thresh : float, optional
        Threshold for probability input.
    backend : {"numba", "torch"}, optional
        Default: torch for CUDA tensors, numba otherwise.

    Returns
    -------
    Refinement

    Raises
    ------
    ValueError
        For an unknown strategy, or a threshold the strategy does not read (see
        :func:`resolve_strategy`), and for the input problems listed in the module header.
    """
    resolved = as_resolved(strategy, iom_thresh, under, over)
    mode = resolved.mode
    t_iom = resolved.iom_thresh if resolved.iom_thresh is not None else 0.0
    u, o = resolved.under, resolved.over
    strategy = resolved.name

    torch_in = is_torch(pseudo)
    x, squeeze, out_dtype = _binarize(pseudo, prob_thresh)
    n_img, h, w = x.shape
    batch = _as_batch(proposals, n_img, (h, w))
    be = kernels.pick_backend(backend, pseudo.device if torch_in else None)

    if mode == KernelMode.NONE:
        return _unmatched(x, squeeze, out_dtype, batch, torch_in, strategy)

    # numba reads host segments; torch those on the pseudo-label's device (CPU for numpy)
    seg_device = None if be == "numba" else (x.device if torch_in else "cpu")
    res = kernels.refine_batch(
        x, batch.segments(seg_device), mode, t_iom, u, o, _config.CPI_EPS, be
    )
    if torch_in and be == "numba":
        import torch

        res = kernels.KernelResult(*(torch.from_numpy(v) for v in res))
    elif not torch_in and be == "torch":
        res = kernels.KernelResult(*(v.cpu().numpy() for v in res))
    masks = res.masks
    if not (out_dtype == "bool" or out_dtype == masks.dtype):  # the kernels give bool
        masks = masks.to(out_dtype) if torch_in else masks.astype(out_dtype)
    if squeeze:
        masks = masks[0]
    return Refinement(
        masks=masks,
        matched=res.matched,
        selected_mask=res.selected,
        chosen=res.chosen,
        scores=Scores(res.inter, res.iou, res.s1, res.s2),
        mask_offsets=batch.host_mask_offsets,
        strategy=strategy,
    )


def _unmatched(
    x: Any, squeeze: bool, out_dtype: Any, batch: ProposalBatch, torch_in: bool, strategy: str
) -> Refinement:
    masks: Any
    matched: Any
    sel: Any
    chosen: Any
    nan: Any
    inter: Any
    n_img = x.shape[0]
    m = batch.num_masks
    if torch_in:
        import torch

        dev = x.device
        masks = x.bool() if out_dtype in ("bool", torch.bool) else x.to(out_dtype)
        matched = torch.zeros(n_img, dtype=torch.bool, device=dev)
        sel = torch.zeros(m, dtype=torch.bool, device=dev)
        chosen = torch.full((n_img,), -1, dtype=torch.int64, device=dev)
        nan = torch.full((m,), float("nan"), dtype=torch.float64, device=dev)
        inter = torch.full((m,), -1, dtype=torch.int64, device=dev)
    else:
        masks = x.view(np.bool_) if out_dtype in ("bool", np.bool_) else x.astype(out_dtype)
        matched = np.zeros(n_img, bool)
        sel = np.zeros(m, bool)
        chosen = np.full(n_img, -1, np.int64)
        nan = np.full(m, np.nan)
        inter = np.full(m, -1, np.int64)
    if squeeze:
        masks = masks[0]
    return Refinement(
        masks, matched, sel, chosen, Scores(inter, nan, nan, nan), batch.host_mask_offsets, strategy
    )


def iom(
    pseudo: Any,
    proposals: ProposalsLike,
    thresh: float = _config.IOM_THRESH,
    *,
    prob_thresh: float | None = None,
    backend: str | None = None,
) -> Refinement:
    """IoU-based Optimal Matching (paper Eq. 6, Algorithm 1 lines 4-9).

    Replaces each pseudo-label by its highest-IoU proposal when that IoU is ``> thresh``
    (ties go to the lowest index); otherwise the sample is unmatched and keeps ``pseudo``.
    See :func:`refine` for the arguments and :class:`Refinement` for the result.
    """
    return refine(
        pseudo, proposals, "iom", iom_thresh=thresh, prob_thresh=prob_thresh, backend=backend
    )


def cpi(
    pseudo: Any,
    proposals: ProposalsLike,
    under: float | None = _config.CPI_UNDER,
    over: float | None = _config.CPI_OVER,
    *,
    prob_thresh: float | None = None,
    backend: str | None = None,
) -> Refinement:
    """Composite Parts Integration (paper Eqs. 7-8, Algorithm 1 lines 10-15).

    The refined mask is the union of every proposal with ``s1 > under`` or ``s2 > over``;
    ``over=None`` is CPI-U, ``under=None`` is CPI-O. No selection leaves the sample unmatched.
    See :func:`refine` for the arguments and :class:`Refinement` for the result.
    """
    return refine(
        pseudo, proposals, "cpi", under=under, over=over, prob_thresh=prob_thresh, backend=backend
    )
