"""samrefine: repair semi-supervised segmentation pseudo-labels with SAM mask proposals.

Public names only; everything else is private. Names whose modules need torch (losses, EMA,
targets, ...) are imported lazily on first access, so ``import samrefine`` stays fast.
To add a public name: put it in ``_EAGER`` (numpy/numba-only modules) or ``_LAZY``
(modules that import torch or other heavy packages) below; ``__all__`` follows.
"""

from __future__ import annotations

import importlib

from .audit import AuditReport, StrategyStats, audit
from .match import (
    STRATEGIES,
    Refinement,
    ResolvedStrategy,
    Scores,
    Strategy,
    cpi,
    iom,
    refine,
    resolve_strategy,
)
from .proposals import ProposalBatch, Proposals
from .rle import RLEError
from .viz import audit_bars, overlay_refinement, proposal_grid, pwa_map

__version__ = "0.1.0"

# ``audit`` is eager on purpose: lazily, ``import samrefine.audit`` would rebind the name
# ``samrefine.audit`` to the submodule.
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
    "ProposalLibrary": "library",
    "register_generator": "library",
    "get_generator": "library",
    "list_generators": "library",
}

__all__ = [
    "__version__",
    # matching (numpy + numba)
    "Proposals", "ProposalBatch", "RLEError", "Refinement", "Scores", "STRATEGIES", "Strategy",
    "ResolvedStrategy", "resolve_strategy", "iom", "cpi", "refine",
    # audit and pictures
    "audit", "AuditReport", "StrategyStats", "overlay_refinement", "proposal_grid", "pwa_map",
    "audit_bars",
    # lazily imported (torch, sqlite, ...)
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'samrefine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
