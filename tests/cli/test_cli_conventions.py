"""CLI conventions: fixed-value options are choices, exit codes follow the signal, probe options."""

import json
import signal

import pytest
from click.testing import CliRunner

from ssl_keras.cli.main import interrupted_exit_code, main


@pytest.mark.parametrize(
    "args,choices",
    [
        (["pretrain", "--optimizer", "adamm"], "'auto', 'adamw', 'lars', 'lamb'"),
        (["pretrain", "--method", "simclr2"], "'simclr', 'supervised'"),
        (["detect", "--mode", "frozen"], "'freeze', 'finetune', 'freeze-then-finetune'"),
        (["detect", "--resize", "strech"], "'stretch', 'letterbox'"),
        (["detect", "--head", "dense"], "'pooled', 'spatial'"),
        (["detect", "--class-balance", "weights"], "'none', 'weight'"),
        (["compare", "--model-selection", "best"], "'best-val', 'last'"),
        (["probe", "--method", "svm"], "'linear', 'knn', 'both'"),
    ],
)
def test_a_typo_in_a_fixed_value_option_lists_the_choices(tmp_path, args, choices):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "is not one of " + choices in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_the_exit_code_of_an_interruption_is_128_plus_its_signal():
    from ssl_keras.runs.resumable import TrainingInterrupted

    def interrupted(signal_name):
        message = f"stopped by {signal_name} at epoch 2, step 3; checkpoint c.keras; resume with: x"
        return TrainingInterrupted(message, checkpoint="c.keras", epoch=1, step=3)

    assert interrupted_exit_code(interrupted("SIGINT")) == 130
    assert interrupted_exit_code(interrupted("SIGTERM")) == 128 + signal.SIGTERM == 143
    assert interrupted_exit_code(KeyboardInterrupt("stopped by SIGTERM")) == 143
    assert interrupted_exit_code(KeyboardInterrupt()) == 130

    def worker_sigterm_raised_while_handling(parent_signal_name):
        try:
            try:
                raise KeyboardInterrupt(f"stopped by {parent_signal_name}")
            except KeyboardInterrupt:
                raise interrupted("SIGTERM") from None
        except TrainingInterrupted as error:
            return error

    # A parallel run stopped by SIGINT: the workers report the SIGTERM the parent sent them,
    # raised while the parent handles its own SIGINT.
    assert interrupted_exit_code(worker_sigterm_raised_while_handling("SIGINT")) == 130
    assert interrupted_exit_code(worker_sigterm_raised_while_handling("SIGTERM")) == 143


@pytest.mark.large
def test_probe_takes_its_epochs_k_and_temperature_from_options_and_config_file(tmp_path):
    config_file = tmp_path / "probe.yaml"
    config_file.write_text("k: 3\ntemperature: 0.5\nepochs: 2\n")
    out = tmp_path / "probe"
    args = ["probe", "--backbone", "scratch", "--backbone-name", "tiny", "--data", "synthetic:64"]
    args += ["--image-size", "32", "--method", "both", "--config", str(config_file)]
    result = CliRunner().invoke(main, [*args, "--temperature", "0.25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    options = json.loads((out / "config.json").read_text())["options"]
    assert (options["k"], options["temperature"], options["epochs"]) == (3, 0.25, 2)
    assert json.loads((out / "probe.json").read_text())["results"]["knn"]["k"] == 3
    result = CliRunner().invoke(main, ["probe", "--k", "0", "--out", str(tmp_path / "p2")])
    assert result.exit_code == 1 and "Error: --k must be an integer >= 1; got 0" in result.output
