"""Swin Transformer backbone for LAVT, built on ``timm``.

LAVT (Yang et al., CVPR 2022) uses the segmentation flavour of Swin: patch 4, MLP ratio 4,
qkv bias, no absolute position embedding, drop-path rate 0.3 rising linearly over all blocks,
and the same window in every stage. Two details differ from timm's classification Swin and are
changed here so that official weights give the same outputs:

* **No window clamping.** timm shrinks the window (and drops the shift) when a feature map is
  not larger than the window; LAVT never does. We build timm with ``always_partition=True``.
* **Pad, then shift.** LAVT zero-pads a feature map to a multiple of the window *before* the
  cyclic shift, timm pads *after* it. The two agree when the map is a multiple of the window but
  not otherwise (stage 4 at 480 px input: 15x15 with window 12). :func:`build_swin` replaces
  each block's attention routine with :func:`_pad_then_shift_attention`.

timm puts the patch-merging layer at the *start* of stages 1-3 (``layers[i+1].downsample``)
whereas LAVT puts it at the end of stage i. The multimodal backbone
(:mod:`.backbone`) therefore runs ``layers[i]`` (downsample of the previous stage, then blocks),
then the PWAM of stage i, and hands the gated sum to ``layers[i+1]``.

Contents: :class:`SwinSpec`, :data:`SWIN_SPECS` (registry by name), :func:`build_swin`,
:func:`load_swin_checkpoint`.
"""

from __future__ import annotations

import argparse
import pickle
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import (
    SwinTransformer,
    checkpoint_filter_fn,
    window_partition,
    window_reverse,
)
from torch import nn

__all__ = ["SWIN_SPECS", "LoadReport", "SwinSpec", "build_swin", "load_swin_checkpoint"]


@dataclass(frozen=True)
class SwinSpec:
    """Size of a Swin backbone.

    Parameters
    ----------
    embed_dim : int
        Channels C of stage 1; stage i has ``C * 2**i`` channels.
    depths : tuple of int
        Number of blocks per stage (four stages).
    num_heads : tuple of int
        Attention heads per stage.
    window_size : int
        Square attention window, in tokens, the same in every stage.
    patch_size : int
        Patch-embedding stride in pixels.
    drop_path_rate : float
        Largest stochastic-depth rate (the last block's), in [0, 1).
    """

    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int = 12
    patch_size: int = 4
    drop_path_rate: float = 0.3

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channels of the four stages, ``(C, 2C, 4C, 8C)``."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


