"""Per-pixel loss on refined pseudo-labels with PWA weights for unmatched samples (SemiRES).

Format
------
``PWABCELoss()(logits, target, prob, matched)`` with, for a batch of ``B`` images of ``H x W``:

=========  ============================  ==========================================================
argument   shape                         meaning
=========  ============================  ==========================================================
logits     (B, H, W) or (B, 1, H, W)     student foreground logit -> binary cross-entropy
           (B, 2, H, W)                  student (background, object) logits -> 2-class softmax CE
target     (B, H, W) bool / int / float  refined label in {0, 1} (``Refinement.masks``)
prob       (B, H, W) float in [0, 1]     teacher foreground probability (PWA weights)
matched    (B,) bool                     ``Refinement.matched``: True = SAM refined this sample
ignore     (B, H, W) bool, optional      True = pixel excluded from the loss
=========  ============================  ==========================================================

Per pixel ``j`` of sample ``i``: ``loss_ij = w_ij * CE(z_ij, y_ij)`` with ``w_ij = c[y_ij]`` (the
class weight, 1 without class weights) when sample ``i`` is matched and ``w_ij = Psi(p_ij)``
(:func:`samrefine.pwa_weight`) when it is not.

Worked example: one matched and one unmatched image, each 1 x 2 pixels, per-pixel CE values
``[[a, b]]`` and ``[[c, d]]``, teacher probabilities ``[[.5, 1.]]`` for the unmatched one::

    reduction="mean"        (a + b + 0.0384 c + 0.9386 d) / 4
    reduction="group-mean"  ((a + b) / 2 + (0.0384 c + 0.9386 d) / 2) / 2

Cost: about 15 element-wise passes over ``B x H x W`` (most in place) and one reduction; no host
copies (``validate=True`` reads one boolean).
A two-class softmax CE equals the binary CE of the logit difference ``z1 - z0``, so both layouts
share one code path. ``torch.compile`` fuses the passes.

Contents: :class:`PWABCELoss`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from samrefine.match import Refinement
from samrefine.pwa import _check_params, _pwa_weight_nograd, pwa_weight
from samrefine.targets import SemiRESTargets

__all__ = ["PWABCELoss"]

Reduction = Literal["mean", "group-mean", "none"]
_REDUCTIONS = ("mean", "group-mean", "none")


def _as_tensor(x: Any, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


class PWABCELoss(torch.nn.Module):
    """Cross-entropy on refined pseudo-labels, PWA-weighted on unmatched samples.

    Parameters
    ----------
    class_weight : tuple of 2 floats, optional
        ``(background, object)`` weights applied to the pixels of *matched* samples (and of all
        samples when ``prob``/``matched`` are omitted, i.e. a supervised batch), e.g.
        ``(0.9, 1.1)`` as in LAVT / SemiRES. Unmatched pixels get the PWA weight only, as in the
        SemiRES reference code. Default: no class weights.
    reduction : {"mean", "group-mean", "none"}, default "mean"
        ``"mean"``: sum of weighted per-pixel losses over the batch divided by the number of
        non-ignored pixels (Eq. 10 averaged over the batch). ``"group-mean"``: the SemiRES
        reference code's rule, the mean over the pixels of matched samples and the mean over
        the pixels of unmatched samples, averaged when both groups are present (each group
        counts half, whatever its size). ``"none"``: the weighted per-pixel loss ``(B, H, W)``,
        0 at ignored pixels.
    gamma, mu, var : float, default 1.3, 0.5, 0.1
        PWA parameters, see :func:`samrefine.pwa_weight` (``var`` is a variance).
    validate : bool, default True
        Check values (``prob`` in [0, 1] and finite, ``target`` in {0, 1}) once per call. For
        CUDA tensors this reads one boolean to the host; pass ``False`` to remove that sync.
        Shape, dtype and device checks always run. Value checks are skipped automatically while
        ``torch.compile`` traces.

    Notes
    -----
    Paper: SemiRES Eq. 3 (unsupervised BCE), Eq. 9 (PWA weight ``Psi``) and Eq. 10
    (``L_unsup = 1/(HW) sum_j Psi(p_j) BCE_j``, applied to samples without a SAM match).

    Divergences, each deliberate:

    * The means are plain means over pixels, ``sum(w * CE) / N``, not PyTorch's
      weight-normalised ``sum(w * CE) / sum(w)``; this is the SemiRES reference ``criterion``
      (``reduction="none"`` then ``.mean()``). LAVT's burn-in uses the normalised form.
    * The loss is computed in float32 (float64 for float64 logits) whatever the logits' dtype, so
      it does not overflow under fp16/bf16 autocast. The result is float32/float64.
    * The teacher probability is detached: PWA weights are constants, as in the reference
      (which computes them in numpy).
    * ``"group-mean"`` with an ``ignore`` mask: a group whose pixels are all ignored counts as
      absent. With no group present the loss is 0 (still attached to the graph).
    * Class weights are formed as ``(c1 + c0)/2 +- (c1 - c0)/2`` in the compute dtype, so they
      may differ from the given values by one ulp.

    Examples
    --------
    >>> import torch
    >>> crit = PWABCELoss()
    >>> logits = torch.zeros(2, 4, 4)
    >>> target = torch.ones(2, 4, 4, dtype=torch.bool)
    >>> prob = torch.full((2, 4, 4), 0.5)
    >>> matched = torch.tensor([True, False])
    >>> loss = crit(logits, target, prob, matched)  # (log 2 + 0.0384 log 2) / 2
    >>> round(float(loss), 4)
    0.3599
    """

    def __init__(
        self,
        *,
        class_weight: tuple[float, float] | None = None,
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
        if class_weight is not None:
            cw = tuple(class_weight)
            if len(cw) != 2 or not all(
                isinstance(c, (int, float)) and math.isfinite(c) and c > 0 for c in cw
            ):
                raise ValueError(
                    "class_weight must be a pair of positive finite floats "
                    f"(background, object), e.g. (0.9, 1.1); got {class_weight!r}"
                )
            class_weight = (float(cw[0]), float(cw[1]))
        self.class_weight = class_weight
        self.reduction = reduction
        self.gamma, self.mu, self.var = float(gamma), float(mu), float(var)
        self.validate = bool(validate)

    def extra_repr(self) -> str:
        return (
            f"class_weight={self.class_weight}, reduction={self.reduction!r}, "
            f"gamma={self.gamma}, mu={self.mu}, var={self.var}"
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: Any,
        prob: torch.Tensor | None = None,
        matched: torch.Tensor | None = None,
        *,
        ignore: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Parameters
        ----------
        logits : torch.Tensor
            Student logits, floating, ``(B, H, W)`` / ``(B, 1, H, W)`` (BCE) or ``(B, 2, H, W)``
            (two-class softmax CE, channel 1 = object). Any float dtype; autocast-safe.
        target : torch.Tensor, Refinement or SemiRESTargets
            Refined labels ``(B, H, W)``, bool, integer or float with values in {0, 1} (values
            at ignored pixels are not used). A :class:`samrefine.Refinement` supplies
            ``target=refinement.masks`` and ``matched=refinement.matched`` (then ``matched``
            must be omitted); a :class:`samrefine.SemiRESTargets` also supplies ``prob``.
        prob : torch.Tensor, optional
            Teacher foreground probability ``(B, H, W)``, floating, in [0, 1]. Required when
            ``matched`` is given; detached. Given without ``matched``, every sample is treated
            as unmatched (PWA on all pixels: the paper's Table 5 "PWA without refinement").
        matched : torch.Tensor, optional
            ``(B,)`` bool; True where the sample's target came from SAM proposals. Omit both
            ``prob`` and ``matched`` for a supervised batch (every sample weighted as matched).
        ignore : torch.Tensor, optional
            ``(B, H, W)`` bool, True = excluded pixel.

        Returns
        -------
        torch.Tensor
            0-d loss (``"mean"``, ``"group-mean"``) or ``(B, H, W)`` (``"none"``); float32, or
            float64 for float64 logits.

        Raises
        ------
        TypeError, ValueError
            On a wrong type, dtype, shape or device, a ``Refinement`` from another batch size,
            or (``validate=True``) ``prob`` outside [0, 1] / NaN or ``target`` outside {0, 1}.
        """
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise TypeError(
                "logits must be a floating-point torch.Tensor of shape (B, H, W), (B, 1, H, W) "
                f"or (B, 2, H, W); got {getattr(logits, 'dtype', type(logits).__name__)}"
            )
        if logits.ndim == 4 and logits.shape[1] in (1, 2):
            batch, spatial = logits.shape[0], tuple(logits.shape[2:])
        elif logits.ndim == 3:
            batch, spatial = logits.shape[0], tuple(logits.shape[1:])
        else:
            raise ValueError(
                "logits must have shape (B, H, W), (B, 1, H, W) or (B, 2, H, W); got "
                f"{tuple(logits.shape)}. For C > 2 classes use a multi-class loss."
            )
        device = logits.device
        target, prob, matched = _unpack_target(target, prob, matched, batch)
        target = _as_tensor(target, "target", device)
        expected = (batch, *spatial)
        _check_map(target, "target", expected, device)
        if target.dtype.is_complex:
            raise TypeError(f"target must be bool, integer or float, got {target.dtype}")
        if ignore is not None:
            ignore = _as_tensor(ignore, "ignore", device)
            _check_map(ignore, "ignore", expected, device)
            if ignore.dtype != torch.bool:
                raise TypeError(
                    f"ignore must be a bool tensor (True = ignored), got {ignore.dtype}"
                )
        if matched is not None:
            if prob is None:
                raise ValueError(
                    "prob (the teacher probability, (B, H, W)) is required with matched: "
                    "unmatched samples are weighted by pwa_weight(prob)"
                )
            matched = _as_tensor(matched, "matched", device)
            if matched.dtype != torch.bool:
                raise TypeError(f"matched must be a bool tensor, got {matched.dtype}; pass .bool()")
            if tuple(matched.shape) != (batch,):
                raise ValueError(
                    f"matched must have shape (B,) = ({batch},) to match logits, got "
                    f"{tuple(matched.shape)}"
                )
            if matched.device != device:
                raise ValueError(
                    f"matched is on {matched.device} but logits are on {device}; "
                    f"pass matched.to({str(device)!r})"
                )
        if prob is not None:
            prob = _as_tensor(prob, "prob", device)
            _check_map(prob, "prob", expected, device)
            if not prob.is_floating_point():
                raise TypeError(
                    f"prob must be a floating-point tensor in [0, 1], got {prob.dtype}; pass the "
                    "teacher's probability, not its pseudo-label"
                )
            if matched is None:
                matched = torch.zeros(batch, dtype=torch.bool, device=device)
        if self.validate and not torch.compiler.is_compiling():
            _check_values(target, prob, ignore)
        return _pwa_loss(
            logits,
            target,
            prob,
            matched,
            ignore,
            self.class_weight,
            self.reduction,
            self.gamma,
            self.mu,
            self.var,
        )


