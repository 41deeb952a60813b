"""One training step: supervised (burn-in) and SemiRES mutual learning (paper Eq. 4 and 10)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

import samrefine
from samrefine.match import STRATEGIES, resolve_strategy

from .config import TrainConfig

__all__ = [
    "autocast",
    "confidence_ignore",
    "correction_stats",
    "SemiRESSettings",
    "semi_step",
    "supervised_step",
]


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def confidence_ignore(prob: torch.Tensor, share: float) -> torch.Tensor | None:
    """Pixels to drop for the confidence-filtering baseline (paper Table 4).

    Confidence of a pixel is ``max(p, 1 - p)``; in each image the ``floor(share * H * W)`` least
    confident pixels (ties at the threshold included) are ignored.

    Parameters
    ----------
    prob : torch.Tensor
        (B, H, W) teacher foreground probability.
    share : float
        In [0, 1); the paper uses 0.05.

    Returns
    -------
    torch.Tensor or None
        (B, H, W) bool, True = ignored; None when ``share`` keeps every pixel.
    """
    k = int(share * prob[0].numel())
    if k == 0:
        return None
    confidence = torch.maximum(prob, 1.0 - prob).flatten(1)
    threshold = confidence.kthvalue(k, dim=1).values
    return (confidence <= threshold[:, None]).view_as(prob)


@torch.no_grad()
def correction_stats(
    pseudo: torch.Tensor, target: torch.Tensor, gt: torch.Tensor
) -> dict[str, float]:
    """How refinement changed pseudo-labels, judged against GT (logging only).

    Parameters
    ----------
    pseudo, target, gt : torch.Tensor
        (B, H, W) teacher pseudo-label, refined target and ground truth (bool or {0, 1}).

    Returns
    -------
    dict
        ``changed`` share of pixels changed by refinement; ``positive`` share of changed pixels
        that became correct and ``negative`` share that became wrong (NaN when none changed);
        ``pseudo_iou`` / ``target_iou`` the overall IoU of pseudo-label and target with GT.
    """
    pseudo, target, gt = pseudo.bool(), target.bool(), gt.bool()
    changed = pseudo != target
    n_changed = int(changed.sum())
    positive = int((changed & (target == gt)).sum())

    def oiou(mask: torch.Tensor) -> float:
        union = int((mask | gt).sum())
        return int((mask & gt).sum()) / union if union else 0.0

    return {
        "changed": n_changed / max(changed.numel(), 1),
        "positive": positive / n_changed if n_changed else float("nan"),
        "negative": (n_changed - positive) / n_changed if n_changed else float("nan"),
        "pseudo_iou": oiou(pseudo),
        "target_iou": oiou(target),
    }


def _to(batch: dict[str, Any], key: str, device: torch.device) -> torch.Tensor:
    return batch[key].to(device, non_blocking=True)


def supervised_step(
    model: nn.Module,
    batch: dict[str, Any],
    criterion: nn.Module,
    device: torch.device,
    *,
    amp: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one labelled batch (burn-in).

    Parameters
    ----------
    model : nn.Module
        Student (possibly DDP-wrapped), in train mode.
    batch : dict
        ``image`` (B, 3, S, S), ``mask`` (B, S, S), ``input_ids``, ``attention_mask`` (B, N).
    criterion : samrefine.PWABCELoss
        Called without ``prob``/``matched``: class-weighted CE on every pixel.
    device : torch.device
    amp : bool
        bf16 autocast on CUDA.

    Returns
    -------
    loss : torch.Tensor
        0-d, float32, to back-propagate.
    stats : dict
        ``{"loss": float, "loss_sup": float}``.
    """
    with autocast(device, amp):
        logits = model(
            _to(batch, "image", device),
            _to(batch, "input_ids", device),
            _to(batch, "attention_mask", device),
        )
    loss = criterion(logits, _to(batch, "mask", device))
    value = float(loss.detach())
    return loss, {"loss": value, "loss_sup": value}


