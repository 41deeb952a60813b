"""Private helpers shared by the matching, audit and picture modules (one copy of each).

Nothing here imports torch: tensors are recognised by their module name and handled through
the methods numpy arrays and tensors share (``!=``, ``&``, ``>``, ``.any()``).

Contents: :data:`UNSET`, :func:`is_torch`, :func:`to_numpy`, :func:`check_unit_interval`,
:func:`binary_labels`, :func:`mask_iou`, :func:`iou_from_counts`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Marks an argument the caller did not give (where ``None`` is a meaningful value).
UNSET: Any = object()


def is_torch(x: object) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from an array-like or a tensor (detached, copied to the host)."""
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def check_unit_interval(name: str, v: object) -> float:
    """``float(v)`` for a number in [0, 1]; TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be a number in [0, 1], got {v!r}")
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {v!r}") from None
    if not 0.0 <= f <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {f}")
    return f


def binary_labels(
    x: Any,
    name: str = "pseudo",
    prob_thresh: float | None = None,
    where: str = "",
    probabilities: bool = True,
) -> Any:
    """Validate hard labels or threshold probabilities; a bool array or tensor of ``x``'s kind.

    Parameters
    ----------
    x : np.ndarray or torch.Tensor, any shape
        Bool, or integer / float holding only 0 and 1; or, with ``prob_thresh``, float
        probabilities in [0, 1] (foreground where ``x > prob_thresh``).
    name, where : str
        How errors name the input, e.g. ``"gt"`` and ``" (sample 3)"``.
    prob_thresh : float in [0, 1], optional
        Threshold for probability input.
    probabilities : bool
        Whether this input may be probabilities (errors then suggest ``prob_thresh``).

    Returns
    -------
    np.ndarray or torch.Tensor, bool, same shape and device (``x`` itself when already bool)

    Raises
    ------
    TypeError
        For a dtype that is not bool, integer or float, or ``prob_thresh`` with non-float input.
    ValueError
        For values other than 0 and 1 (hard labels), or probabilities outside [0, 1] or NaN.
    """
    dtype = x.dtype
    torch_in = is_torch(x)
    is_bool = str(dtype) in ("bool", "torch.bool")
    is_float = x.is_floating_point() if torch_in else dtype.kind == "f"
    is_int = (
        (not is_float and not is_bool and not x.is_complex()) if torch_in else dtype.kind in "iu"
    )
    if not (is_bool or is_float or is_int):
        raise TypeError(f"{name}{where} must be bool, integer {{0, 1}} or float, got dtype {dtype}")
    if prob_thresh is not None:
        t = check_unit_interval("prob_thresh", prob_thresh)
        if not is_float:
            raise TypeError(
                f"prob_thresh is for float probabilities; {name}{where} has dtype "
                f"{dtype}. Pass hard labels without prob_thresh"
            )
        if bool(((x < 0) | (x > 1) | (x != x)).any()):  # x != x: NaN
            raise ValueError(
                f"{name}{where} probabilities must lie in [0, 1] with no NaN; "
                "apply sigmoid or softmax to logits first"
            )
        return x > t
    if is_bool:
        return x
    if bool(((x != 0) & (x != 1)).any()):
        hint = (
            " (it looks like probabilities: pass prob_thresh=0.5)"
            if (is_float and probabilities)
            else ""
        )
        raise ValueError(f"{name}{where} must hold only 0 and 1 (or be bool){hint}")
    return x != 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU ``|a n b| / |a u b|`` of two bool masks; 1.0 when both are empty.

    The evaluation convention (two empty masks agree perfectly), used by the audit, the demo and
    the pictures. Matching scores use another one: there an empty pseudo-label and an empty
    proposal score 0, so they never match (:mod:`samrefine.match`).
    """
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 1.0


def iou_from_counts(inter: Any, union: Any) -> np.ndarray:
    """Elementwise ``inter / union`` as float64, 1.0 where ``union == 0`` (as :func:`mask_iou`)."""
    i = np.asarray(inter, np.float64)
    u = np.asarray(union, np.float64)
    return np.divide(i, u, out=np.ones_like(i), where=u > 0)
