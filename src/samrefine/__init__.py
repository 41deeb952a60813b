"""samrefine: repair semi-supervised segmentation pseudo-labels with SAM mask proposals.

Public names only; everything else is private. Names whose modules need torch (losses, EMA,
targets, ...) are imported lazily on first access, so ``import samrefine`` stays fast.
To add a public name: put it in ``_EAGER`` (numpy/numba-only modules) or ``_LAZY``
(modules that import torch or other heavy packages) below; ``__all__`` follows.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .match import STRATEGIES, Refinement, Scores, cpi, iom, refine  # noqa: E402
from .proposals import ProposalBatch, Proposals  # noqa: E402
from .rle import RLEError  # noqa: E402

_EAGER = ["Proposals", "ProposalBatch", "RLEError", "Refinement", "Scores", "STRATEGIES", "iom",
          "cpi", "refine"]

#: public name -> submodule that defines it (imported on first access)
_LAZY = {
    "pwa_weight": "pwa",
    "PWABCELoss": "loss",
    "EMATeacher": "ema",
    "unwrap_model": "ema",
    "PRESETS": "presets",
    "Preset": "presets",
    "get_preset": "presets",
    "list_presets": "presets",
    "semires_targets": "targets",
    "SemiRESTargets": "targets",
    "ProposalCollate": "targets",
    "follow_geometry": "targets",
}

__all__ = ["__version__", *_EAGER, *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'samrefine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
