"""Optimiser and learning-rate schedule of LAVT / SemiRES, and the finite-loss guard."""

from __future__ import annotations

import torch
from torch import nn

from .lavt import param_groups

__all__ = ["build_optimizer", "check_finite", "poly_scheduler"]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW over LAVT's parameter groups (``lavt.param_groups``), one learning rate.

    Parameters
    ----------
    model : LAVT (unwrapped)
    lr : float
    weight_decay : float
        Decay of every group except backbone norms / position tables (0).
    eps : float
        AdamW epsilon.

    Returns
    -------
    torch.optim.AdamW
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, eps=eps)


def poly_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.PolynomialLR:
    """Per-step poly decay ``lr0 * (1 - step / total_steps) ** power`` (reaches 0 at the end).

    ``torch.optim.lr_scheduler.PolynomialLR``, stepped once per optimiser step; ``total_steps``
    counts the optimiser steps actually run (the reference counts both loaders and never
    reaches 0).
    """
    return torch.optim.lr_scheduler.PolynomialLR(
        optimizer, total_iters=max(int(total_steps), 1), power=power
    )


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Raise when the loss became non-finite (names the usual causes)."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(
            f"the loss is not finite at step {step}; lower lr, enable grad_clip, or check the "
            "inputs (images normalised once, masks in {0, 1})"
        )
