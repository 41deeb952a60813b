"""samrefine: repair semi-supervised segmentation pseudo-labels with SAM mask proposals.

Public names only; everything else is private.
"""

__version__ = "0.1.0"

from .match import STRATEGIES, Refinement, Scores, cpi, iom, refine
from .proposals import ProposalBatch, Proposals
from .ema import EMATeacher, unwrap_model
from .loss import PWABCELoss
from .presets import PRESETS, Preset, get_preset, list_presets
from .pwa import pwa_weight
from .targets import ProposalCollate, SemiRESTargets, follow_geometry, semires_targets
from .rle import RLEError

__all__ = [
    "__version__",
    "Proposals",
    "ProposalBatch",
    "RLEError",
    "Refinement",
    "Scores",
    "STRATEGIES",
    "iom",
    "cpi",
    "refine",
    "pwa_weight",
    "PWABCELoss",
    "EMATeacher",
    "unwrap_model",
    "PRESETS",
    "Preset",
    "get_preset",
    "list_presets",
    "semires_targets",
    "SemiRESTargets",
    "ProposalCollate",
    "follow_geometry",
]
