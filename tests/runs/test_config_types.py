"""Config values of the wrong type are one clear error, before any run directory is made."""

import json

import pytest
from click.testing import CliRunner

from ssl_keras.cli.main import main
from ssl_keras.compare.compare_config import CompareConfig
from ssl_keras.runs.config import (
    ConfigError,
    DetectConfig,
    PretrainConfig,
    ProbeConfig,
    build_config,
)


def _file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "cls,name,text,message",
    [
        (PretrainConfig, "p.yaml", "epochs: ten\n", "epochs must be int; got 'ten'"),
        (PretrainConfig, "p.yaml", 'batch_size: "8"\n', "batch_size must be int; got '8'"),
        (PretrainConfig, "p.yaml", "epochs: 1.5\n", "epochs must be int; got 1.5"),
        (PretrainConfig, "p.yaml", "epochs: yes\n", "epochs must be int; got True"),
        (PretrainConfig, "p.yaml", "export: 1\n", "export must be bool; got 1"),
        (PretrainConfig, "p.yaml", "learning_rate: 1e-3\n", "write it without quotes, with a dot"),
        (PretrainConfig, "p.yaml", "method: [simclr]\n", "method must be str; got ['simclr']"),
        (DetectConfig, "d.json", '{"epochs": "2"}', "epochs must be int; got '2'"),
        (DetectConfig, "d.json", '{"label_fraction": "half"}', "label_fraction must be float"),
        (DetectConfig, "d.json", '{"epochs": null}', "epochs cannot be null"),
        (CompareConfig, "c.yaml", "seeds: 2.0\n", "seeds must be int; got 2.0"),
        (CompareConfig, "c.yaml", 'epochs: "2"\n', "epochs must be int; got '2'"),
        (ProbeConfig, "r.yaml", "k: many\n", "k must be int; got 'many'"),
        (ProbeConfig, "r.yaml", "temperature: hot\n", "temperature must be float; got 'hot'"),
    ],
)
def test_a_config_file_value_of_the_wrong_type_names_file_key_type_and_value(
    tmp_path, cls, name, text, message
):
    path = _file(tmp_path, name, text)
    with pytest.raises(ConfigError) as error:
        build_config(cls, config_file=str(path), out=str(tmp_path / "run"))
    assert str(error.value).startswith(f"config file {path}: ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_ints_are_floats_but_bools_are_not_ints(tmp_path):
    path = _file(tmp_path, "p.yaml", "temperature: 1\nwarmup_epochs: 0\nmixed_precision: false\n")
    config = build_config(PretrainConfig, config_file=str(path))
    assert config.temperature == 1 and config.warmup_epochs == 0
    for cls in (PretrainConfig, DetectConfig, ProbeConfig):
        with pytest.raises(ConfigError, match="--epochs must be int; got True"):
            cls(epochs=True).validate()
        with pytest.raises(ConfigError, match="--seed must be int; got '1'"):
            cls(seed="1").validate()
    with pytest.raises(ConfigError, match="--seeds must be int; got '2'"):
        CompareConfig(seeds="2").validate()


@pytest.mark.parametrize("command", ["pretrain", "detect", "compare", "probe"])
def test_the_cli_reports_it_in_one_line_and_creates_nothing(tmp_path, command):
    path = _file(tmp_path, "bad.json", json.dumps({"epochs": "2"}))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [command, "--config", str(path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip()
        == f"Error: config file {path}: epochs must be int; got '2' (a string; write it without quotes)"
    )
    assert not out.exists()