def _unpack_target(target: Any, prob: Any, matched: Any, batch: int) -> tuple[Any, Any, Any]:
    """Accept a tensor, a ``Refinement`` or a ``SemiRESTargets`` as ``target``."""
    if isinstance(target, SemiRESTargets):
        # SemiRESTargets: everything the loss needs.
        if matched is not None or prob is not None:
            raise ValueError(
                "target is a SemiRESTargets, which already carries prob and matched; "
                "do not pass them again"
            )
        _check_batch(target.refinement, batch)
        return target.target, target.prob, target.matched
    if isinstance(target, Refinement):
        # Refinement (samrefine.match).
        if matched is not None:
            raise ValueError(
                "target is a Refinement, which already carries matched; do not pass matched"
            )
        _check_batch(target, batch)
        masks = target.masks
        if getattr(masks, "ndim", 0) == 2:
            masks = masks[None]
        found = target.matched
        if isinstance(found, np.ndarray) and found.ndim == 0:
            found = found[None]
        return masks, prob, found
    return target, prob, matched


def _check_batch(refinement: Any, batch: int) -> None:
    n = getattr(refinement, "batch_size", None)
    if n is None:
        n = len(refinement.matched) if getattr(refinement.matched, "ndim", 1) else 1
    if int(n) != batch:
        raise ValueError(
            f"the Refinement is for a batch of {int(n)} image(s) but logits have batch size "
            f"{batch}; refine this batch's pseudo-labels (samrefine.refine) before the loss"
        )


