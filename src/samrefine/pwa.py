"""Pixel-Wise Adjustment (PWA) weight of SemiRES (Eq. 9).

Format
------
``pwa_weight(prob)`` maps a teacher foreground probability ``p`` in [0, 1] to a per-pixel loss
weight::

    Psi(p) = gamma - exp(-(p - mu)^2 / (2 var)) / sqrt(2 pi var)

with ``gamma = 1.3``, ``mu = 0.5``, ``var = 0.1`` (a *variance*). Confident pixels (p near 0 or 1)
get weight ~0.939, ambiguous ones (p near 0.5) ~0.038.

Worked example (defaults)::

    p        0.0     0.25    0.5     0.75    1.0
    Psi(p)   0.9386  0.3770  0.0384  0.3770  0.9386

Cost: five element-wise operations, no reduction; computed on the input's device (no host copy
of CUDA tensors) and differentiable through autograd.

Contents: :func:`pwa_weight`.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, TypeVar, overload

import numpy as np
import torch

__all__ = ["pwa_weight"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _check_params(gamma: float, mu: float, var: float) -> None:
    for name, value in (("gamma", gamma), ("mu", mu), ("var", var)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if var <= 0:
        raise ValueError(
            f"var is the variance of the Gaussian and must be > 0, got {var!r} "
            "(the paper's setting is var=0.1)"
        )


def _check_prob_values_torch(prob: torch.Tensor) -> None:
    # One boolean crosses to the host (a sync, not a copy of the data); skipped under
    # torch.compile tracing, where data-dependent control flow would break the graph.
    if torch.compiler.is_compiling() or prob.numel() == 0:
        return
    p = prob.detach()
    bad = torch.isnan(p) | (p < 0) | (p > 1)
    if bool(bad.any()):
        n_nan = int(torch.isnan(p).sum())
        raise ValueError(
            f"prob must hold probabilities in [0, 1]; found {int(bad.sum())} bad value(s) "
            f"({n_nan} NaN, min {float(torch.nan_to_num(p, nan=0.5).min()):.4g}, "
            f"max {float(torch.nan_to_num(p, nan=0.5).max()):.4g}). Pass "
            "softmax(logits)[:, 1] or sigmoid(logits), not raw logits."
        )


def _check_prob_values_numpy(prob: np.ndarray) -> None:
    if prob.size == 0:
        return
    bad = np.isnan(prob) | (prob < 0) | (prob > 1)
    if bad.any():
        raise ValueError(
            f"prob must hold probabilities in [0, 1]; found {int(bad.sum())} bad value(s) "
            f"({int(np.isnan(prob).sum())} NaN, min {np.nanmin(prob):.4g}, "
            f"max {np.nanmax(prob):.4g}). Pass probabilities, not raw logits."
        )


def _pwa_weight_nograd(
    prob: torch.Tensor, dtype: torch.dtype, gamma: float, mu: float, var: float
) -> torch.Tensor:
    """``pwa_weight`` without autograd, in ``dtype``: one allocation, five in-place passes."""
    norm = 1.0 / math.sqrt(2.0 * math.pi * var)
    with torch.no_grad():
        w = prob.detach().to(dtype) - mu
        return w.square_().mul_(-1.0 / (2.0 * var)).exp_().mul_(-norm).add_(gamma)


@overload
def pwa_weight(
    prob: torch.Tensor,
    gamma: float = ...,
    mu: float = ...,
    var: float = ...,
    *,
    validate: bool = ...,
) -> torch.Tensor: ...


@overload
def pwa_weight(
    prob: np.ndarray | float,
    gamma: float = ...,
    mu: float = ...,
    var: float = ...,
    *,
    validate: bool = ...,
) -> np.ndarray | np.floating[Any]: ...


def pwa_weight(
    prob: ArrayT | float,
    gamma: float = 1.3,
    mu: float = 0.5,
    var: float = 0.1,
    *,
    validate: bool = True,
) -> ArrayT | np.floating[Any]:
    """Per-pixel PWA weight ``Psi(p)`` of the teacher probability (SemiRES Eq. 9).

    Parameters
    ----------
    prob : numpy.ndarray, torch.Tensor or float, any shape
        Teacher foreground probability, values in [0, 1], floating dtype (bool and integer
        arrays are refused: pass probabilities, not pseudo-labels). Typically ``(B, H, W)``.
    gamma : float, default 1.3
        Offset; the weight of a pixel far from ``mu`` tends to ``gamma``.
    mu : float, default 0.5
        Centre of the Gaussian dip (the least trusted probability).
    var : float, default 0.1
        Variance of the Gaussian (not its standard deviation); must be > 0.
    validate : bool, default True
        Check that every value is in [0, 1] and not NaN. For a CUDA tensor this reads one
        boolean back to the host (a synchronisation, no data copy); pass ``False`` in a hot loop
        where the input is known good. Skipped automatically while ``torch.compile`` traces.

    Returns
    -------
    numpy.ndarray, torch.Tensor or numpy.floating
        Weights, same shape and kind as ``prob``; same device for tensors. float64 and float32
        inputs keep their dtype; float16 and bfloat16 inputs (tensors or arrays) are computed
        and returned in float32, so the weight is not rounded to 3 significant digits. A Python
        number gives a ``numpy.float64``. Values lie in ``[gamma - 1/sqrt(2 pi var), gamma)``.

    Raises
    ------
    TypeError
        If ``prob`` is not floating point, or a parameter is not a finite real number.
    ValueError
        If ``var <= 0`` or (with ``validate``) a value is outside [0, 1] or NaN.

    Notes
    -----
    SemiRES (Eq. 9) prints ``Psi(p) = gamma - exp(-(p - mu)^2 / (2 sigma^2)) / sqrt(2 pi sigma)``
    with ``sigma^2 = 0.1``. Read literally, the exponent uses the variance 0.1 but the
    normaliser uses ``sigma = sqrt(0.1)``: ``1/sqrt(2 pi * 0.316) = 0.709``, so
    ``Psi(0.5) = 0.591`` and the weight only spans [0.59, 0.93]. The reference code
    (SemiRES ``train_semi_*.py``, ``bce_weight``) instead uses the Gaussian density with
    variance 0.1 in both places, ``1/(sqrt(2 pi) sqrt(0.1)) = 1.2616``, giving
    ``Psi(0.5) = 0.0384`` and ``Psi(0) = Psi(1) = 0.9386``. We follow the code: it produced the
    paper's numbers, it is the self-consistent reading (a normal density with variance 0.1), and
    only it realises the paper's stated intent of nearly silencing ambiguous pixels. Anyone
    wanting the literal printed form can compute
    ``gamma - exp(-(p - mu)**2 / (2 * var)) / sqrt(2 * pi * sqrt(var))`` themselves; it is not
    offered as an option.

    The derivative is ``Psi'(p) = (p - mu) / var * exp(-(p - mu)^2 / (2 var)) / sqrt(2 pi var)``;
    tensors get it from autograd. Unlike the reference, which copies the probability map to
    numpy every step, this runs on the tensor's own device.

    Examples
    --------
    >>> float(pwa_weight(0.5))  # doctest: +ELLIPSIS
    0.0384...
    """
    _check_params(gamma, mu, var)
    norm = 1.0 / math.sqrt(2.0 * math.pi * var)
    inv_two_var = 1.0 / (2.0 * var)

    if isinstance(prob, torch.Tensor):
        if not (prob.is_floating_point()):
            raise TypeError(
                f"prob must be a floating-point tensor of probabilities, got dtype {prob.dtype}; "
                "pass prob.float() (a bool/integer pseudo-label is not a probability)"
            )
        if prob.dtype in (torch.float16, torch.bfloat16):
            prob = prob.float()
        if validate:
            _check_prob_values_torch(prob)
        d = prob - mu
        return gamma - norm * torch.exp(d * d * -inv_two_var)

    if isinstance(prob, (bool, np.bool_)):
        raise TypeError("prob must be a probability, got a bool; pass a float in [0, 1]")
    arr: np.ndarray
    if isinstance(prob, np.generic):
        arr = np.asarray(prob)
    elif isinstance(prob, Real):
        arr = np.asarray(float(prob))
    elif isinstance(prob, np.ndarray):
        arr = prob
    else:
        raise TypeError(
            f"prob must be a numpy array, a torch tensor or a float, got {type(prob).__name__}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"prob must be a floating-point array of probabilities, got dtype {arr.dtype}; "
            "pass prob.astype(np.float32)"
        )
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if validate:
        _check_prob_values_numpy(arr)
    d = arr - arr.dtype.type(mu)
    out = arr.dtype.type(gamma) - arr.dtype.type(norm) * np.exp(
        d * d * arr.dtype.type(-inv_two_var)
    )
    return out[()] if out.ndim == 0 else out
