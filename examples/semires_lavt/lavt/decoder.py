"""LAVT's decoder: three fuse-and-upsample steps and a two-class 1x1 classifier.

With stage features F1..F4 of widths (C, 2C, 4C, 8C) at strides (4, 8, 16, 32) and hidden width
``h`` (LAVT: h = 4C = 512 for Swin-B)::

    y = CBR(CBR(cat(up(F4), F3)))     8C+4C -> h -> h      stride 16
    y = CBR(CBR(cat(up(y),  F2)))     h+2C  -> h -> h      stride 8
    y = CBR(CBR(cat(up(y),  F1)))     h+C   -> h -> h      stride 4
    logits = Conv1x1(y)               h -> 2               stride 4

CBR = 3x3 convolution without bias, BatchNorm, ReLU. ``up`` is bilinear with
``align_corners=True`` and only applies when the coarser map is smaller. Channel 1 is the object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LAVTDecoder"]


class _FuseBlock(nn.Module):
    """Two CBR layers applied to the concatenation of an upsampled map and a skip map."""

    def __init__(self, in_channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if coarse.shape[-2:] != skip.shape[-2:]:
            coarse = F.interpolate(
                coarse, size=skip.shape[-2:], mode="bilinear", align_corners=True
            )
        y = torch.cat([coarse, skip], dim=1)
        y = F.relu(self.bn1(self.conv1(y)))
        return F.relu(self.bn2(self.conv2(y)))


class LAVTDecoder(nn.Module):
    """Decoder from the four multimodal stage features to 2-class logits at stride 4.

    Parameters
    ----------
    stage_dims : tuple of int
        Channels of F1..F4, e.g. (128, 256, 512, 1024).
    hidden : int
        Width of every fuse block (LAVT: half of F4's width).
    """

    def __init__(self, stage_dims: tuple[int, int, int, int], hidden: int):
        super().__init__()
        c1, c2, c3, c4 = stage_dims
        self.fuse = nn.ModuleList(
            [
                _FuseBlock(c4 + c3, hidden),
                _FuseBlock(hidden + c2, hidden),
                _FuseBlock(hidden + c1, hidden),
            ]
        )
        self.classifier = nn.Conv2d(hidden, 2, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode.

        Parameters
        ----------
        features : list of torch.Tensor
            [F1, F2, F3, F4], each (B, C_i, H_i, W_i) float, finest first.

        Returns
        -------
        torch.Tensor
            (B, 2, H_1, W_1) float logits (background, object) at the resolution of F1.
        """
        f1, f2, f3, f4 = features
        y = self.fuse[0](f4, f3)
        y = self.fuse[1](y, f2)
        y = self.fuse[2](y, f1)
        return self.classifier(y)
