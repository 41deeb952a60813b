"""LAVT model: shapes for every Swin size, tiny training step, checkpoints, parameter count."""

from __future__ import annotations

import re

import pytest
import torch

from examples.semires_lavt.lavt import (
    LAVT_SPECS,
    SWIN_SPECS,
    build_lavt,
    load_lavt_checkpoint,
    load_official_lavt,
    load_swin_checkpoint,
    param_groups,
)
from examples.semires_lavt.lavt.swin import build_swin


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()


# ---------------------------------------------------------------------------------------------
# Hand derivation of the parameter count from the layer tables of the facts (sections 1.1-1.5),
# written without looking at the model code.


def lavt_backbone_decoder_params(
    C: int,
    depths: tuple[int, ...],
    heads: tuple[int, ...],
    window: int,
    lang_dim: int = 768,
    stage4_gate: bool = True,
) -> int:
    """LAVT parameters without the language model (official layout when stage4_gate)."""
    dims = [C, 2 * C, 4 * C, 8 * C]
    n = (3 * 4 * 4 * C + C) + 2 * C  # patch embed: Conv2d(3, C, k4, s4) + LayerNorm(C)
    table = (2 * window - 1) ** 2  # relative-position bias entries per head
    for i, (d, depth, h) in enumerate(zip(dims, depths, heads)):
        block = (
            2 * d  # norm1
            + (d * 3 * d + 3 * d)  # qkv with bias
            + table * h  # relative position bias table
            + (d * d + d)  # attention output projection
            + 2 * d  # norm2
            + (d * 4 * d + 4 * d)  # fc1
            + (4 * d * d + d)  # fc2
        )
        n += depth * block
        if i < 3:  # PatchMerging at the end of stage i: LayerNorm(4d) + Linear(4d -> 2d, no bias)
            n += 2 * 4 * d + 4 * d * 2 * d
        # PWAM: vis_project, f_query, W, project_mm (C -> C) and f_key, f_value (768 -> C), bias
        n += 4 * (d * d + d) + 2 * (lang_dim * d + d)
        if i < 3 or stage4_gate:
            n += 2 * d * d  # res_gate: two Linear(C, C, bias=False)
        n += 2 * d  # norm_i (LayerNorm on the PWAM output)
    hidden = 4 * C  # 512 for Swin-B

    def cbr(cin: int) -> int:  # Conv3x3 (no bias) + BatchNorm (weight, bias)
        return cin * hidden * 9 + 2 * hidden

    n += cbr(dims[3] + dims[2]) + cbr(hidden)
    n += cbr(hidden + dims[1]) + cbr(hidden)
    n += cbr(hidden + dims[0]) + cbr(hidden)
    n += hidden * 2 + 2  # final 1x1 conv with bias
    return n


def bert_base_params_without_pooler() -> int:
    vocab, hidden, inter, positions, types, layers = 30522, 768, 3072, 512, 2, 12
    embeddings = vocab * hidden + positions * hidden + types * hidden + 2 * hidden
    layer = (
        3 * (hidden * hidden + hidden)  # query, key, value
        + (hidden * hidden + hidden)  # attention output dense
        + 2 * hidden  # attention LayerNorm
        + (hidden * inter + inter)  # intermediate
        + (inter * hidden + hidden)  # output dense
        + 2 * hidden  # output LayerNorm
    )
    return embeddings + layers * layer


def test_hand_derivation_matches_published_bert_size():
    # bert-base-uncased has 109,482,240 parameters with its pooler (768 x 768 + 768).
    assert bert_base_params_without_pooler() + 768 * 768 + 768 == 109_482_240


def test_swin_base_lavt_parameter_count():
    _quiet_transformers()
    with torch.device("meta"):
        model = build_lavt("swin_base", verbose=False)
    counts = {"backbone_decoder": 0, "text": 0}
    for name, p in model.named_parameters():
        counts["text" if name.startswith("text_encoder.") else "backbone_decoder"] += p.numel()
    official = lavt_backbone_decoder_params(128, (2, 2, 18, 2), (4, 8, 16, 32), 12)
    stage4_gate = 2 * 1024 * 1024  # built by LAVT but unused; we do not build it
    assert counts["backbone_decoder"] == official - stage4_gate
    assert counts["text"] == bert_base_params_without_pooler()


