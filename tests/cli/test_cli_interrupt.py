"""Interruptions, NaN stops and reproducibility of the training commands, end to end.

The killed and interrupted runs are real `ssl-keras` processes sent SIGKILL or SIGINT; their
resumed weights are compared with an uninterrupted run of the same command and seed.
"""

import json
import os
import signal
import subprocess
import time

import keras
import pytest
from cli_runs import (
    command_args,
    copy_photos,
    finish,
    invoke,
    invoke_as_user,
    max_difference,
    model_weights,
    options,
    resume_args,
    start_cli,
    wait_while_running,
)

import ssl_keras.pretraining.simclr  # noqa: F401 - registers the classes stored in checkpoints
from test_case import TINY_ARGS

# Every test here runs training commands end to end (some as real processes), so they are slow.
pytestmark = pytest.mark.large

PRETRAIN = [
    *TINY_ARGS,
    *options(warmup_epochs=0, quiet=True, export=False, epochs=3, steps_per_epoch=60, seed=3),
]
DETECT = {
    "data": "synthetic:240",
    "backbone": "scratch",
    "backbone_name": "tiny",
    "image_size": 32,
    "batch_size": 4,
    "epochs": 3,
    "head_epochs": 1,
    "seed": 5,
    "quiet": True,
    "export": False,
}
"""The options of a tiny `ssl-keras detect` run, as `options` keywords."""
TOLERANCE = 1e-5  # the bound; on this CPU the weights match bitwise (difference 0.0)


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return copy_photos(shared_data, tmp_path_factory.mktemp("photos"), 32)


def detect_args(out, **changes):
    """`ssl-keras detect --out OUT` with the `DETECT` options, `changes` replacing some."""
    return ["detect", "--out", str(out), *options(**{**DETECT, **changes})]


def signal_during_epoch_2(process, out, sig, delay=0.25):
    """Sends `sig` a moment after epoch 1's checkpoint appears (mid-epoch 2)."""
    state = out / "checkpoints" / "state.json"
    running = wait_while_running(process, state.exists)
    assert running, "the run ended before it could be interrupted"
    time.sleep(delay)
    process.send_signal(sig)
    return finish(process, timeout=300)


def assert_resumed_like_the_reference(out, reference, name):
    """The weights of model `name` of run `out` are within `TOLERANCE` of `reference`'s."""
    difference = max_difference(model_weights(out / name), model_weights(reference / name))
    assert difference <= TOLERANCE, difference


@pytest.fixture(scope="module")
def pretrain_reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = invoke(command_args("pretrain", photos, out, *PRETRAIN))
    assert result.exit_code == 0, result.output
    return out


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    photos, pretrain_reference, tmp_path
):
    out = tmp_path / "killed"
    code, _ = signal_during_epoch_2(
        start_cli(command_args("pretrain", photos, out, *PRETRAIN)), out, signal.SIGKILL
    )
    assert code == -signal.SIGKILL
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] in (1, 2) and not (out / "result.json").exists()
    result = invoke(resume_args("pretrain", out, quiet=True))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 3 and len(record["history"]["loss"]) == 3 - state["epoch"]
    assert_resumed_like_the_reference(out, pretrain_reference, "encoder.keras")


def test_sigint_saves_a_mid_epoch_checkpoint_and_resume_matches(
    photos, pretrain_reference, tmp_path
):
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(
        start_cli(command_args("pretrain", photos, out, *PRETRAIN)), out, signal.SIGINT
    )
    assert code == 130, output
    assert "Traceback" not in output
    assert f"resume with: ssl-keras pretrain --out {out} --resume" in output
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    # Stopped after the step that was running: a mid-epoch checkpoint (or epoch 2's end).
    assert (state["epoch"], state["step"]) >= (1, 1) and os.path.isfile(
        out / "checkpoints" / state["checkpoint"]
    )
    assert f"checkpoint {out / 'checkpoints' / state['checkpoint']}" in output
    result = invoke(resume_args("pretrain", out, quiet=True))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["epochs"] == 3
    assert_resumed_like_the_reference(out, pretrain_reference, "encoder.keras")


def test_detect_sigint_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    result = invoke(detect_args(reference))
    assert result.exit_code == 0, result.output
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(start_cli(detect_args(out)), out, signal.SIGINT, delay=0.1)
    assert code == 130 and "Traceback" not in output, output
    assert f"resume with: ssl-keras detect --out {out} --resume" in output
    assert not (out / "metrics.json").exists()
    result = invoke(resume_args("detect", out, quiet=True))
    assert result.exit_code == 0, result.output
    assert_resumed_like_the_reference(out, reference, "model.keras")
    resumed, uninterrupted = (
        json.loads((run / "metrics.json").read_text()) for run in (out, reference)
    )
    for key in ("mean_iou", "loc_acc@0.5", "top1"):
        assert abs(resumed[key] - uninterrupted[key]) <= 1e-6


