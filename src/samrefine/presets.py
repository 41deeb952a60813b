"""Named training recipes: the SemiRES paper's settings and its reference code's.

Format
------
A :class:`Preset` is a frozen dataclass of every choice where the paper and the reference code
(SemiRES @ 478bf6e, ``train_semi_CPI.py`` / ``train_semi_IOM.py``) differ:

==================  ======================  ==========================  =======================
field               ``paper``               ``reference-code``          ``reference-code-iom``
==================  ======================  ==========================  =======================
logits / loss       BCE, 1 channel          2-class softmax CE          2-class softmax CE
class_weight        none                    (0.9, 1.1)                  (0.9, 1.1)
reduction           mean over pixels        group-mean                  group-mean
ema_decay           0.996                   0.9996                      0.9996
strategy            cpi-u (s1 > 0.7)        cpi (s1 > 0.7 or s2 > 0.7)  iom (IoU > 0.5)
sup / unsup weight  1 / 1                   1 / 1                       10 / 1
PWA gamma/mu/var    1.3 / 0.5 / 0.1         1.3 / 0.5 / 0.1             1.3 / 0.5 / 0.1
==================  ======================  ==========================  =======================

Example::

    p = samrefine.get_preset("paper")
    criterion = p.make_loss()
    teacher = p.make_teacher(student)
    targets = samrefine.semires_targets(teacher_logits, proposals, **p.refine_kwargs())
    loss = p.sup_weight * criterion(sup_logits, gt) + p.unsup_weight * criterion(logits, targets)

Contents: :class:`Preset`, :func:`get_preset`, :func:`list_presets`, :data:`PRESETS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from torch import nn

from samrefine.ema import EMATeacher
from samrefine.loss import PWABCELoss
from samrefine.match import STRATEGIES, resolve_strategy

__all__ = ["PRESETS", "Preset", "get_preset", "list_presets"]


@dataclass(frozen=True)
class Preset:
    """One named training recipe (immutable; derive variants with :meth:`replace`).

    Attributes
    ----------
    name : str
        Registry name.
    description : str
        One line on where the values come from.
    loss : {"bce", "ce2"}
        Student output layout the recipe assumes: ``"bce"`` one foreground logit per pixel,
        ``(B, H, W)`` or ``(B, 1, H, W)``; ``"ce2"`` two logits ``(B, 2, H, W)``, softmax CE.
        :class:`samrefine.PWABCELoss` handles both; this records which one the recipe used.
    class_weight : tuple of 2 floats or None
        ``(background, object)`` weights on supervised and matched pixels.
    reduction : {"mean", "group-mean"}
        See :class:`samrefine.PWABCELoss`.
    ema_decay : float
        Teacher EMA decay (Eq. 5).
    ema_warmup : bool
        ``min(1 - 1/(t + 1), decay)`` warm-up (neither the paper nor the reference uses it).
    strategy : str
        Matching strategy for :func:`samrefine.refine` (a key of :data:`samrefine.STRATEGIES`).
    under, over : float or None
        CPI thresholds on s1 / s2 (strict). None: the recipe does not set it, and a strategy
        that reads it uses its registry default. The preset's own ``strategy`` must have a
        value for each threshold it reads (to run one CPI test, name ``cpi-u`` or ``cpi-o``).
    iom_thresh : float or None
        IOM IoU threshold (strict); None as for ``under``.
    pwa_gamma, pwa_mu, pwa_var : float
        PWA parameters (Eq. 9; ``pwa_var`` is a variance).
    sup_weight, unsup_weight : float
        ``lambda_sup`` and ``lambda_unsup`` of Eq. 4.

    Notes
    -----
    Rule for ``paper``: follow the paper where it is explicit (BCE Eq. 1/3/10, EMA 0.996 Sec.
    4.2, CPI-U at 0.7 Tables 2/3, per-image mean Eq. 10); where it is silent (lambda_sup,
    lambda_unsup in Eq. 4) follow the reference CPI code (1 and 1). ``reference-code``
    reproduces ``train_semi_CPI.py``'s choices; ``reference-code-iom`` those of
    ``train_semi_IOM.py`` (supervised loss x10). The reference's defects (integer buffers
    averaged by EMA, colour jitter on a normalised tensor, ...) are never reproduced.
    """

    name: str
    description: str
    loss: Literal["bce", "ce2"]
    class_weight: tuple[float, float] | None
    reduction: Literal["mean", "group-mean"]
    ema_decay: float
    ema_warmup: bool
    strategy: str
    under: float | None
    over: float | None
    iom_thresh: float | None
    pwa_gamma: float
    pwa_mu: float
    pwa_var: float
    sup_weight: float
    unsup_weight: float

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "ce2"):
            raise ValueError(f"loss must be 'bce' or 'ce2', got {self.loss!r}")
        if self.reduction not in ("mean", "group-mean"):
            raise ValueError(f"reduction must be 'mean' or 'group-mean', got {self.reduction!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        for field in ("under", "over", "iom_thresh"):
            v = getattr(self, field)
            if v is not None and not (0.0 <= v <= 1.0):
                raise ValueError(f"{field} must be in [0, 1] or None, got {v!r}")
        for field in STRATEGIES[self.strategy].thresholds:
            if getattr(self, field) is None:
                raise ValueError(
                    f"preset {self.name!r}: strategy {self.strategy!r} reads {field}, which is "
                    "None; give it a value (to run one CPI test, use strategy 'cpi-u' or 'cpi-o')"
                )
        if not (0.0 <= self.ema_decay <= 1.0):
            raise ValueError(f"ema_decay must be in [0, 1], got {self.ema_decay!r}")
        for field in ("sup_weight", "unsup_weight"):
            v = getattr(self, field)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{field} must be a finite number >= 0, got {v!r}")

    def make_loss(self, **overrides: Any) -> PWABCELoss:
        """Build the recipe's loss.

        Parameters
        ----------
        **overrides
            Keyword arguments of :class:`samrefine.PWABCELoss` that replace the preset's
            (e.g. ``validate=False``).

        Returns
        -------
        PWABCELoss
        """
        kwargs: dict[str, Any] = {
            "class_weight": self.class_weight,
            "reduction": self.reduction,
            "gamma": self.pwa_gamma,
            "mu": self.pwa_mu,
            "var": self.pwa_var,
        }
        kwargs.update(overrides)
        return PWABCELoss(**kwargs)

    def make_teacher(self, student: nn.Module) -> EMATeacher:
        """Build the EMA teacher of ``student`` with the recipe's decay and warm-up.

        Parameters
        ----------
        student : torch.nn.Module
            Possibly DDP- or ``torch.compile``-wrapped.

        Returns
        -------
        EMATeacher
        """
        return EMATeacher(student, decay=self.ema_decay, warmup=self.ema_warmup)

    def refine_kwargs(self, strategy: str | None = None) -> dict[str, Any]:
        """Keyword arguments for :func:`samrefine.refine` / :func:`samrefine.semires_targets`.

        Parameters
        ----------
        strategy : str, optional
            Run this strategy instead of the preset's own, with the preset's thresholds where
            it reads them (e.g. ``reference-code`` with ``"cpi-u"``: ``under=0.7``; its
            ``over`` is not read by CPI-U, so it is left out rather than turning CPI-U into
            CPI). A threshold the preset leaves None takes the strategy's default.

        Returns
        -------
        dict
            ``{"strategy": name}`` plus exactly the thresholds that strategy reads and the
            preset sets: ``iom_thresh`` for IOM, ``under`` and/or ``over`` for the CPI family,
            nothing for ``"none"``.

        Raises
        ------
        ValueError
            For an unknown strategy name (the message lists the valid ones).
        """
        name = self.strategy if strategy is None else strategy
        resolve_strategy(name)  # an unknown name raises here, listing the valid ones
        kwargs: dict[str, Any] = {"strategy": name}
        for field in STRATEGIES[name].thresholds:
            value = getattr(self, field)
            if value is not None:
                kwargs[field] = value
        return kwargs

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (validated like a new preset).

        Parameters
        ----------
        **changes
            Field names and new values.

        Returns
        -------
        Preset
        """
        return dataclasses.replace(self, **changes)