@pytest.mark.parametrize("name", ["swin_tiny", "swin_small", "swin_base", "swin_large"])
def test_forward_shapes_at_480_on_meta(name):
    """Full-size models are built on the meta device (no memory, no compute).

    BERT's forward cannot run on meta (transformers inspects mask values), so the text encoder
    is replaced by a stub returning (B, 20, 768) features; its size is checked separately.
    """
    _quiet_transformers()
    spec = SWIN_SPECS[LAVT_SPECS[name].swin]
    with torch.device("meta"):
        model = build_lavt(name, verbose=False)
        model.text_encoder.forward = lambda ids, mask: torch.zeros(ids.shape[0], ids.shape[1], 768)
        image = torch.zeros(2, 3, 480, 480)
        ids = torch.zeros(2, 20, dtype=torch.long)
        mask = torch.ones(2, 20, dtype=torch.long)
        features = model.backbone(image, torch.zeros(2, 768, 20), torch.ones(2, 20, 1))
        logits = model(image, ids, mask)
    assert model.text_encoder.hidden_size == 768
    c = spec.embed_dim
    expected = [(2, c, 120, 120), (2, 2 * c, 60, 60), (2, 4 * c, 30, 30), (2, 8 * c, 15, 15)]
    assert [tuple(f.shape) for f in features] == expected
    assert tuple(logits.shape) == (2, 2, 480, 480)
    # window 12 in every stage, never clamped (stage 4 is 15x15 and keeps its shift of 6)
    last_block = model.backbone.swin.layers[3].blocks[1]
    assert tuple(last_block.window_size) == (12, 12) and tuple(last_block.shift_size) == (6, 6)


def test_bert_trains_layers_zero_to_nine_only():
    _quiet_transformers()
    with torch.device("meta"):
        model = build_lavt("swin_base", verbose=False)
    trainable = {
        int(m.group(1))
        for n, p in model.text_encoder.named_parameters()
        if p.requires_grad and (m := re.search(r"encoder\.layer\.(\d+)\.", n))
    }
    assert trainable == set(range(10))
    frozen = [n for n, p in model.text_encoder.named_parameters() if not p.requires_grad]
    assert any("embeddings" in n for n in frozen) and any("layer.11." in n for n in frozen)


