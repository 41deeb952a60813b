"""Pixel-word attention module (PWAM) and language gate of LAVT.

PWAM (LAVT, CVPR 2022, Sec. 3.2) fuses one stage's visual tokens with the sentence's word
features. With X (B, HW, C) visual tokens, L (B, D, N) word features and M (B, N, 1) the word mask
(1 = real token, 0 = padding)::

    V   = GELU(proj_v(X))                        (B, C, HW)   visual branch
    Q   = InstanceNorm(proj_q(X))                (B, C, HW)
    K   = proj_k(L) * M,  W = proj_w(L) * M      (B, C, N)    no norm: padding would leak in
    S   = Q^T K / sqrt(C) + 10000 * (M - 1)      (B, h, HW, N) per head; scale uses the full C
    G   = InstanceNorm(proj_o(softmax(S) W^T))   (B, C, HW)   language features at each pixel
    F   = GELU(proj_f(V * G))                    (B, HW, C)   multimodal features

All projections are 1x1 ``Conv1d`` with bias. InstanceNorm standardises each channel over the HW
positions of one sample, without affine parameters or running statistics (same in train and
eval). The language gate weighs how much of F enters the visual stream:
``E = X + tanh(W2 relu(W1 F)) * F`` (element-wise, both linear maps without bias).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PWAM", "LanguageGate"]


class PWAM(nn.Module):
    """Pixel-word attention for one Swin stage.

    Parameters
    ----------
    dim : int
        Visual channels C of the stage.
    lang_dim : int
        Channels D of the word features (768 for BERT-base).
    num_heads : int
        Attention heads; must divide ``dim``. LAVT uses 1.
    dropout : float
        Dropout on the visual branch and on the output, in [0, 1). LAVT uses 0.
    """

    def __init__(self, dim: int, lang_dim: int, *, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the stage width dim={dim}")
        self.dim = dim
        self.num_heads = num_heads
        self.visual_proj = nn.Conv1d(dim, dim, 1)
        self.query_proj = nn.Conv1d(dim, dim, 1)
        self.key_proj = nn.Conv1d(lang_dim, dim, 1)
        self.value_proj = nn.Conv1d(lang_dim, dim, 1)
        self.out_proj = nn.Conv1d(dim, dim, 1)
        self.fusion_proj = nn.Conv1d(dim, dim, 1)
        self.norm_query = nn.InstanceNorm1d(dim)
        self.norm_out = nn.InstanceNorm1d(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lang: torch.Tensor, lang_mask: torch.Tensor) -> torch.Tensor:
        """Fuse visual tokens with word features.

        Parameters
        ----------
        x : torch.Tensor
            (B, HW, C) float visual tokens, row-major over the H x W grid.
        lang : torch.Tensor
            (B, D, N) float word features.
        lang_mask : torch.Tensor
            (B, N, 1) float, 1 for real tokens and 0 for padding.

        Returns
        -------
        torch.Tensor
            (B, HW, C) float multimodal features F.
        """
        batch, hw, channels = x.shape
        heads, head_dim = self.num_heads, channels // self.num_heads
        x_t = x.transpose(1, 2)  # (B, C, HW)
        visual = self.dropout(F.gelu(self.visual_proj(x_t)))
        word_mask = lang_mask.transpose(1, 2)  # (B, 1, N)
        query = self.norm_query(self.query_proj(x_t))  # (B, C, HW)
        key = self.key_proj(lang) * word_mask  # (B, C, N)
        value = self.value_proj(lang) * word_mask  # (B, C, N)
        n_words = key.shape[-1]
        query = query.reshape(batch, heads, head_dim, hw).transpose(-1, -2)  # (B, h, HW, d)
        key = key.reshape(batch, heads, head_dim, n_words)  # (B, h, d, N)
        value = value.reshape(batch, heads, head_dim, n_words).transpose(-1, -2)  # (B, h, N, d)
        scores = (query @ key) * channels**-0.5  # (B, h, HW, N)
        scores = scores + 10000.0 * word_mask.unsqueeze(1) - 10000.0
        attended = scores.softmax(dim=-1) @ value  # (B, h, HW, d)
        attended = attended.permute(0, 2, 1, 3).reshape(batch, hw, channels)  # heads merged
        lang_at_pixel = self.norm_out(self.out_proj(attended.transpose(1, 2)))  # (B, C, HW)
        fused = self.dropout(F.gelu(self.fusion_proj(visual * lang_at_pixel)))
        return fused.transpose(1, 2)  # (B, HW, C)


class LanguageGate(nn.Module):
    """Element-wise gate ``tanh(W2 relu(W1 f))`` with values in (-1, 1).

    Parameters
    ----------
    dim : int
        Channels C of the stage.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.fc2 = nn.Linear(dim, dim, bias=False)
        for layer in (self.fc1, self.fc2):
            nn.init.trunc_normal_(layer.weight, std=0.02)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """Gate values for (B, HW, C) float features; returns the same shape."""
        return torch.tanh(self.fc2(F.relu(self.fc1(fused))))
