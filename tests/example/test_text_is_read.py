"""The example's model reads its sentences: the tokeniser knows English words, and the model's
output changes when only the sentence changes (transformers 5.x once made it text-blind)."""

from __future__ import annotations

import pytest
import torch

from examples.semires_lavt.lavt import build_lavt
from examples.semires_lavt.lavt.text import check_tokenizer, minilm_path, tokenize


def _vocab_ids(words):
    """Ids from the vocabulary file itself: a WordPiece id is the word's line number (0-based)."""
    lines = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return [lines.index(w) for w in words]


def test_known_words_get_their_bert_base_uncased_ids(tokenizer):
    # published bert-base-uncased ids: [CLS] 101, [SEP] 102, "the" 1996, "man" 2158, "left" 2187
    ids, mask = tokenize(tokenizer, "The man on the LEFT", 20)
    assert ids[:7].tolist() == [101, 1996, 2158, 2006, 1996, 2187, 102]
    words = ["red", "blue", "circle", "square", "bottom"]
    ids, _ = tokenize(tokenizer, " ".join(words), 20)
    assert ids[1:6].tolist() == _vocab_ids(words)
    assert tokenizer.unk_token_id not in ids.tolist()
    assert len(tokenizer) == 30522


def test_a_vocabulary_that_did_not_load_is_refused(tmp_path):
    from transformers import BertTokenizerFast

    tiny = tmp_path / "vocab.txt"
    tiny.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", encoding="utf-8")
    broken = BertTokenizerFast.from_pretrained(str(tmp_path), local_files_only=True)
    with pytest.raises(ValueError, match=r"cannot read English.*\[UNK\]"):
        check_tokenizer(broken)


def test_build_tokenizer_names_a_missing_vocabulary(tmp_path):
    from examples.semires_lavt.lavt.text import build_tokenizer

    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        build_tokenizer(tmp_path)


@pytest.mark.parametrize("name", ["tiny", "tiny_random"])
def test_model_output_changes_when_only_the_sentence_changes(tokenizer, name):
    torch.manual_seed(0)
    model = build_lavt(name, verbose=False).eval()
    size = model.spec.img_size
    image = torch.randn(1, 3, size, size).expand(2, -1, -1, -1).contiguous()
    pairs = [tokenize(tokenizer, s, 20) for s in ("the red circle", "the blue square")]
    ids = torch.stack([p[0] for p in pairs])
    mask = torch.stack([p[1] for p in pairs])
    assert not torch.equal(ids[0], ids[1])  # the tokeniser told the sentences apart
    with torch.no_grad():
        logits = model(image, ids, mask)
        again = model(image, ids[:1].expand(2, -1), mask[:1].expand(2, -1))
    assert torch.equal(again[0], again[1])  # same image and sentence: same output
    assert (logits[0] - logits[1]).abs().max() > 1e-4  # only the sentence differs


def test_minilm_loads_its_pretrained_weights_without_a_pooler():
    from safetensors.torch import load_file

    model = build_lavt("tiny", verbose=False)
    bert = model.text_encoder.bert
    assert bert.pooler is None  # add_pooling_layer=False was honoured
    packaged = load_file(str(minilm_path() / "model.safetensors"))
    key = next(k for k in packaged if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(bert.embeddings.word_embeddings.weight, packaged[key])