def test_tiny_forward_backward_on_cpu():
    _quiet_transformers()
    torch.manual_seed(0)
    model = build_lavt("tiny", verbose=False)
    model.train()
    assert not model.text_encoder.bert.training  # BERT dropout stays off (LAVT)
    size = model.spec.img_size
    image = torch.randn(2, 3, size, size)
    ids = torch.tensor([[101, 1996, 2417, 4418, 102] + [0] * 15] * 2)
    mask = (ids > 0).long()
    target = torch.randint(0, 2, (2, size, size))
    logits = model(image, ids, mask)
    assert logits.shape == (2, 2, size, size)
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values()), "every trainable parameter gets a gradient"
    assert grads["backbone.fusions.0.key_proj.weight"].abs().sum() > 0
    assert grads["backbone.gates.2.fc2.weight"].abs().sum() > 0
    assert not hasattr(model.backbone.gates, "3")  # unused stage-4 gate not built
    groups = param_groups(model)
    ids_in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids_in_groups) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_pad_then_shift_attention_matches_timm_on_padded_input():
    """LAVT pads to a window multiple before the cyclic shift; equivalently, timm's own
    attention run on the already padded map and cropped back (timm then has nothing to pad)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    swin = build_swin(SWIN_SPECS["toy"], img_size=80, dynamic_size=True)  # stage 3 is 5 x 5
    block = swin.layers[2].blocks[1]
    assert any(block.shift_size)
    x = torch.randn(2, 5, 5, block.dim)
    ours = block._attn(x)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 3, 0, 3))  # 5 -> 8, a multiple of 4
    reference = SwinTransformerBlock._attn(block, padded)[:, :5, :5]
    torch.testing.assert_close(ours, reference)
    # and at a multiple of the window both orders agree with timm directly
    y = torch.randn(2, 8, 8, block.dim)
    torch.testing.assert_close(block._attn(y), SwinTransformerBlock._attn(block, y))


def test_load_original_swin_checkpoint_layout():
    torch.manual_seed(0)
    source = build_swin(SWIN_SPECS["toy"], img_size=64)
    # original Swin layout: downsample at the end of stage i, plus head, final norm, buffers
    original = {}
    for key, value in source.state_dict().items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.+)", key)
        original[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else key] = value
    original["norm.weight"] = torch.ones(256)
    original["norm.bias"] = torch.zeros(256)
    original["head.weight"] = torch.zeros(1000, 256)
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16).long()
    torch.manual_seed(1)
    target = build_swin(SWIN_SPECS["toy"], img_size=64)
    report = load_swin_checkpoint(target, {"model": original})
    assert report.missing == [] and report.unexpected == []
    assert "head.weight" in report.ignored and "norm.weight" in report.ignored
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


_FUSION_NAMES = {
    "visual_proj": "vis_project.0",
    "query_proj": "image_lang_att.f_query.0",
    "key_proj": "image_lang_att.f_key.0",
    "value_proj": "image_lang_att.f_value.0",
    "out_proj": "image_lang_att.W.0",
    "fusion_proj": "project_mm.0",
}


def _to_official_layout(state: dict) -> dict:
    """Rename our keys to the LAVT-RIS release layout (facts section 1.6), by hand."""
    model, bert = {}, {}
    for key, value in state.items():
        if key.startswith("text_encoder.bert."):
            bert[key[len("text_encoder.bert.") :]] = value
            continue
        new = None
        if key.startswith("backbone.swin.patch_embed."):
            new = "backbone." + key[len("backbone.swin.") :]
        elif m := re.match(r"backbone\.swin\.layers\.(\d+)\.downsample\.(.+)", key):
            new = f"backbone.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif m := re.match(r"backbone\.swin\.layers\.(\d+)\.blocks\.(.+)", key):
            new = f"backbone.layers.{m.group(1)}.blocks.{m.group(2)}"
        elif m := re.match(r"backbone\.fusions\.(\d)\.(\w+)\.(weight|bias)", key):
            new = f"backbone.layers.{m.group(1)}.fusion.{_FUSION_NAMES[m.group(2)]}.{m.group(3)}"
        elif m := re.match(r"backbone\.gates\.(\d)\.fc([12])\.weight", key):
            new = f"backbone.layers.{m.group(1)}.res_gate.{0 if m.group(2) == '1' else 2}.weight"
        elif m := re.match(r"backbone\.stage_norms\.(\d)\.(.+)", key):
            new = f"backbone.norm{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"decoder\.fuse\.(\d)\.(conv|bn)([12])\.(.+)", key):
            step = {"0": 4, "1": 3, "2": 2}[m.group(1)]
            new = f"classifier.{m.group(2)}{m.group(3)}_{step}.{m.group(4)}"
        elif key.startswith("decoder.classifier."):
            new = "classifier.conv1_1." + key[len("decoder.classifier.") :]
        assert new is not None, f"test mapping misses {key}"
        model[new] = value
    dim4 = state["backbone.stage_norms.3.weight"].shape[0]
    model["backbone.layers.3.res_gate.0.weight"] = torch.randn(dim4, dim4)  # unused in LAVT
    model["backbone.layers.3.res_gate.2.weight"] = torch.randn(dim4, dim4)
    model["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16).long()
    hidden = state["text_encoder.bert.embeddings.word_embeddings.weight"].shape[1]
    bert["pooler.dense.weight"] = torch.zeros(hidden, hidden)
    return {"model": model, "bert_model": bert}


def test_load_official_lavt_layout(tmp_path):
    _quiet_transformers()
    torch.manual_seed(0)
    source = build_lavt("tiny_random", verbose=False).eval()
    path = tmp_path / "model_best_refcoco.pth"
    torch.save(_to_official_layout(source.state_dict()), path)
    torch.manual_seed(1)
    target = build_lavt("tiny_random", verbose=False).eval()
    image = torch.randn(2, 3, 128, 128)
    ids = torch.tensor([[101, 2417, 4418, 102] + [0] * 16, [101, 2630, 102] + [0] * 17])
    mask = (ids > 0).long()
    with torch.no_grad():
        before = target(image, ids, mask)
    report = load_official_lavt(target, path)
    assert report.missing == [] and report.unexpected == []
    assert "backbone.layers.3.res_gate.0.weight" in report.ignored
    assert "bert_model.pooler.dense.weight" in report.ignored
    with torch.no_grad():
        expected, after = source(image, ids, mask), target(image, ids, mask)
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)
    # the format-detecting loader takes the same file
    torch.manual_seed(2)
    third = build_lavt("tiny_random", verbose=False).eval()
    load_lavt_checkpoint(third, path)
    with torch.no_grad():
        assert torch.equal(third(image, ids, mask), expected)


def test_unknown_names_and_missing_files_are_clear(tmp_path):
    with pytest.raises(ValueError, match="swin_base"):
        build_lavt("swin_huge")
    missing = tmp_path / "swin_base_patch4_window12_384_22k.pth"
    with pytest.raises(FileNotFoundError, match="swin_base_patch4_window12_384_22k"):
        load_swin_checkpoint(build_swin(SWIN_SPECS["toy"], img_size=64), missing)


def test_bert_weights_load_from_a_local_directory_with_report(tmp_path):
    """A local bert-base-uncased-style directory (here a tiny BERT saved with a pooler)."""
    from transformers import BertConfig, BertModel

    _quiet_transformers()
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    saved = BertModel(config, add_pooling_layer=True)
    saved.save_pretrained(tmp_path)
    from examples.semires_lavt.lavt.text import TextSpec, build_text_encoder

    encoder = build_text_encoder(TextSpec("bert-base", trainable_layers=1), tmp_path)
    report = encoder.load_report
    assert report.missing == [] and report.unexpected == []
    assert any(k.startswith("pooler.") for k in report.ignored)
    for key, value in encoder.bert.state_dict().items():
        assert torch.equal(value, saved.state_dict()[key]), key
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder(TextSpec("bert-base"), tmp_path / "absent")
