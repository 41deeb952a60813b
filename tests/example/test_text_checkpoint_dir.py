"""The text encoder loads a local Hugging Face checkpoint directory in the layout of the official
``sentence-transformers/all-MiniLM-L6-v2`` (config.json, model.safetensors or pytorch_model.bin,
vocab.txt; weights with no prefix or a ``bert.`` / ``0.auto_model.`` prefix) and refuses one
that leaves weights unset. Checked on a tiny random BertModel saved with ``save_pretrained``
next to the packaged bert-base-uncased vocabulary."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file

from examples.semires_lavt.lavt import build_lavt
from examples.semires_lavt.lavt.text import (
    TextSpec,
    build_text_encoder,
    build_tokenizer,
    load_bert_directory,
    minilm_path,
    tokenize,
)

transformers = pytest.importorskip("transformers")


def _tiny_bert(seed: int = 0):
    """A random 2-layer, 32-wide BertModel with a pooler (as checkpoints are saved)."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return transformers.BertModel(config, add_pooling_layer=True)


@pytest.fixture
def checkpoint(tmp_path):
    """``(directory, saved model)``: save_pretrained output plus the packaged vocab.txt."""
    saved = _tiny_bert()
    folder = tmp_path / "all-MiniLM-tiny"
    saved.save_pretrained(folder)
    shutil.copy(minilm_path() / "vocab.txt", folder / "vocab.txt")
    return folder, saved


def _assert_same_weights(bert, saved):
    expected = saved.state_dict()
    got = bert.state_dict()
    assert set(got) == {k for k in expected if not k.startswith("pooler.")}
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key


def test_a_saved_checkpoint_loads_weight_for_weight(checkpoint):
    folder, saved = checkpoint
    assert (folder / "model.safetensors").is_file()  # what save_pretrained writes
    bert, report = load_bert_directory(folder)
    _assert_same_weights(bert, saved)
    assert bert.pooler is None and not bert.training
    assert report.missing == [] and report.unexpected == []
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(report.ignored)
    encoder = build_text_encoder(TextSpec("minilm", trainable_layers=None), folder)
    _assert_same_weights(encoder.bert, saved)
    assert encoder.load_report.missing == []


def _legacy_norm_names(key: str) -> str:
    """``...LayerNorm.weight`` -> ``...LayerNorm.gamma`` (``.bias`` -> ``.beta``), as in the
    TensorFlow-converted bert-base-uncased files."""
    if ".LayerNorm." not in key and not key.startswith("LayerNorm."):
        return key
    return key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"
    )


@pytest.mark.parametrize("prefix", ["bert.", "0.auto_model."])
@pytest.mark.parametrize("file_format", ["safetensors", "bin"])
@pytest.mark.parametrize("norm_names", ["weight/bias", "gamma/beta"])
def test_prefixed_and_pickled_layouts(checkpoint, prefix, file_format, norm_names):
    """``bert.`` (a BertFor... model's file), ``0.auto_model.`` (a SentenceTransformer state
    dict), the older ``pytorch_model.bin`` the official repository also ships, and the
    LayerNorm gamma/beta names of converted TensorFlow BERT files."""
    folder, saved = checkpoint
    rename = _legacy_norm_names if norm_names == "gamma/beta" else str
    state = {prefix + rename(k): v.clone() for k, v in saved.state_dict().items()}
    assert norm_names == "weight/bias" or any(k.endswith("LayerNorm.gamma") for k in state)
    state["cls.predictions.bias"] = torch.zeros(3)  # a head outside the prefix: ignored
    (folder / "model.safetensors").unlink()
    if file_format == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    bert, report = load_bert_directory(folder)
    _assert_same_weights(bert, saved)
    assert "cls.predictions.bias" in report.ignored and report.unexpected == []


def test_missing_weights_are_refused_not_left_random(checkpoint, tmp_path):
    folder, saved = checkpoint
    state = {k: v for k, v in saved.state_dict().items() if "layer.1." not in k}
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(RuntimeError, match=r"leaves \d+ weights of the model unset"):
        load_bert_directory(folder)
    with pytest.raises(RuntimeError, match="unset"):
        build_text_encoder(TextSpec("minilm"), folder)
    two = saved.state_dict() | {"bert." + k: v for k, v in saved.state_dict().items()}
    save_file({k: v.clone() for k, v in two.items()}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"one BERT model, found 2 \(prefixes \['', 'bert.'\]"):
        load_bert_directory(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        load_bert_directory(folder)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert_directory(tmp_path / "absent")


def test_a_non_bert_config_is_refused(checkpoint):
    folder, _ = checkpoint
    text = (
        (folder / "config.json").read_text().replace('"model_type": "bert"', '"model_type": "t5"')
    )
    (folder / "config.json").write_text(text)
    with pytest.raises(ValueError, match="'t5' model"):
        load_bert_directory(folder)


def test_the_tokeniser_is_read_and_checked_from_the_same_directory(checkpoint, tmp_path):
    folder, _ = checkpoint
    tokenizer = build_tokenizer(folder)
    ids, _ = tokenize(tokenizer, "The man on the LEFT", 20)
    assert ids[:7].tolist() == [101, 1996, 2158, 2006, 1996, 2187, 102]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read English"):
        build_tokenizer(broken)  # check_tokenizer still guards a directory's vocabulary


def test_lavt_reads_its_sentences_with_the_loaded_encoder(checkpoint):
    folder, saved = checkpoint
    torch.manual_seed(0)
    model = build_lavt("tiny", bert_weights=folder, verbose=False).eval()
    assert model.text_encoder.hidden_size == 32  # the checkpoint's, not the fallback's 384
    for key, value in model.text_encoder.bert.state_dict().items():
        assert torch.equal(value, saved.state_dict()[key]), key  # first 2 layers: all of them
    tokenizer = build_tokenizer(folder)
    size = model.spec.img_size
    image = torch.randn(1, 3, size, size).expand(2, -1, -1, -1).contiguous()
    pairs = [tokenize(tokenizer, s, 20) for s in ("the red circle", "the blue square")]
    ids = torch.stack([p[0] for p in pairs])
    mask = torch.stack([p[1] for p in pairs])
    with torch.no_grad():
        logits = model(image, ids, mask)
        again = model(image, ids[:1].expand(2, -1), mask[:1].expand(2, -1))
    assert torch.equal(again[0], again[1])  # same image and sentence: same output
    assert (logits[0] - logits[1]).abs().max() > 1e-4  # only the sentence differs


def test_loading_weights_draws_nothing_from_the_global_rng(checkpoint):
    """The model is initialised and then overwritten: that must not shift the random stream
    that later draws (the rest of the model's init, data order) use, or loading the same
    weights another way would change every result of a seeded run."""
    torch.manual_seed(0)
    want = torch.rand(4)
    torch.manual_seed(0)
    load_bert_directory(checkpoint[0])
    assert torch.equal(torch.rand(4), want)