def test_frozen_detect_on_cached_features_resumes_exactly(tmp_path):
    # The frozen head trains on cached features with seeded flips; a resumed run must draw the
    # same batches and flips, and keep the best val epoch of its first part.
    frozen = {"epochs": 10, "head_epochs": None, "mode": "freeze"}
    reference = tmp_path / "reference"
    result = invoke(detect_args(reference, **frozen))
    assert result.exit_code == 0, result.output
    assert "on cached features" in result.output
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(
        start_cli(detect_args(out, **frozen)), out, signal.SIGINT, delay=0.05
    )
    assert code == 130 and "Traceback" not in output, output
    result = invoke(resume_args("detect", out, quiet=True))
    assert result.exit_code == 0, result.output
    assert_resumed_like_the_reference(out, reference, "model.keras")
    resumed, uninterrupted = (
        json.loads((run / "metrics.json").read_text()) for run in (out, reference)
    )
    assert resumed["selected_epoch"] == uninterrupted["selected_epoch"]
    for key in ("mean_iou", "loc_acc@0.5", "top1"):
        assert abs(resumed[key] - uninterrupted[key]) <= 1e-6


def test_nan_loss_stops_with_the_step_and_keeps_no_bad_checkpoint(photos, tmp_path):
    out = tmp_path / "nan"
    nan = options(epochs=2, quiet=True, warmup_epochs=0, export=False, learning_rate="1e30")
    result = invoke_as_user(command_args("pretrain", photos, out, *TINY_ARGS, *nan))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "loss became nan at epoch 1, step" in result.output and "--learning-rate" in result.output
    )
    assert os.listdir(out / "checkpoints") == [] and not (out / "encoder.keras").exists()


def test_same_command_and_seed_give_identical_metrics_json(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = invoke(detect_args(tmp_path / name, epochs=2, head_epochs=None))
        assert result.exit_code == 0, result.output
        runs.append((tmp_path / name / "metrics.json").read_bytes())
    assert runs[0] == runs[1]  # bitwise: metrics.json holds no time or memory figures
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["wall_seconds"] > 0 and "wall_seconds" not in json.loads(runs[0])


def test_same_pretrain_command_and_seed_give_identical_results(photos, tmp_path):
    args = [
        *TINY_ARGS,
        *options(epochs=2, warmup_epochs=1, seed=11, quiet=True, export=False),
    ]
    for name in ("a", "b"):
        assert invoke(command_args("pretrain", photos, tmp_path / name, *args)).exit_code == 0
    a, b = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("a", "b"))
    assert a["history"] == b["history"] and a["loss"] == b["loss"]
    a_weights, b_weights = (model_weights(tmp_path / n / "encoder.keras") for n in ("a", "b"))
    assert max_difference(a_weights, b_weights) == 0.0


def test_run_directory_records_versions_backend_devices_and_commit(photos, pretrain_reference):
    environment = json.loads((pretrain_reference / "config.json").read_text())["environment"]
    for key in (
        "python",
        "keras",
        "numpy",
        "tensorflow",
        "backend",
        "devices",
        "ssl_keras",
        "ssl_keras_git_commit",
    ):
        assert key in environment, key
    assert environment["backend"] == keras.config.backend() and environment["devices"] == ["cpu"]
    commit = subprocess.run(
        ["git", "-C", os.path.dirname(ssl_keras.pretraining.simclr.__file__), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert environment["ssl_keras_git_commit"] == (commit or None)


def test_compare_sigint_keeps_finished_cells_and_the_same_command_continues(tmp_path):
    out = tmp_path / "grid"
    grid = options(backbones="scratch", label_fractions="1.0", modes="freeze", seeds=2)
    cells = options(backbone_name="tiny", image_size=32, batch_size=4, epochs=3, export=False)
    args = command_args("compare", "synthetic:240", out, *grid, *cells, gradcam_images=0)
    process = start_cli(args)
    first_cell = out / "cells"
    wait_while_running(process, lambda: list(first_cell.rglob("state.json")))
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    code, output = finish(process, timeout=300)
    assert code == 130 and "Traceback" not in output, output
    assert "resume with: the same ssl-keras compare command again" in output
    assert not list(out.glob("cells/**/metrics.json"))
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert len(list(out.glob("cells/**/metrics.json"))) == 2 and (out / "results.csv").exists()


def test_sigterm_saves_a_checkpoint_and_exits_143(photos, tmp_path):
    # The shell convention is 128 + the signal number: 143 after SIGTERM, 130 after SIGINT.
    out = tmp_path / "terminated"
    code, output = signal_during_epoch_2(
        start_cli(command_args("pretrain", photos, out, *PRETRAIN)), out, signal.SIGTERM
    )
    assert code == 143, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert f"resume with: ssl-keras pretrain --out {out} --resume" in output
