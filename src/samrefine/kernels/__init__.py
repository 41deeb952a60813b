"""Private matching kernels: ``numba_cpu`` (numpy / CPU tensors) and ``torch_ops`` (any torch
device, meant for CUDA). Both implement ``refine_batch`` with the same arguments and return
bit-identical results; :mod:`samrefine.match` validates inputs and picks one."""

from __future__ import annotations

import enum

__all__ = ["KernelMode"]


class KernelMode(enum.IntEnum):
    """What a matching kernel computes (the kernels take ``int(mode)``).

    ``NONE`` never reaches a kernel: :func:`samrefine.refine` answers it without scoring.
    """

    NONE = -1
    IOM = 0  # arg-max IoU proposal above ``iom_thresh``
    CPI = 1  # union of proposals with s1 > under or s2 > over
