"""train.py configuration: typed YAML + overrides, and every Table 1 / Table 4 row runs a step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.semires_lavt.config import (
    METHODS,
    ConfigError,
    build_config,
    load_config,
    parse_overrides,
    read_yaml,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "semires_lavt" / "configs"


def test_unknown_keys_are_errors_naming_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lr_rate'.*Valid keys: .*\blr\b"):
        parse_overrides(["--lr-rate", "1e-4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1.0e-4\nema_rate: 0.99\n")
    with pytest.raises(ConfigError, match="unknown config key 'ema_rate'.*ema_decay"):
        load_config(bad)
    bad.write_text("semi:\n  unlabeled_batch_size: 3\n")
    with pytest.raises(ConfigError, match="unlabeled_batch_size"):
        load_config(bad)


def test_values_are_type_checked():
    with pytest.raises(ConfigError, match="lr='fast' is not a valid float"):
        parse_and_build(["--lr", "fast"])
    with pytest.raises(ConfigError, match="batch_size=2.5"):
        parse_and_build(["--batch-size", "2.5"])
    with pytest.raises(ConfigError, match="class_weight"):
        parse_and_build(["--class-weight", "[1, 2, 3]"])
    with pytest.raises(ConfigError, match="strategy='cpi-x'.*choose one of"):
        parse_and_build(["--strategy", "cpi-x"])
    cfg = parse_and_build(["--lr", "1e-4", "--set", "class_weight=[0.9, 1.1]", "--over=null"])
    assert cfg.lr == 1e-4 and cfg.class_weight == (0.9, 1.1) and cfg.over is None


def test_thresholds_follow_the_samrefine_strategy_registry():
    """The strategy reads the thresholds samrefine's registry names, no other."""
    from examples.semires_lavt.semires_step import SemiRESSettings

    def thresholds(argv):
        return SemiRESSettings.from_config(parse_and_build(argv)).thresholds

    assert thresholds(["--strategy", "iom"]) == {"iom_thresh": 0.5}
    assert thresholds(["--method", "semires-cpi-o"]) == {"over": 0.7}
    cpi_o = thresholds(["--method", "semires-cpi", "--under", "null"])
    assert cpi_o == {"under": None, "over": 0.7}
    # the reference-code preset sets over=0.7; CPI-U does not read it (it used to run full CPI)
    assert thresholds(["--preset", "reference-code", "--strategy", "cpi-u"]) == {"under": 0.7}
    with pytest.raises(ConfigError, match="'cpi-u' does not read over.*use strategy 'cpi'"):
        parse_and_build(["--strategy", "cpi-u", "--over", "0.7"])
    with pytest.raises(ConfigError, match="'iom' does not read under"):
        parse_and_build(["--strategy", "iom", "--under", "0.5"])
    with pytest.raises(ConfigError, match="'cpi-u' needs under"):
        parse_and_build(["--strategy", "cpi-u", "--under", "null"])


def parse_and_build(argv):
    return build_config([parse_overrides(argv)])


def test_layers_yaml_then_command_line_with_preset_method_and_sections(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "preset: reference-code\nlr: 1.0e-4\nstrategy: iom\n"
        "burnin:\n  batch_size: 8\nsemi:\n  batch_size: 3\n  lr: 2.0e-4\n"
    )
    semi = load_config(path)
    # preset values, then explicit YAML keys, then the semi section
    assert (semi.ema_decay, semi.class_weight, semi.loss_reduction) == (
        0.9996,
        (0.9, 1.1),
        "group-mean",
    )
    assert semi.strategy == "iom" and semi.lr == 2e-4 and semi.batch_size == 3
    burnin = load_config(path, ["--method", "supervised"])
    assert burnin.stage == "burnin" and burnin.batch_size == 8 and burnin.lr == 1e-4
    # a command-line method overrides the YAML strategy; a later explicit key overrides it
    baseline = load_config(path, ["--method", "baseline"])
    assert (baseline.strategy, baseline.pwa, baseline.conf_filter) == ("none", False, 0.0)
    iom = load_config(path, ["--method", "semires-cpi-u", "--strategy", "iom"])
    assert iom.strategy == "iom" and iom.pwa


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_bundled_configs_parse_for_every_method(path):
    raw = read_yaml(path)
    for method in METHODS:
        cfg = build_config([raw, {"method": method}])
        assert cfg.stage == METHODS[method]["stage"]
        if path.name != "demo.yaml":
            assert cfg.lr == 5e-5 and cfg.weight_decay == 1e-2 and cfg.model == "swin_base"
            assert cfg.ema_decay == 0.996  # the paper's EMA rate (Sec. 4.2)
            expected = (2, 40) if cfg.stage == "burnin" else (3, 40)
            assert (cfg.batch_size, cfg.epochs) == expected


# ---------------------------------------------------------------------------- rows run


ROWS = ["supervised", "baseline", "confidence-filter", "semires-iom", "semires-cpi-u"]


@pytest.fixture(scope="module")
def burnin_weights(synthetic_root, tmp_path_factory):
    from examples.semires_lavt.train import train

    out = tmp_path_factory.mktemp("rows") / "supervised"
    result = train(_row_config(synthetic_root, "supervised", out, tensorboard=True))
    return out, result


def _row_config(root, method, out, **changes):
    from tiny_settings import tiny_train_settings

    return build_config([tiny_train_settings(root, out, method=method, max_steps=1, **changes)])


@pytest.mark.parametrize("method", ROWS)
def test_each_table_row_runs_one_step(method, synthetic_root, library, burnin_weights, tmp_path):
    out, burnin = burnin_weights
    from examples.semires_lavt.train import train

    if method == "supervised":
        result = burnin
        assert (out / "tb").is_dir() and any((out / "tb").iterdir())  # TensorBoard written
    else:
        weights = str(out / "final.pth")
        out = tmp_path / method
        result = train(
            _row_config(synthetic_root, method, out, library=library, init_checkpoint=weights)
        )
    assert result["steps"] == 1
    saved = json.loads((out / "results.json").read_text())
    names = ["model"] if method == "supervised" else ["teacher", "student"]
    for name in names:
        assert 0.0 <= saved["final"][name]["oIoU"] <= 1.0
    resolved = read_yaml(out / "config.yaml")
    for key, value in METHODS[method].items():
        assert resolved[key] == value, key
    assert (out / "final.pth").is_file() and (out / "latest.pth").is_file()
