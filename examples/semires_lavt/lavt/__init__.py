"""LAVT (Yang et al., CVPR 2022) rebuilt on timm's Swin and transformers' BERT.

Public names: :func:`build_lavt`, :data:`LAVT_SPECS`, :class:`LAVT`, :func:`param_groups`,
:func:`load_lavt_checkpoint`, :func:`load_official_lavt`, :func:`build_tokenizer`,
:func:`tokenize`.
"""

from .checkpoint import load_lavt_checkpoint, load_official_lavt
from .model import LAVT, LAVT_SPECS, LAVTSpec, build_lavt, param_groups
from .swin import SWIN_SPECS, LoadReport, SwinSpec, load_swin_checkpoint
from .text import TextSpec, build_tokenizer, tokenize

__all__ = [
    "LAVT",
    "LAVT_SPECS",
    "SWIN_SPECS",
    "LAVTSpec",
    "LoadReport",
    "SwinSpec",
    "TextSpec",
    "build_lavt",
    "build_tokenizer",
    "load_lavt_checkpoint",
    "load_official_lavt",
    "load_swin_checkpoint",
    "param_groups",
    "tokenize",
]
