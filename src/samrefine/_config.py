"""Numeric defaults and Numba flags, in one place (as STUMPY's ``config.py``)."""

from typing import Any

#: Flags for every ``numba.njit`` kernel. ``cache=True`` writes compiled code next to the
#: module so a second import does not recompile; no ``fastmath`` (results must be exact).
NJIT: dict[str, Any] = {"cache": True, "nogil": True}
#: Flags for kernels parallel over the batch (``numba.prange``).
NJIT_PARALLEL: dict[str, Any] = {"cache": True, "nogil": True, "parallel": True}

#: Default thresholds, all strict (``>``), as Algorithm 1 of the paper.
IOM_THRESH = 0.5
CPI_UNDER = 0.7
CPI_OVER = 0.7
#: The paper's smoothing term in s1 = |P n S| / (|P| + eps) (Eq. 7).
CPI_EPS = 1e-9
