"""Load trained LAVT checkpoints: the official release layout and our own.

Official layout (LAVT-RIS ``model_best_*.pth``): a dict with ``"model"`` (the segmentation
network) and ``"bert_model"`` (BERT without pooler). Key mapping onto our modules:

=====================================================  =============================================
official key (``model``)                               ours
=====================================================  =============================================
``backbone.patch_embed.*``                             ``backbone.swin.patch_embed.*``
``backbone.layers.{i}.blocks.{j}.*``                   ``backbone.swin.layers.{i}.blocks.{j}.*``
``backbone.layers.{i}.downsample.*`` (i = 0..2)        ``backbone.swin.layers.{i+1}.downsample.*``
``backbone.layers.{i}.fusion.vis_project.0.*``         ``backbone.fusions.{i}.visual_proj.*``
``...fusion.image_lang_att.f_query.0.*``               ``backbone.fusions.{i}.query_proj.*``
``...fusion.image_lang_att.f_key.0.*``                 ``backbone.fusions.{i}.key_proj.*``
``...fusion.image_lang_att.f_value.0.*``               ``backbone.fusions.{i}.value_proj.*``
``...fusion.image_lang_att.W.0.*``                     ``backbone.fusions.{i}.out_proj.*``
``...fusion.project_mm.0.*``                           ``backbone.fusions.{i}.fusion_proj.*``
``backbone.layers.{i}.res_gate.{0,2}.weight``          ``backbone.gates.{i}.{fc1,fc2}.weight``
``backbone.norm{i}.*``                                 ``backbone.stage_norms.{i}.*``
``classifier.{conv1,bn1,conv2,bn2}_{4,3,2}.*``         ``decoder.fuse.{0,1,2}.{conv1,...,bn2}.*``
``classifier.conv1_1.*``                               ``decoder.classifier.*``
``bert_model``: ``*``                                  ``text_encoder.bert.*``
=====================================================  =============================================

Ignored on purpose: ``*.relative_position_index`` and ``*.attn_mask`` (timm rebuilds them),
the stage-4 gate ``backbone.layers.3.res_gate.*`` (computed but unused in LAVT; we do not build
it), BERT's ``pooler.*`` and ``embeddings.position_ids``.

Our layout: ``{"model": LAVT.state_dict(), ...}`` or a bare state dict.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from .swin import LoadReport, read_checkpoint

__all__ = ["load_lavt_checkpoint", "load_official_lavt", "official_to_ours"]

_FUSION = {
    "vis_project.0": "visual_proj",
    "image_lang_att.f_query.0": "query_proj",
    "image_lang_att.f_key.0": "key_proj",
    "image_lang_att.f_value.0": "value_proj",
    "image_lang_att.W.0": "out_proj",
    "project_mm.0": "fusion_proj",
}
_DECODER_STEP = {"4": 0, "3": 1, "2": 2}


def official_to_ours(key: str) -> str | None:
    """Map one key of an official LAVT ``model`` state dict to ours.

    Parameters
    ----------
    key : str
        e.g. ``"backbone.layers.0.downsample.reduction.weight"``.

    Returns
    -------
    str or None
        Our key (e.g. ``"backbone.swin.layers.1.downsample.reduction.weight"``), None for keys
        ignored on purpose, or the key unchanged when it matches no rule (it is then reported
        as unexpected).
    """
    if key.endswith(("relative_position_index", "attn_mask")):
        return None
    if key.startswith("backbone.patch_embed."):
        return "backbone.swin." + key[len("backbone.") :]
    match = re.fullmatch(r"backbone\.layers\.(\d+)\.(.+)", key)
    if match:
        stage, rest = int(match.group(1)), match.group(2)
        if rest.startswith("blocks."):
            return f"backbone.swin.layers.{stage}.{rest}"
        if rest.startswith("downsample."):
            return f"backbone.swin.layers.{stage + 1}.{rest}"
        if rest.startswith("fusion."):
            for theirs, ours in _FUSION.items():
                if rest.startswith(f"fusion.{theirs}."):
                    return f"backbone.fusions.{stage}.{ours}.{rest.rsplit('.', 1)[1]}"
        gate = re.fullmatch(r"res_gate\.([02])\.weight", rest)
        if gate:
            if stage == 3:
                return None
            return f"backbone.gates.{stage}.{'fc1' if gate.group(1) == '0' else 'fc2'}.weight"
        return key
    match = re.fullmatch(r"backbone\.norm(\d)\.(.+)", key)
    if match:
        return f"backbone.stage_norms.{match.group(1)}.{match.group(2)}"
    match = re.fullmatch(r"classifier\.(conv|bn)([12])_([1234])\.(.+)", key)
    if match:
        kind, index, step, rest = match.groups()
        if (kind, index, step) == ("conv", "1", "1"):
            return f"decoder.classifier.{rest}"
        if step in _DECODER_STEP:
            return f"decoder.fuse.{_DECODER_STEP[step]}.{kind}{index}.{rest}"
    return key


def load_official_lavt(model: nn.Module, checkpoint: str | Path | dict) -> LoadReport:
    """Load an official LAVT release checkpoint into our :class:`.model.LAVT`.

    Parameters
    ----------
    model : LAVT
        Built with the matching size (e.g. ``build_lavt("swin_base")``).
    checkpoint : str, Path or dict
        ``.pth`` path or loaded dict with ``"model"`` and (optionally) ``"bert_model"``.

    Returns
    -------
    LoadReport
        Missing keys (ours not filled), unexpected keys (theirs not placed), ignored keys.
    """
    state = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    if "model" not in state:
        raise ValueError(
            "not an official LAVT checkpoint: no 'model' entry; expected "
            "{'model': ..., 'bert_model': ...} as saved by LAVT-RIS train.py"
        )
    mapped, ignored, unexpected = {}, [], []
    for key, value in state["model"].items():
        ours = official_to_ours(key)
        if ours is None:
            ignored.append(key)
        else:
            mapped[ours] = value
    for key, value in state.get("bert_model", {}).items():
        if key.startswith("pooler.") or key.endswith("position_ids"):
            ignored.append("bert_model." + key)
        else:
            mapped["text_encoder.bert." + key] = value
    own = model.state_dict()
    for key in list(mapped):
        if key not in own:
            unexpected.append(key)
            del mapped[key]
        elif mapped[key].shape != own[key].shape:
            raise ValueError(
                f"checkpoint tensor for {key} has shape {tuple(mapped[key].shape)} but the model "
                f"expects {tuple(own[key].shape)}; build the model size the checkpoint was "
                "trained with (e.g. build_lavt('swin_base')) and the same window size"
            )
    result = model.load_state_dict(mapped, strict=False)
    return LoadReport(list(result.missing_keys), unexpected, ignored)


def load_lavt_checkpoint(
    model: nn.Module, checkpoint: str | Path | dict, *, key: str = "model"
) -> LoadReport:
    """Load a LAVT checkpoint in either layout, detected from its keys.

    Parameters
    ----------
    model : LAVT
    checkpoint : str, Path or dict
        Official layout (``"bert_model"`` entry, or ``backbone.layers.*.fusion`` keys) or ours
        (``{key: state_dict, ...}`` or a bare state dict of :class:`.model.LAVT`).
    key : str
        Entry holding our state dict (e.g. ``"teacher"`` for a SemiRES checkpoint that stores
        teacher and student); ignored for the official layout.

    Returns
    -------
    LoadReport
    """
    state = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    if "bert_model" in state:
        return load_official_lavt(model, state)
    if key != "model" and key not in state:
        raise KeyError(f"checkpoint has no entry {key!r}; entries: {sorted(state)[:10]}")
    weights = state.get(key, state)
    official = "bert_model" in state or any(".fusion." in k for k in weights)
    if official:
        return load_official_lavt(model, state if "model" in state else {"model": state})
    result = model.load_state_dict(weights, strict=False)
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys), [])
