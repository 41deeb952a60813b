"""LAVT model and its registry of sizes.

``build_lavt(name)`` builds one entry of :data:`LAVT_SPECS`:

=================  =========================  =====================================  =========
name               Swin (C, depths, heads)    text encoder                            input px
=================  =========================  =====================================  =========
``swin_tiny``      96, 2-2-6-2, 3-6-12-24     BERT-base, layers 0-9 trained           480
``swin_small``     96, 2-2-18-2, 3-6-12-24    BERT-base, layers 0-9 trained           480
``swin_base``      128, 2-2-18-2, 4-8-16-32   BERT-base, layers 0-9 trained           480
``swin_large``     192, 2-2-18-2, 6-12-24-48  BERT-base, layers 0-9 trained           480
``tiny``           32, 1-1-2-1, 1-2-4-8, w4   MiniLM-L6 (packaged), first 2 layers    128
``tiny_random``    32, 1-1-2-1, 1-2-4-8, w4   random BERT, 64 wide, 2 layers          128
=================  =========================  =====================================  =========

All Swin sizes use window 12 (the ``*_window12_384_22k`` checkpoints), drop-path 0.3, PWAM with
one head and no dropout, decoder width 4C. ``tiny`` and ``tiny_random`` are CPU demo sizes, not
LAVT sizes: decoder width 64, drop-path 0.1; ``tiny`` keeps MiniLM's first two layers (trained)
and freezes its pretrained embeddings, ``tiny_random`` trains everything. Forward + backward of
a batch of 8 at 128 px takes about 0.15 s on 2 idle CPU cores (0.26 s on one thread; with two
threads on cores busy with other work, OpenMP stalls can make it 10x slower: use
``torch.set_num_threads(1)`` on a shared machine). The model maps (image, token ids, mask) to
two-class logits at the input size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import MultimodalSwin
from .decoder import LAVTDecoder
from .swin import SWIN_SPECS, LoadReport, build_swin, load_swin_checkpoint
from .text import TextEncoder, TextSpec, build_text_encoder

__all__ = ["LAVT", "LAVT_SPECS", "LAVTSpec", "build_lavt", "param_groups"]


@dataclass(frozen=True)
class LAVTSpec:
    """Everything that defines one LAVT configuration.

    Parameters
    ----------
    swin : str
        Key of :data:`.swin.SWIN_SPECS`.
    text : TextSpec
        Language encoder.
    img_size : int
        Square input size in pixels.
    pwam_heads : tuple of int
        PWAM heads per stage.
    fusion_drop : float
        PWAM dropout.
    decoder_hidden : int or None
        Decoder width; None means 4 * C (LAVT's rule, 512 for Swin-B).
    drop_path_rate : float or None
        Override the Swin spec's stochastic-depth rate.
    """

    swin: str
    text: TextSpec = field(default_factory=TextSpec)
    img_size: int = 480
    pwam_heads: tuple[int, int, int, int] = (1, 1, 1, 1)
    fusion_drop: float = 0.0
    decoder_hidden: int | None = None
    drop_path_rate: float | None = None


_BERT = TextSpec(kind="bert-base", trainable_layers=10)

#: Registry of named configurations (see the module docstring).
LAVT_SPECS: dict[str, LAVTSpec] = {
    "swin_tiny": LAVTSpec("tiny", _BERT),
    "swin_small": LAVTSpec("small", _BERT),
    "swin_base": LAVTSpec("base", _BERT),
    "swin_large": LAVTSpec("large", _BERT),
    "tiny": LAVTSpec(
        "toy", TextSpec("minilm", num_layers=2, trainable_layers=2), 128, decoder_hidden=64
    ),
    "tiny_random": LAVTSpec(
        "toy", TextSpec("bert-random-small", trainable_layers=None), 128, decoder_hidden=64
    ),
}


class LAVT(nn.Module):
    """Language-aware vision transformer for referring segmentation.

    Parameters
    ----------
    backbone : MultimodalSwin
    decoder : LAVTDecoder
    text_encoder : TextEncoder
    spec : LAVTSpec
        Kept for reference (``model.spec``).
    """

    def __init__(
        self,
        backbone: MultimodalSwin,
        decoder: LAVTDecoder,
        text_encoder: TextEncoder,
        spec: LAVTSpec,
    ):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.text_encoder = text_encoder
        self.spec = spec

    def forward(
        self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Segment the referent.

        Parameters
        ----------
        image : torch.Tensor
            (B, 3, H, W) float, ImageNet-normalised; H = W = ``spec.img_size``.
        input_ids : torch.Tensor
            (B, N) int64 token ids.
        attention_mask : torch.Tensor
            (B, N) int64, 1 on real tokens.

        Returns
        -------
        torch.Tensor
            (B, 2, H, W) float logits; channel 1 is the referent. ``argmax`` over dim 1 gives
            the mask (equal to ``softmax[:, 1] > 0.5``).
        """
        words = self.text_encoder(input_ids, attention_mask)  # (B, N, D)
        lang = words.transpose(1, 2)  # (B, D, N)
        lang_mask = attention_mask.unsqueeze(-1).to(lang.dtype)  # (B, N, 1)
        features = self.backbone(image, lang, lang_mask)
        logits = self.decoder(features)  # (B, 2, H/4, W/4)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)


def build_lavt(
    name: str,
    *,
    img_size: int | None = None,
    swin_weights: str | Path | None = None,
    bert_weights: str | Path | None = None,
    dynamic_size: bool = False,
    verbose: bool = True,
    **overrides,
) -> LAVT:
    """Build a LAVT model by name.

    Parameters
    ----------
    name : str
        Key of :data:`LAVT_SPECS`.
    img_size : int, optional
        Input size in pixels (default: the spec's). Masks are built for it.
    swin_weights : str or Path, optional
        Official Swin checkpoint, e.g. ``swin_base_patch4_window12_384_22k.pth``. Missing and
        unexpected keys are printed (``verbose``) and stored in ``model.load_reports``.
    bert_weights : str or Path, optional
        Local Hugging Face checkpoint directory of the text encoder
        (:func:`.text.load_bert_directory`): ``bert-base-uncased`` for the Swin models, the
        official ``sentence-transformers/all-MiniLM-L6-v2`` for ``tiny`` (default there: the
        offline demo's fallback package).
    dynamic_size : bool
        Accept inputs of any size (slower).
    verbose : bool
        Print load reports.
    **overrides
        Replace fields of the spec (``pwam_heads``, ``decoder_hidden``, ``text``, ...).

    Returns
    -------
    LAVT
        In train mode, on the current default device.
    """
    if name not in LAVT_SPECS:
        raise ValueError(f"unknown LAVT configuration {name!r}; choose one of {list(LAVT_SPECS)}")
    spec = dataclasses.replace(LAVT_SPECS[name], **overrides)
    if img_size is not None:
        spec = dataclasses.replace(spec, img_size=img_size)
    swin_spec = SWIN_SPECS[spec.swin]
    if spec.drop_path_rate is not None:
        swin_spec = dataclasses.replace(swin_spec, drop_path_rate=spec.drop_path_rate)
    swin = build_swin(swin_spec, spec.img_size, dynamic_size=dynamic_size)
    reports: dict[str, LoadReport] = {}
    if swin_weights is not None:
        reports["swin"] = load_swin_checkpoint(swin, swin_weights)
        if verbose:
            print(f"Swin weights {swin_weights}: {reports['swin']}")
    text_encoder = build_text_encoder(spec.text, bert_weights)
    if text_encoder.load_report is not None:
        reports["bert"] = text_encoder.load_report
        if verbose:
            source = bert_weights if bert_weights is not None else "(offline fallback package)"
            print(f"text encoder weights {source}: {reports['bert']}")
    dims = swin_spec.stage_dims
    backbone = MultimodalSwin(
        swin,
        dims,
        text_encoder.hidden_size,
        pwam_heads=spec.pwam_heads,
        fusion_drop=spec.fusion_drop,
    )
    decoder = LAVTDecoder(dims, spec.decoder_hidden or 4 * swin_spec.embed_dim)
    model = LAVT(backbone, decoder, text_encoder, spec)
    model.load_reports = reports
    return model


def param_groups(model: LAVT, weight_decay: float = 1e-2) -> list[dict]:
    """AdamW parameter groups of the LAVT recipe.

    Backbone parameters whose name contains ``norm``, ``absolute_pos_embed`` or
    ``relative_position_bias_table`` get no weight decay; the rest of the backbone (PWAM and gates
    included), the decoder and the trainable text-encoder parameters get ``weight_decay``.
    Frozen parameters are left out.

    Parameters
    ----------
    model : LAVT
    weight_decay : float
        Decay of the decayed groups (LAVT: 1e-2).

    Returns
    -------
    list of dict
        ``[{"params": [...], "weight_decay": w, "name": str}, ...]``, empty groups dropped.
    """
    no_decay_words = ("norm", "absolute_pos_embed", "relative_position_bias_table")
    groups = {"backbone_no_decay": [], "backbone": [], "decoder": [], "text": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("backbone."):
            key = "backbone_no_decay" if any(w in name for w in no_decay_words) else "backbone"
        elif name.startswith("decoder."):
            key = "decoder"
        else:
            key = "text"
        groups[key].append(param)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if key == "backbone_no_decay" else weight_decay,
            "name": key,
        }
        for key, params in groups.items()
        if params
    ]