@dataclass(frozen=True)
class SemiRESSettings:
    """What one SemiRES step reads (paper Section 3; keys of :class:`..config.TrainConfig`).

    Attributes
    ----------
    strategy : str
        Pseudo-label refinement: ``iom``, ``cpi``, ``cpi-u``, ``cpi-o`` or ``none``.
    iom_thresh, under, over : float or None
        Thresholds of the strategy (IOM's, CPI's s1 and s2); only those it reads are passed.
    pwa : bool
        Eq. 10's pixel-wise weights on unmatched samples (False: weight 1 everywhere).
    pwa_gamma, pwa_mu, pwa_var : float
        Eq. 10's weight ``gamma * exp(-(p - mu)^2 / (2 var))`` (``var`` a variance).
    conf_filter : float
        Share of least confident pixels ignored per image (Table 4's baseline), in [0, 1).
    sup_weight, unsup_weight : float
        Eq. 4's ``lambda_sup`` and ``lambda_unsup``.
    unsup_rampup_steps : int
        ``lambda_unsup`` is scaled by :func:`sigmoid_rampup` over these first steps (0: none).
    amp : bool
        bf16 autocast on CUDA.
    """

    strategy: str = "cpi-u"
    iom_thresh: float = 0.5
    under: float | None = 0.7
    over: float | None = None
    pwa: bool = True
    pwa_gamma: float = 1.3
    pwa_mu: float = 0.5
    pwa_var: float = 0.1
    conf_filter: float = 0.0
    sup_weight: float = 1.0
    unsup_weight: float = 1.0
    unsup_rampup_steps: int = 0
    amp: bool = True

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> SemiRESSettings:
        """The fields of this class, read from a :class:`..config.TrainConfig`."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @property
    def thresholds(self) -> dict[str, float | None]:
        """Keyword arguments of ``samrefine.semires_targets``: the thresholds the strategy reads
        (``samrefine.resolve_strategy``; e.g. ``{"under": 0.7}`` for cpi-u)."""
        reads = STRATEGIES[self.strategy].thresholds
        return resolve_strategy(self.strategy, **{k: getattr(self, k) for k in reads}).thresholds


def sigmoid_rampup(step: int, length: int) -> float:
    """Unsupervised-loss scale in [0, 1]: ``exp(-5 (1 - step / length)^2)`` (Laine & Aila,
    2017; Mean Teacher), 1 from ``step >= length`` on and always 1 when ``length`` is 0."""
    if length <= 0 or step >= length:
        return 1.0
    t = 1.0 - step / length
    return float(math.exp(-5.0 * t * t))


def semi_step(
    student: nn.Module,
    teacher: nn.Module,
    labelled: dict[str, Any],
    unlabelled: dict[str, Any],
    criterion: samrefine.PWABCELoss,
    settings: SemiRESSettings,
    device: torch.device,
    *,
    unsup_criterion: samrefine.PWABCELoss | None = None,
    step: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one mutual-learning step (SemiRES Eq. 4 with refined targets, Eq. 10 with PWA).

    1. Student forward on ``[labelled images ; strong unlabelled views]`` (one batch, shared
       BatchNorm statistics, as the reference).
    2. Teacher (eval mode, no grad) on the weak views -> probability ``p`` and pseudo-label
       ``p > 0.5``; :func:`samrefine.semires_targets` refines it with the image's proposals
       (``settings.strategy``).
    3. Eq. 4: ``L = sup_weight * CE(labelled) + r(step) * unsup_weight * L_unsup`` with Eq.
       10's ``L_unsup = PWABCELoss(strong, refined, p, matched)`` (``unsup_criterion``, which
       may carry its own class weights); ``r`` is :func:`sigmoid_rampup` over
       ``unsup_rampup_steps`` (1 without); with ``settings.pwa`` False every unlabelled sample
       counts as matched (weight 1); with ``conf_filter`` the least confident pixels are ignored.

    Parameters
    ----------
    student : nn.Module
        Possibly DDP-wrapped, train mode.
    teacher : nn.Module
        The EMA teacher's module (eval mode).
    labelled : dict
        As in :func:`supervised_step`.
    unlabelled : dict
        ``image_weak``, ``image_strong`` (B, 3, S, S), ``input_ids``, ``attention_mask``;
        ``proposals`` (a ``samrefine.ProposalBatch`` at (S, S)) unless the strategy is
        ``none``; ``mask`` (B, S, S) only for logging correction statistics.
    criterion : samrefine.PWABCELoss
        Loss of the labelled samples (and of the unlabelled ones without ``unsup_criterion``).
    settings : SemiRESSettings
    device : torch.device
    unsup_criterion : samrefine.PWABCELoss, optional
        Loss of the unlabelled samples (e.g. without the labelled loss's class weights).
    step : int
        Optimiser steps done so far (for the ramp-up).

    Returns
    -------
    loss : torch.Tensor
        0-d float32.
    stats : dict
        Loss terms, match rate, target statistics, and (when ``mask`` is present) correction
        statistics (:func:`correction_stats`).
    """
    n_lab = labelled["image"].shape[0]
    images = torch.cat([_to(labelled, "image", device), _to(unlabelled, "image_strong", device)])
    ids = torch.cat([_to(labelled, "input_ids", device), _to(unlabelled, "input_ids", device)])
    att = torch.cat(
        [_to(labelled, "attention_mask", device), _to(unlabelled, "attention_mask", device)]
    )
    with autocast(device, settings.amp):
        logits = student(images, ids, att)
        with torch.no_grad():
            teacher_logits = teacher(
                _to(unlabelled, "image_weak", device),
                _to(unlabelled, "input_ids", device),
                _to(unlabelled, "attention_mask", device),
            )
    teacher_logits = teacher_logits.float()
    size = tuple(teacher_logits.shape[-2:])
    proposals = unlabelled.get("proposals")
    if proposals is None:
        if settings.strategy != "none":
            raise ValueError(
                f"strategy {settings.strategy!r} needs proposals in the unlabelled batches; "
                "pass --library <ProposalLibrary path>"
            )
        proposals = samrefine.ProposalBatch(
            [samrefine.Proposals.empty(size)] * teacher_logits.shape[0]
        )
    targets = samrefine.semires_targets(
        teacher_logits,
        proposals,
        settings.strategy,
        gamma=settings.pwa_gamma,
        mu=settings.pwa_mu,
        var=settings.pwa_var,
        validate=False,
        **settings.thresholds,
    )
    matched = targets.matched if settings.pwa else torch.ones_like(targets.matched)
    ignore = confidence_ignore(targets.prob, settings.conf_filter)
    loss_sup = criterion(logits[:n_lab], _to(labelled, "mask", device))
    unsup_loss_fn = criterion if unsup_criterion is None else unsup_criterion
    loss_unsup = unsup_loss_fn(logits[n_lab:], targets.target, targets.prob, matched, ignore=ignore)
    ramp = sigmoid_rampup(step, settings.unsup_rampup_steps)
    loss = settings.sup_weight * loss_sup + ramp * settings.unsup_weight * loss_unsup
    stats = {
        "loss": float(loss.detach()),
        "loss_sup": float(loss_sup.detach()),
        "loss_unsup": float(loss_unsup.detach()),
        **targets.summary(),
    }
    if "mask" in unlabelled:
        gt = _to(unlabelled, "mask", device)
        stats.update(
            {
                f"correction/{k}": v
                for k, v in correction_stats(targets.pseudo, targets.target, gt).items()
            }
        )
    return loss, stats
