"""Multimodal Swin: timm's Swin stages interleaved with PWAM and language gates (LAVT Fig. 2).

Per stage i (widths C_i, grids H_i x W_i; 120, 60, 30, 15 for 480 px input)::

    X_i   = blocks_i(downsample(E_{i-1}))           (B, H_i, W_i, C_i)   timm layers[i]
    F_i   = PWAM_i(X_i, L, M)                        (B, H_i W_i, C_i)
    out_i = LayerNorm_i(F_i) as (B, C_i, H_i, W_i)   -> decoder
    E_i   = X_i + Gate_i(F_i) * F_i                  -> next stage (i < 4 only)

The decoder receives the normalised PWAM output F, not the gated sum E. LAVT also computes a gate
in stage 4 whose result is never used; we do not build it (no unused parameters under DDP), and
:func:`.checkpoint.load_official_lavt` ignores its weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .pwam import PWAM, LanguageGate

__all__ = ["MultimodalSwin"]


class MultimodalSwin(nn.Module):
    """Swin backbone with pixel-word attention after each stage.

    Parameters
    ----------
    swin : nn.Module
        From :func:`.swin.build_swin`.
    stage_dims : tuple of int
        Widths of the four stages.
    lang_dim : int
        Width D of the word features.
    pwam_heads : tuple of int
        PWAM heads per stage (LAVT: 1, 1, 1, 1).
    fusion_drop : float
        PWAM dropout (LAVT: 0).
    """

    def __init__(
        self,
        swin: nn.Module,
        stage_dims: tuple[int, ...],
        lang_dim: int,
        *,
        pwam_heads: tuple[int, ...] = (1, 1, 1, 1),
        fusion_drop: float = 0.0,
    ):
        super().__init__()
        self.swin = swin
        self.fusions = nn.ModuleList(
            PWAM(dim, lang_dim, num_heads=heads, dropout=fusion_drop)
            for dim, heads in zip(stage_dims, pwam_heads)
        )
        self.gates = nn.ModuleList(LanguageGate(dim) for dim in stage_dims[:-1])
        self.stage_norms = nn.ModuleList(nn.LayerNorm(dim) for dim in stage_dims)

    def forward(
        self, image: torch.Tensor, lang: torch.Tensor, lang_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Multimodal features of the four stages.

        Parameters
        ----------
        image : torch.Tensor
            (B, 3, H, W) float, ImageNet-normalised.
        lang : torch.Tensor
            (B, D, N) float word features.
        lang_mask : torch.Tensor
            (B, N, 1) float word mask.

        Returns
        -------
        list of torch.Tensor
            [F1, F2, F3, F4], F_i of shape (B, C_i, H/(4*2**i), W/(4*2**i)), float.
        """
        x = self.swin.patch_embed(image)  # (B, H/4, W/4, C) NHWC
        outputs = []
        last = len(self.swin.layers) - 1
        for i, stage in enumerate(self.swin.layers):
            x = stage(x)  # downsample of the previous stage's E (i > 0), then the blocks
            batch, height, width, channels = x.shape
            tokens = x.reshape(batch, height * width, channels)
            fused = self.fusions[i](tokens, lang, lang_mask)  # (B, HW, C)
            normed = self.stage_norms[i](fused)
            outputs.append(normed.transpose(1, 2).reshape(batch, channels, height, width))
            if i < last:
                x = (tokens + self.gates[i](fused) * fused).reshape(batch, height, width, channels)
        return outputs