def _check_map(x: torch.Tensor, name: str, expected: tuple[int, ...], device: torch.device) -> None:
    if tuple(x.shape) != expected:
        raise ValueError(
            f"{name} must have shape (B, H, W) = {expected} to match logits, got {tuple(x.shape)}"
        )
    if x.device != device:
        raise ValueError(
            f"{name} is on {x.device} but logits are on {device}; pass {name}.to({str(device)!r})"
        )


def _check_values(
    target: torch.Tensor, prob: torch.Tensor | None, ignore: torch.Tensor | None
) -> None:
    """Value checks with a single host sync; details are computed only on failure."""
    if target.dtype == torch.bool:
        bad_t = None
    else:
        bad_t = (target != 0) & (target != 1)
        if ignore is not None:
            bad_t &= ~ignore
    bad_p = None
    if prob is not None:
        p = prob.detach()
        bad_p = torch.isnan(p) | (p < 0) | (p > 1)
    flags = [b.any() for b in (bad_t, bad_p) if b is not None]
    if not flags or not bool(torch.stack(flags).any()):
        return
    if prob is not None and bad_p is not None and bool(bad_p.any()):
        pwa_weight(prob, validate=True)  # raises with a detailed message
    if bad_t is not None and bool(bad_t.any()):
        values = torch.unique(target[bad_t])[:5].tolist()
        raise ValueError(
            f"target must hold labels 0/1 (bool, integer or float); found other values {values} "
            "at non-ignored pixels. Mark void pixels with ignore=... instead"
        )