#: Swin sizes from the LAVT reference (window 12, as with the ``*_window12_384_22k`` weights),
#: plus ``toy``, a small Swin for CPU demos and tests.
SWIN_SPECS: dict[str, SwinSpec] = {
    "tiny": SwinSpec(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": SwinSpec(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": SwinSpec(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": SwinSpec(192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "toy": SwinSpec(32, (1, 1, 2, 1), (1, 2, 4, 8), window_size=4, drop_path_rate=0.1),
}


def _pad_then_shift_attention(self, x: torch.Tensor) -> torch.Tensor:
    """(Shifted-)window attention of one timm ``SwinTransformerBlock``, LAVT style.

    Bound as ``block._attn``. Pads right/bottom to a multiple of the window, then rolls by the
    shift, so the shift mask (built by timm on the padded size) lines up as in LAVT.

    Parameters
    ----------
    x : torch.Tensor
        (B, H, W, C) float, the output of the block's ``norm1``.

    Returns
    -------
    torch.Tensor
        (B, H, W, C) float, attention output before the residual.
    """
    _, height, width, channels = x.shape
    win_h, win_w = self.window_size
    pad_h = (win_h - height % win_h) % win_h
    pad_w = (win_w - width % win_w) % win_w
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = x.shape[1], x.shape[2]
    has_shift = any(self.shift_size)
    if has_shift:
        x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
    windows = _window_partition(x, self.window_size).view(-1, self.window_area, channels)
    mask = self.get_attn_mask(x) if self.dynamic_mask else self.attn_mask
    windows = self.attn(windows, mask=mask)  # (nW*B, win_h*win_w, C)
    windows = windows.view(-1, win_h, win_w, channels)
    x = _window_reverse(windows, self.window_size, padded_h, padded_w)  # (B, Hp, Wp, C)
    if has_shift:
        x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
    return x[:, :height, :width, :].contiguous()


def _window_partition(x: torch.Tensor, window_size: tuple[int, int]) -> torch.Tensor:

    return window_partition(x, window_size)


def _window_reverse(
    windows: torch.Tensor, window_size: tuple[int, int], height: int, width: int
) -> torch.Tensor:

    return window_reverse(windows, window_size, height, width)


def build_swin(spec: SwinSpec, img_size: int, *, dynamic_size: bool = False) -> nn.Module:
    """Build timm's ``SwinTransformer`` configured as LAVT's backbone.

    Parameters
    ----------
    spec : SwinSpec
        Backbone size (see :data:`SWIN_SPECS`).
    img_size : int
        Square input size in pixels (480 for LAVT). It fixes the attention masks; build at the
        size you train and evaluate at. Must be a multiple of ``spec.patch_size``.
    dynamic_size : bool
        If True, accept any input size (masks rebuilt on each forward; slower).

    Returns
    -------
    timm.models.swin_transformer.SwinTransformer
        Without classifier head and final norm (both replaced by identities). Its
        ``patch_embed`` returns NHWC tokens, each ``layers[i]`` maps NHWC to NHWC.
    """

    if img_size % spec.patch_size:
        raise ValueError(
            f"img_size={img_size} is not a multiple of the patch size {spec.patch_size}; "
            f"use e.g. {img_size - img_size % spec.patch_size}"
        )
    swin = SwinTransformer(
        img_size=img_size,
        patch_size=spec.patch_size,
        num_classes=0,
        global_pool="",
        embed_dim=spec.embed_dim,
        depths=spec.depths,
        num_heads=spec.num_heads,
        window_size=spec.window_size,
        always_partition=True,
        strict_img_size=not dynamic_size,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=spec.drop_path_rate,
    )
    swin.norm = nn.Identity()
    swin.head = nn.Identity()
    for stage in swin.layers:
        for block in stage.blocks:
            block._attn = types.MethodType(_pad_then_shift_attention, block)
    return swin


@dataclass
class LoadReport:
    """What a checkpoint load did.

    Attributes
    ----------
    missing : list of str
        Model keys absent from the checkpoint (left at their initial values).
    unexpected : list of str
        Checkpoint keys with no place in the model (not loaded).
    ignored : list of str
        Checkpoint keys dropped on purpose (classifier head, final norm, index buffers, ...).
    """

    missing: list[str]
    unexpected: list[str]
    ignored: list[str]

    def __str__(self) -> str:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        return (
            f"missing {len(self.missing)} [{show(self.missing)}]; "
            f"unexpected {len(self.unexpected)} [{show(self.unexpected)}]; "
            f"ignored {len(self.ignored)} [{show(self.ignored)}]"
        )


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds Python objects beyond tensors and plain containers (not loaded)."""


def read_checkpoint(path: str | Path) -> dict:
    """Load a ``.pth`` file on CPU with ``torch.load(weights_only=True)``.

    Only tensors, plain containers, numbers, strings and ``argparse.Namespace`` (the ``args``
    entry of official LAVT checkpoints) are admitted, so no code in the file runs.

    Raises
    ------
    FileNotFoundError
        When the file is missing.
    UnsafeCheckpointError
        When the file holds other objects (which unpickling would construct by running code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass the path of the downloaded .pth file"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path} holds Python objects other than tensors and plain containers ({reason}); "
            "it is not loaded, since unpickling them could run code from the file. Load it "
            "once in a trusted session and re-save only the weights, e.g. "
            "torch.save({'model': state_dict}, path)"
        ) from None


def load_swin_checkpoint(swin: nn.Module, checkpoint: str | Path | dict) -> LoadReport:
    """Load an official Swin checkpoint (e.g. ``swin_base_patch4_window12_384_22k.pth``).

    The original layout (downsample at the end of stage i) and timm's layout are both accepted;
    keys are remapped with timm's ``checkpoint_filter_fn`` (which also resizes relative-position
    tables when the window differs). The classifier head, the final norm and the non-persistent
    index/mask buffers are ignored.

    Parameters
    ----------
    swin : nn.Module
        A backbone from :func:`build_swin`.
    checkpoint : str, Path or dict
        File path, or an already loaded dict (with or without a ``"model"`` entry).

    Returns
    -------
    LoadReport
        Missing, unexpected and ignored keys.
    """

    state = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    state = state.get("model", state)
    ignored = [
        k
        for k in state
        if k.startswith(("head.", "norm.")) or k.endswith(("relative_position_index", "attn_mask"))
    ]
    kept = {k: v for k, v in state.items() if k not in set(ignored)}
    filtered = checkpoint_filter_fn(kept, swin)
    result = swin.load_state_dict(filtered, strict=False)
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys), ignored)
