"""samrefine: repair semi-supervised segmentation pseudo-labels with SAM mask proposals.

Public names only; everything else is private. Names whose modules need torch (losses, EMA,
targets, ...) are imported lazily on first access, so ``import samrefine`` stays fast.
To add a public name: put it in ``_EAGER`` (numpy/numba-only modules) or ``_LAZY``
(modules that import torch or other heavy packages) below; ``__all__`` follows.
"""

from __future__ import annotations

import importlib

from .audit_report import AuditReport, StrategyStats
from .auditing import audit
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
from .proposal_batch import ProposalBatch
from .proposals import Proposals
from .rle import RLEError
from .semantic import RegionScores, SemanticRefinement, SemanticRegions, refine_semantic
from .semantic_audit import SemanticAuditReport, SemanticStrategyStats, audit_semantic
from .viz import audit_bars, overlay_refinement, proposal_grid, pwa_map

__version__ = "0.1.0"

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
    "PWACELoss": "semantic_loss",
    "class_pwa_weight": "semantic_loss",
    "semantic_targets": "class_targets",
    "SemanticTargets": "class_targets",
    "ProposalLibrary": "library",
    "register_generator": "library",
    "get_generator": "library",
    "list_generators": "library",
}

__all__ = [
    "__version__",
    # matching (numpy + numba)
    "Proposals",
    "ProposalBatch",
    "RLEError",
    "Refinement",
    "Scores",
    "STRATEGIES",
    "Strategy",
    "ResolvedStrategy",
    "resolve_strategy",
    "iom",
    "cpi",
    "refine",
    # semantic (multi-class) refinement
    "refine_semantic",
    "SemanticRefinement",
    "SemanticRegions",
    "RegionScores",
    "audit_semantic",
    "SemanticAuditReport",
    "SemanticStrategyStats",
    # audit and pictures
    "audit",
    "AuditReport",
    "StrategyStats",
    "overlay_refinement",
    "proposal_grid",
    "pwa_map",
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