def _pwa_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    prob: torch.Tensor | None,
    matched: torch.Tensor | None,
    ignore: torch.Tensor | None,
    class_weight: tuple[float, float] | None,
    reduction: str,
    gamma: float,
    mu: float,
    var: float,
) -> torch.Tensor:
    """Inputs are validated; see :class:`PWABCELoss` for the definition.

    Few full-size passes, most in place: ``log p(y) = logsigmoid(+-z)`` (exact and stable), the
    weight map built in one buffer, one multiply, one reduction. The result is negated last.
    """
    cdtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if logits.ndim == 4:
        if logits.shape[1] == 2:
            # log softmax over 2 classes == log sigmoid of the difference, exactly.
            z = logits[:, 1].to(cdtype) - logits[:, 0].to(cdtype)
        else:
            z = logits[:, 0].to(cdtype)
    else:
        z = logits.to(cdtype)
    yb = target if target.dtype == torch.bool else target != 0
    with torch.no_grad():
        sign = yb.to(cdtype).mul_(2.0).sub_(1.0)  # +1 object, -1 background
    log_p = F.logsigmoid(z * sign)  # (B, H, W), log-likelihood of the label, <= 0

    w: torch.Tensor | None = None
    with torch.no_grad():
        if class_weight is not None:
            # c0 / c1 from +-1 (within one ulp of the given weights); sign is saved by the
            # multiply above, so it is not modified in place.
            half, mid = (
                (class_weight[1] - class_weight[0]) / 2,
                (class_weight[1] + class_weight[0]) / 2,
            )
            w = sign.mul(half).add_(mid)
        if matched is not None and prob is not None:  # the caller passes both or neither
            m3 = matched.view(-1, 1, 1)
            psi = _pwa_weight_nograd(prob, cdtype, gamma, mu, var)
            w = psi.masked_fill_(m3, 1.0) if w is None else torch.where(m3, w, psi)
    per_pixel = log_p if w is None else log_p.mul_(w)
    if ignore is not None:
        per_pixel = per_pixel.masked_fill_(ignore, 0.0)

    if reduction == "none":
        return per_pixel.neg_()
    if reduction == "mean" or matched is None:
        if ignore is None:
            return per_pixel.sum() / -max(per_pixel.numel(), 1)
        return per_pixel.sum() / -(~ignore).sum().clamp_min(1).to(cdtype)
    # group-mean: per-sample sums and pixel counts, then the two groups.
    sums = per_pixel.sum(dim=(1, 2))  # (B,)
    if ignore is None:
        counts = torch.full_like(sums, float(per_pixel.shape[1] * per_pixel.shape[2]))
    else:
        counts = (~ignore).sum(dim=(1, 2)).to(cdtype)
    mf = matched.to(cdtype)
    uf = 1.0 - mf
    count_m, count_u = (counts * mf).sum(), (counts * uf).sum()
    mean_m = (sums * mf).sum() / count_m.clamp_min(1.0)
    mean_u = (sums * uf).sum() / count_u.clamp_min(1.0)
    n_groups = (count_m > 0).to(cdtype) + (count_u > 0).to(cdtype)
    return (mean_m + mean_u) / -n_groups.clamp_min(1.0)
