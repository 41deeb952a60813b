"""Class-map training targets: teacher output + proposals -> what one semantic step needs.

Format
------
``semantic_targets(teacher_logits, proposals)`` (also reached through
:func:`samrefine.semires_targets` when the teacher output has C > 2 channels), for ``B`` images
of ``H x W`` and ``C`` classes:

==============  =====================  ======================================================
field           shape, dtype           meaning
==============  =====================  ======================================================
target          (B, H, W) int64        refined class map; ``ignore_index`` where excluded
weight          (B, H, W) float32      1 on matched pixels, ``class_pwa_weight(prob)`` elsewhere
matched         (B, H, W) bool         the pixel's label comes from a refined region
prob            (B, C, H, W) float32   teacher class probabilities (softmax)
pseudo          (B, H, W) int64        teacher pseudo-label (``argmax``, ties to the lower class)
refinement      SemanticRefinement     regions, scores, selected proposals
stats           dict of 0-d tensors    see :class:`SemanticTargets`
==============  =====================  ======================================================

Order of operations: ``pseudo = argmax(prob)``; :func:`samrefine.refine_semantic` refines it
(claims, conflicts and give-ups as documented there); then, with ``conf_thresh`` (FixMatch /
UniMatch's confidence mask), every pixel that is *not matched* and whose teacher confidence
``max(prob)`` is ``< conf_thresh`` becomes ``ignore_index``. Pixels refined by proposals are
kept whatever the teacher's confidence (refinement exists to fix the low-confidence boundary
pixels the mask drops), unless ``conf_on_matched=True``, which masks them by confidence too.

Example::

    t = semantic_targets(teacher(weak), batch["proposals"].to(device), skip_classes=(0,),
                         conf_thresh=0.95)
    loss = PWACELoss()(student(strong), t)

Contents: :func:`semantic_targets`, :class:`SemanticTargets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from samrefine._common import UNSET
from samrefine.proposal_batch import ProposalBatch
from samrefine.proposals import Proposals
from samrefine.pwa import _check_params
from samrefine.semantic import SemanticRefinement, refine_semantic
from samrefine.semantic_loss import class_pwa_weight

__all__ = ["SemanticTargets", "semantic_targets"]


@dataclass(frozen=True)
class SemanticTargets:
    """Targets, weights and statistics for one unlabelled semantic batch (module table).

    Attributes
    ----------
    target : torch.Tensor, (B, H, W) int64
    weight : torch.Tensor, (B, H, W) float32 (float64 for float64 teacher output)
    matched : torch.Tensor, (B, H, W) bool
    prob : torch.Tensor, (B, C, H, W)
    pseudo : torch.Tensor, (B, H, W) int64
    refinement : SemanticRefinement
    stats : dict of str to 0-d torch.Tensor
        Not synchronised: ``region_match_rate`` (share of regions matched; 0 without regions),
        ``matched_fraction`` (share of pixels matched), ``changed_fraction`` (share of pixels
        whose target differs from ``pseudo``), ``ignored_fraction`` (share of pixels whose
        target is ``ignore_index``), ``unmatched_weight`` (mean weight over unmatched pixels;
        0 when none).
    """

    target: torch.Tensor
    weight: torch.Tensor
    matched: torch.Tensor
    prob: torch.Tensor
    pseudo: torch.Tensor
    refinement: SemanticRefinement
    stats: dict[str, torch.Tensor]

    @property
    def batch_size(self) -> int:
        return int(self.target.shape[0])

    def summary(self) -> dict[str, float]:
        """The statistics as host floats (one synchronisation)."""
        keys = list(self.stats)
        values = torch.stack([self.stats[k].double() for k in keys]).cpu().tolist()
        return dict(zip(keys, values, strict=True))


def semantic_targets(
    teacher_out: torch.Tensor,
    proposals: ProposalBatch | Sequence[Proposals] | Proposals,
    strategy: str = "cpi-u",
    *,
    from_logits: bool = True,
    per: str = "class",
    ignore_index: int = 255,
    skip_classes: Iterable[int] = (),
    give_up: str = "ignore",
    conf_thresh: float | None = None,
    conf_on_matched: bool = False,
    iom_thresh: float | None = UNSET,
    under: float | None = UNSET,
    over: float | None = UNSET,
    gamma: float = 1.3,
    mu: float = 0.5,
    var: float = 0.1,
    backend: str | None = None,
    validate: bool = True,
) -> SemanticTargets:
    """Teacher output + proposals -> refined class maps, PWA weights and statistics.

    Parameters
    ----------
    teacher_out : torch.Tensor, (B, C, H, W) floating, C >= 2
        Teacher logits for the weak view (or probabilities with ``from_logits=False``).
    proposals : ProposalBatch, list of Proposals, or Proposals (B = 1)
        At ``(H, W)``.
    strategy, per, skip_classes, give_up, iom_thresh, under, over, backend
        As :func:`samrefine.refine_semantic`.
    from_logits : bool, default True
    ignore_index : int, default 255
        Written where a target is excluded (given-up pixels, low confidence); must not be a
        class id ``0..C-1``.
    conf_thresh : float in [0, 1], optional
        Unmatched pixels with ``max(prob) < conf_thresh`` become ``ignore_index``.
    conf_on_matched : bool, default False
        Apply ``conf_thresh`` (required then) to matched pixels too: refinement may then
        change the label of a confident pixel (a boundary the proposals correct) but never
        makes an unconfident pixel count. Use it when the teacher's errors are wrong
        *classes* on whole objects, which proposals cannot fix (the default promotes them at
        weight 1; see ``examples/semantic_fixmatch``).
    gamma, mu, var : float
        PWA parameters (see :mod:`samrefine.semantic_loss` for Psi on C classes).
    validate : bool, default True
        Reject NaN (and, for probabilities, values outside [0, 1]).

    Returns
    -------
    SemanticTargets

    Raises
    ------
    TypeError, ValueError
        Non-floating or wrongly shaped ``teacher_out``, NaN, an ``ignore_index`` inside
        ``0..C-1``, a bad ``conf_thresh``, or anything :func:`refine_semantic` refuses.
    """
    if not isinstance(teacher_out, torch.Tensor) or not teacher_out.is_floating_point():
        raise TypeError(
            "teacher_out must be a floating-point torch.Tensor (B, C, H, W), got "
            f"{getattr(teacher_out, 'dtype', type(teacher_out).__name__)}"
        )
    if teacher_out.ndim != 4 or teacher_out.shape[1] < 2:
        raise ValueError(
            f"teacher_out must be (B, C, H, W) with C >= 2, got {tuple(teacher_out.shape)}"
        )
    n_cls = int(teacher_out.shape[1])
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if 0 <= ignore_index < n_cls:
        raise ValueError(
            f"ignore_index={ignore_index} is a class id (C = {n_cls}); use a value "
            "outside 0..C-1, e.g. 255"
        )
    if conf_thresh is not None and not (
        isinstance(conf_thresh, (int, float)) and 0.0 <= conf_thresh <= 1.0
    ):
        raise ValueError(f"conf_thresh must be in [0, 1] or None, got {conf_thresh!r}")
    if not isinstance(conf_on_matched, bool):
        raise TypeError(f"conf_on_matched must be a bool, got {conf_on_matched!r}")
    if conf_on_matched and conf_thresh is None:
        raise ValueError(
            "conf_on_matched=True applies conf_thresh to matched pixels, but conf_thresh is "
            "None; pass a threshold (e.g. conf_thresh=0.95)"
        )
    _check_params(gamma, mu, var)
    x = teacher_out.detach()
    if validate and not torch.compiler.is_compiling():
        bad = torch.isnan(x) if from_logits else (torch.isnan(x) | (x < 0) | (x > 1))
        if bool(bad.any()):
            what = "NaN" if from_logits else "NaN or values outside [0, 1]"
            raise ValueError(
                f"teacher_out holds {what} ({int(bad.sum())} value(s)); check the "
                "teacher, or pass from_logits=True if these are logits"
            )
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(cdtype)
    prob = torch.softmax(x, dim=1) if from_logits else x
    pseudo = torch.argmax(x, dim=1)  # first max: lower class
    ref = refine_semantic(
        pseudo,
        proposals,
        strategy=strategy,
        per=per,
        ignore_index=ignore_index,
        skip_classes=skip_classes,
        give_up=give_up,
        num_classes=n_cls,
        iom_thresh=iom_thresh,
        under=under,
        over=over,
        backend=backend,
    )
    target, matched = ref.labels, ref.matched
    if conf_thresh is not None:
        low = prob.amax(dim=1) < conf_thresh
        target = target.masked_fill(low if conf_on_matched else low & ~matched, ignore_index)
    psi = class_pwa_weight(prob, gamma, mu, var)  # what PWACELoss computes from prob
    weight = torch.where(matched, torch.ones_like(psi), psi)
    unmatched = (~matched).sum()
    stats = {
        "region_match_rate": ref.regions.matched.double().mean()
        if len(ref.regions)
        else torch.zeros((), dtype=torch.float64, device=x.device),
        "matched_fraction": matched.double().mean(),
        "changed_fraction": (target != pseudo).double().mean(),
        "ignored_fraction": (target == ignore_index).double().mean(),
        "unmatched_weight": (psi * ~matched).sum().double() / unmatched.clamp_min(1).double(),
    }
    return SemanticTargets(
        target=target,
        weight=weight,
        matched=matched,
        prob=prob,
        pseudo=pseudo,
        refinement=ref,
        stats=stats,
    )
