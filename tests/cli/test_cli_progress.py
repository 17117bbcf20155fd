"""Progress bars show a known step count from the first epoch on, fresh and resumed."""

import re

from click.testing import CliRunner
from test_case import TINY_ARGS

from ssl_keras.cli.main import main


def _bars(output):
    """The `done/total` step counts the Keras progress bars printed."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) ━", plain)]


def _run(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Unknown" not in result.output, result.output
    return result.output


def test_pretrain_epochs_show_their_step_count_fresh_and_resumed(tmp_path):
    out = str(tmp_path / "p")
    args = ["pretrain", "--data", "synthetic:64", "--out", out, *TINY_ARGS, "--no-export"]
    first = _run([*args, "--epochs", "1"])
    assert (1, 8) in _bars(first) and (8, 8) in _bars(first)  # 64 scenes / batch 8
    resumed = _run(["pretrain", "--out", out, "--resume", "--epochs", "2"])
    assert "Epoch 2/2" in resumed and (8, 8) in _bars(resumed)


def test_detect_phases_show_their_step_count(tmp_path):
    args = ["detect", "--data", "synthetic:64", "--backbone-name", "tiny", "--out"]
    args += [str(tmp_path / "d"), "--image-size", "32", "--batch-size", "16", "--epochs", "2"]
    output = _run([*args, "--head-epochs", "1", "--no-export"])
    bars = _bars(output)
    assert bars and all(0 < done <= total for done, total in bars)
    assert "Epoch 2/2" in output
