"""Matching kernels behind one dispatch point (private; users call :func:`samrefine.refine`).

``numba_cpu`` runs on numpy arrays and CPU tensors (zero-copy), ``torch_ops`` on tensors of any
device (meant for CUDA). Both take a ``(B, H, W)`` uint8 {0, 1} pseudo-label and a
:class:`Segments` tuple, and return a :class:`KernelResult` with bit-identical values (integer
counts, float64 scores). :mod:`samrefine.match` validates inputs; this module picks the backend
and calls it. Kernels trust their inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import numba_cpu
from ._api import KernelMode, KernelResult, Segments

__all__ = ["BACKENDS", "KernelMode", "KernelResult", "Segments", "pick_backend", "refine_batch"]

#: Backend names accepted by ``backend=``.
BACKENDS = ("numba", "torch")


def pick_backend(backend: str | None, device: Any | None) -> str:
    """The backend for a pseudo-label on ``device`` (None for numpy, else a torch device).

    Default: torch for tensors off the CPU, numba otherwise. Raises ValueError for an unknown
    name, or numba asked to run on a non-CPU tensor.
    """
    on_cpu = device is None or device.type == "cpu"
    if backend is None:
        return "numba" if on_cpu else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'numba', 'torch' or None, got {backend!r}")
    if backend == "numba" and not on_cpu:
        raise ValueError(
            f"the numba backend runs on the CPU but pseudo is on {device}; use "
            "backend='torch' or move pseudo to the CPU"
        )
    return backend


def refine_batch(
    pseudo_u8: Any,
    segments: Segments,
    mode: KernelMode,
    iom_thresh: float,
    under: float | None,
    over: float | None,
    eps: float,
    backend: str,
) -> KernelResult:
    """Run IOM or CPI on one batch with the named backend.

    Parameters
    ----------
    pseudo_u8 : (B, H, W) uint8 {0, 1}, numpy array or tensor
        For numba, numpy or a CPU tensor (read without a copy); for torch, a tensor on the
        segments' device or a numpy array (wrapped without a copy, CPU only).
    segments : Segments
        Host arrays for numba, tensors for torch (``ProposalBatch.segments(device)``).
    mode : KernelMode
        ``IOM`` or ``CPI``.
    iom_thresh, under, over : float, or None for a CPI test that is off
        Strict thresholds (``iom_thresh`` is read by IOM only, ``under``/``over`` by CPI only).
    eps : float
        The smoothing term of s1 (Eq. 7).
    backend : {"numba", "torch"}

    Returns
    -------
    KernelResult
        Numpy arrays from numba, tensors on the device from torch.
    """
    if backend == "numba":
        if not isinstance(pseudo_u8, np.ndarray):
            pseudo_u8 = pseudo_u8.numpy()
        return numba_cpu.refine_batch(pseudo_u8, segments, int(mode), iom_thresh, under, over, eps)
    import torch  # loads on first use: ``import samrefine`` does not import torch

    from . import torch_ops

    if isinstance(pseudo_u8, np.ndarray):
        pseudo_u8 = torch.from_numpy(pseudo_u8)
    return torch_ops.refine_batch(pseudo_u8, segments, int(mode), iom_thresh, under, over, eps)