_PWA = {"pwa_gamma": 1.3, "pwa_mu": 0.5, "pwa_var": 0.1}

_REGISTRY: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="paper",
            description=(
                "SemiRES paper (ICML 2024): BCE (Eq. 1/3/10), EMA 0.996 (Sec. 4.2), CPI-U with "
                "inter1 = 0.7 (best row of Tables 2/3); lambda_sup = lambda_unsup = 1 (paper "
                "silent, from the CPI code)"
            ),
            loss="bce",
            class_weight=None,
            reduction="mean",
            ema_decay=0.996,
            ema_warmup=False,
            strategy="cpi-u",
            under=0.7,
            over=None,
            iom_thresh=0.5,
            sup_weight=1.0,
            unsup_weight=1.0,
            **_PWA,
        ),
        Preset(
            name="reference-code",
            description=(
                "SemiRES train_semi_CPI.py: 2-class CE with class weights (0.9, 1.1), EMA keep "
                "0.9996, CPI selecting on s1 > 0.7 or s2 > 0.7, matched/unmatched group-mean "
                "rule, lambda_sup = lambda_unsup = 1"
            ),
            loss="ce2",
            class_weight=(0.9, 1.1),
            reduction="group-mean",
            ema_decay=0.9996,
            ema_warmup=False,
            strategy="cpi",
            under=0.7,
            over=0.7,
            iom_thresh=0.5,
            sup_weight=1.0,
            unsup_weight=1.0,
            **_PWA,
        ),
        Preset(
            name="reference-code-iom",
            description=(
                "SemiRES train_semi_IOM.py: as reference-code but IOM (IoU > 0.5) and the "
                "supervised loss multiplied by 10"
            ),
            loss="ce2",
            class_weight=(0.9, 1.1),
            reduction="group-mean",
            ema_decay=0.9996,
            ema_warmup=False,
            strategy="iom",
            under=None,
            over=None,
            iom_thresh=0.5,
            sup_weight=10.0,
            unsup_weight=1.0,
            **_PWA,
        ),
    )
}

#: Read-only mapping of preset name to :class:`Preset`.
PRESETS: Mapping[str, Preset] = MappingProxyType(_REGISTRY)


def list_presets() -> list[str]:
    """Names of the registered presets.

    Returns
    -------
    list of str
        Sorted names, e.g. ``["paper", "reference-code", "reference-code-iom"]``.
    """
    return sorted(_REGISTRY)


def get_preset(name: str) -> Preset:
    """Look up a preset by name.

    Parameters
    ----------
    name : str
        One of :func:`list_presets` (``"paper"``, ``"reference-code"``,
        ``"reference-code-iom"``).

    Returns
    -------
    Preset
        The frozen preset (shared; use :meth:`Preset.replace` for variants).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown preset {name!r}; valid presets: {', '.join(list_presets())}"
        ) from None
