"""Multi-class PWA: the SemiRES pixel weight for C classes, and a PWA-weighted cross-entropy.

Format
------
``PWACELoss()(logits, target, prob, matched)`` for a batch of ``B`` images of ``H x W`` and
``C`` classes:

=========  ==========================  ============================================================
argument   shape                       meaning
=========  ==========================  ============================================================
logits     (B, C, H, W) float          student logits -> softmax cross-entropy
target     (B, H, W) integer           refined class map (``SemanticRefinement.labels``);
                                       ``ignore_index`` pixels are excluded
prob       (B, C, H, W) float          teacher class probabilities (PWA weights)
matched    (B, H, W) or (B,) bool      True = the pixel (sample) was refined by SAM proposals
=========  ==========================  ============================================================

Per pixel: ``loss_j = w_j * CE(z_j, y_j)`` with ``w_j = c[y_j]`` (class weight, 1 without) where
matched and ``w_j = Psi_C(prob_j)`` (:func:`class_pwa_weight`) where not.

Psi for C classes
-----------------
The paper's weight ``Psi(p) = gamma - N(p; mu, var)`` (Eq. 9) is a function of a *binary*
probability, lowest at ``p = mu = 0.5``, the point where the teacher cannot decide between its
two classes. For C classes we apply it to the teacher's **top-two probability**

    p2 = q1 / (q1 + q2) = sigmoid(z_(1) - z_(2))        (q1 >= q2 the two largest softmax values,
                                                         z_(1) >= z_(2) the two largest logits)

i.e. the teacher's own softmax restricted to the two classes it hesitates between. Why:

* **it is the binary case, exactly.** The argmax pseudo-label is a decision between the top two
  classes; restricted to them the C-class softmax is a 2-class softmax with probability
  ``p2``. For ``C = 2``, ``p2 = max(p, 1 - p)`` and, since Psi is symmetric about
  ``mu = 0.5``, ``Psi(p2) = Psi(p)``: PWACELoss equals PWABCELoss's two-class CE (tested).
* **same range and meaning.** ``p2`` lies in [0.5, 1]: 0.5 when the top two tie (least trusted,
  weight ~0.038), 1 when one class dominates (weight ~0.939), whatever C is.
* **unaffected by irrelevant classes.** The max probability ``q1`` is not: with 21 classes a
  pixel with ``q = (0.45, 0.05, 0.05, ...)`` is unambiguous (``p2 = 0.9``) yet ``q1 = 0.45``
  would sit at the bottom of the dip; and ``q1`` can fall below 0.5, where Psi rises again.
  Normalised entropy mixes the tail into the weight for the same reason.

With ``mu != 0.5`` Psi is not symmetric and the binary weight depends on *which* class is the
object; no class is "the object" in semantic segmentation, so ``Psi(p2)`` is used as is (the
dip sits at ``p2 = mu``) and equality with PWABCELoss holds for ``mu = 0.5`` only.

Worked example (defaults): ``q = (0.6, 0.3, 0.1)`` gives ``p2 = 2/3`` and
``Psi = 1.3 - exp(-(1/6)^2 / 0.2) / sqrt(0.2 pi) = 0.2020``.

Contents: :func:`class_pwa_weight`, :func:`top2_probability`, :class:`PWACELoss`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F

from samrefine.pwa import _check_params, _pwa_weight_nograd

__all__ = ["PWACELoss", "class_pwa_weight", "top2_probability"]

Reduction = Literal["mean", "none"]
_REDUCTIONS = ("mean", "none")


def top2_probability(x: torch.Tensor, *, from_logits: bool = False) -> torch.Tensor:
    """``q1 / (q1 + q2)`` over the class dimension (dim 1) of ``(B, C, H, W)`` (or ``(C,)``-
    leading-after-batch) probabilities, or ``sigmoid(z1 - z2)`` of logits (stable).

    Parameters
    ----------
    x : torch.Tensor, (B, C, ...) floating, C >= 2
        Probabilities (default) or logits (``from_logits=True``).

    Returns
    -------
    torch.Tensor, (B, ...) in [0.5, 1], float32 (float64 for float64 input), no gradient.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[1] < 2:
        raise ValueError(
            "expected a floating (B, C, ...) tensor with C >= 2, got "
            f"{getattr(x, 'dtype', type(x).__name__)} "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        top = torch.topk(x.detach().to(cdtype), 2, dim=1).values
        if from_logits:
            return torch.sigmoid(top[:, 0] - top[:, 1])
        return top[:, 0] / (top[:, 0] + top[:, 1]).clamp_min(torch.finfo(cdtype).tiny)


def class_pwa_weight(
    prob: torch.Tensor,
    gamma: float = 1.3,
    mu: float = 0.5,
    var: float = 0.1,
    *,
    from_logits: bool = False,
) -> torch.Tensor:
    """PWA weight for C classes: ``Psi(q1 / (q1 + q2))`` (module docstring).

    Parameters
    ----------
    prob : torch.Tensor, (B, C, H, W) floating
        Teacher class probabilities (softmax), or logits with ``from_logits=True``.
    gamma, mu, var : float
        Psi's parameters (paper Eq. 9; ``var`` is a variance).

    Returns
    -------
    torch.Tensor, (B, H, W)
        Weights in ``[gamma - 1/sqrt(2 pi var), gamma)``, float32 (float64 for float64 input),
        on the input's device, no gradient.
    """
    _check_params(gamma, mu, var)
    p2 = top2_probability(prob, from_logits=from_logits)
    return _pwa_weight_nograd(p2, p2.dtype, float(gamma), float(mu), float(var))


class PWACELoss(torch.nn.Module):
    """Softmax cross-entropy on refined class maps, PWA-weighted where SAM did not refine.

    Parameters
    ----------
    ignore_index : int or None, default 255
        Target value excluded from the loss (``SemanticRefinement`` writes it into given-up
        pixels with ``give_up="ignore"``).
    class_weight : sequence of C floats, optional
        Per-class weights applied to matched pixels (and to all pixels of a supervised batch,
        i.e. when ``prob`` and ``matched`` are omitted). Unmatched pixels get Psi only, as in
        :class:`samrefine.PWABCELoss`.
    reduction : {"mean", "none"}, default "mean"
        ``"mean"``: ``sum(w * CE) / (number of non-ignored pixels)`` (a plain mean, as
        PWABCELoss's; not PyTorch's weight-normalised mean). ``"none"``: ``(B, H, W)``, 0 at
        ignored pixels.
    gamma, mu, var : float, default 1.3, 0.5, 0.1
        PWA parameters.
    validate : bool, default True
        Check values (``prob`` in [0, 1] without NaN; target classes in ``0..C-1`` or
        ``ignore_index``); reads one boolean to the host.

    Notes
    -----
    SemiRES Eq. 10 generalised to C classes by applying Psi to the teacher's top-two
    probability (module docstring). Computed in float32 (float64 for float64 logits).

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 3, 1, 2)
    >>> target = torch.tensor([[[0, 2]]])
    >>> prob = torch.tensor([0.6, 0.3, 0.1]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
    >>> matched = torch.tensor([[[True, False]]])
    >>> loss = PWACELoss()(logits, target, prob, matched)   # (log 3 + 0.2020 log 3) / 2
    >>> round(float(loss), 4)
    0.6603
    """

    def __init__(
        self,
        *,
        ignore_index: int | None = 255,
        class_weight=None,
        reduction: Reduction = "mean",
        gamma: float = 1.3,
        mu: float = 0.5,
        var: float = 0.1,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        _check_params(gamma, mu, var)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
        ):
            raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
        if class_weight is not None:
            cw = tuple(class_weight)
            if not cw or not all(
                isinstance(c, (int, float)) and math.isfinite(c) and c > 0 for c in cw
            ):
                raise ValueError(
                    f"class_weight must be positive finite floats, one per class; "
                    f"got {class_weight!r}"
                )
            class_weight = tuple(float(c) for c in cw)
        self.ignore_index = ignore_index
        self.class_weight = class_weight
        self.reduction = reduction
        self.gamma, self.mu, self.var = float(gamma), float(mu), float(var)
        self.validate = bool(validate)

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, class_weight={self.class_weight}, "
            f"reduction={self.reduction!r}, gamma={self.gamma}, mu={self.mu}, var={self.var}"
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: Any,
        prob: torch.Tensor | None = None,
        matched: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Parameters
        ----------
        logits : torch.Tensor, (B, C, H, W) floating, C >= 2
        target : torch.Tensor (B, H, W) integer, SemanticRefinement or SemanticTargets
            Refined class map. A ``SemanticRefinement`` also supplies ``matched``; a
            ``SemanticTargets`` (:func:`samrefine.semantic_targets`) also ``prob``.
        prob : torch.Tensor, (B, C, H, W) floating in [0, 1], optional
            Teacher probabilities; required with ``matched``. Given alone: every pixel is
            unmatched (PWA everywhere). Omit both for a supervised batch (weight 1).
        matched : torch.Tensor, (B, H, W) or (B,) bool, optional
            Per pixel (``SemanticRefinement.matched``) or per sample.

        Returns
        -------
        torch.Tensor
            0-d (``"mean"``) or ``(B, H, W)`` (``"none"``); float32, float64 for float64 logits.
        """
        if (
            not isinstance(logits, torch.Tensor)
            or not logits.is_floating_point()
            or logits.ndim != 4
            or logits.shape[1] < 2
        ):
            raise ValueError(
                "logits must be a floating (B, C, H, W) tensor with C >= 2, got "
                f"{getattr(logits, 'dtype', type(logits).__name__)} "
                f"{tuple(getattr(logits, 'shape', ()))}"
            )
        n, c, h, w = logits.shape
        device = logits.device
        target, prob, matched = _unpack(target, prob, matched)
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        if target.dtype.is_floating_point or target.dtype == torch.bool or target.dtype.is_complex:
            raise TypeError(f"target must be an integer class map, got {target.dtype}")
        _check(target, "target", (n, h, w), device)
        if matched is not None:
            if prob is None:
                raise ValueError(
                    "prob (teacher probabilities, (B, C, H, W)) is required with "
                    "matched: unmatched pixels are weighted by Psi(prob)"
                )
            if not isinstance(matched, torch.Tensor) or matched.dtype != torch.bool:
                raise TypeError("matched must be a bool tensor, (B, H, W) or (B,)")
            if matched.ndim == 1:
                _check(matched, "matched", (n,), device)
                matched = matched.view(n, 1, 1).expand(n, h, w)
            else:
                _check(matched, "matched", (n, h, w), device)
        if prob is not None:
            if not isinstance(prob, torch.Tensor) or not prob.is_floating_point():
                raise TypeError(
                    "prob must be a floating tensor of teacher probabilities, (B, C, H, W)"
                )
            _check(prob, "prob", (n, c, h, w), device)
            if matched is None:
                matched = torch.zeros((n, h, w), dtype=torch.bool, device=device)
        if self.class_weight is not None and len(self.class_weight) != c:
            raise ValueError(
                f"class_weight has {len(self.class_weight)} entries but logits have C = {c} classes"
            )
        ign = self.ignore_index
        if self.validate and not torch.compiler.is_compiling():
            _check_values(target, prob, c, ign)
        cdtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        valid = target != ign if ign is not None else torch.ones_like(target, dtype=torch.bool)
        tgt = torch.where(valid, target, 0).long()
        ce = F.cross_entropy(logits.to(cdtype), tgt, reduction="none")  # (B, H, W)
        with torch.no_grad():
            wgt = None
            if self.class_weight is not None:
                cw = torch.tensor(self.class_weight, dtype=cdtype, device=device)
                wgt = cw[tgt]
            if matched is not None and prob is not None:  # prob is set whenever matched is
                psi = class_pwa_weight(prob, self.gamma, self.mu, self.var).to(cdtype)
                wgt = torch.where(matched, torch.ones_like(psi) if wgt is None else wgt, psi)
        per_pixel = ce if wgt is None else ce * wgt
        per_pixel = per_pixel.masked_fill(~valid, 0.0)
        if self.reduction == "none":
            return per_pixel
        return per_pixel.sum() / valid.sum().clamp_min(1).to(cdtype)


def _unpack(target: Any, prob: Any, matched: Any):
    from samrefine.class_targets import SemanticTargets
    from samrefine.semantic import SemanticRefinement

    if isinstance(target, SemanticTargets):
        if prob is not None or matched is not None:
            raise ValueError(
                "target is a SemanticTargets, which carries prob and matched; do "
                "not pass them again"
            )
        return target.target, target.prob, target.matched
    if isinstance(target, SemanticRefinement):
        if matched is not None:
            raise ValueError(
                "target is a SemanticRefinement, which carries matched; do not pass matched again"
            )
        lab, m = target.labels, target.matched
        if not isinstance(lab, torch.Tensor):
            raise TypeError(
                "the SemanticRefinement holds numpy arrays; refine torch tensors "
                "(the teacher's argmax) to train with it"
            )
        return (lab[None], prob, m[None]) if lab.ndim == 2 else (lab, prob, m)
    return target, prob, matched


def _check(x: torch.Tensor, name: str, shape: tuple, device: torch.device) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} to match logits, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(
            f"{name} is on {x.device} but logits are on {device}; pass {name}.to({str(device)!r})"
        )


def _check_values(target: torch.Tensor, prob: torch.Tensor | None, c: int, ign: int | None) -> None:
    bad_t = (target < 0) | (target >= c)
    if ign is not None:
        bad_t &= target != ign
    flags = [bad_t.any()]
    if prob is not None:
        p = prob.detach()
        flags.append((torch.isnan(p) | (p < 0) | (p > 1)).any())
    if not bool(torch.stack(flags).any()):
        return
    if bool(flags[0]):
        vals = torch.unique(target[bad_t])[:5].tolist()
        raise ValueError(
            f"target holds classes {vals} outside 0..{c - 1} that are not "
            f"ignore_index ({ign}); check num_classes and the ignore value"
        )
    raise ValueError(
        "prob must hold probabilities in [0, 1] with no NaN; pass "
        "softmax(teacher_logits, 1), not logits"
    )
