"""Interruptions, NaN stops and reproducibility of the training commands, end to end.

The killed and interrupted runs are real `ssl-keras` processes sent SIGKILL or SIGINT; their
resumed weights are compared with an uninterrupted run of the same command and seed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import ssl_keras.pretraining.simclr  # noqa: F401 - registers the classes stored in checkpoints
from ssl_keras.cli.main import main
from test_case import TINY_ARGS

# Every test here runs training commands end to end (some as real processes), so they are slow.
pytestmark = pytest.mark.large

PRETRAIN = [
    *TINY_ARGS,
    "--warmup-epochs",
    "0",
    "--quiet",
    "--no-export",
    "--epochs",
    "3",
    "--steps-per-epoch",
    "60",
    "--seed",
    "3",
]
DETECT = [
    "--data",
    "synthetic:240",
    "--backbone",
    "scratch",
    "--backbone-name",
    "tiny",
    "--image-size",
    "32",
    "--batch-size",
    "4",
    "--epochs",
    "3",
    "--head-epochs",
    "1",
    "--seed",
    "5",
    "--quiet",
    "--no-export",
]
TOLERANCE = 1e-5  # the bound; on this CPU the weights match bitwise (difference 0.0)


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    names = sorted(n for n in os.listdir(shared_data / "unlabeled") if n.endswith(".jpg"))[:32]
    for name in names:
        shutil.copy(shared_data / "unlabeled" / name, folder / name)
    return folder


def invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def weights(path):
    return keras.saving.load_model(path).get_weights()


def max_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_keras.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_during_epoch_2(process, out, sig, delay=0.25):
    """Sends `sig` a moment after epoch 1's checkpoint appears (mid-epoch 2)."""
    state = out / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    time.sleep(delay)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout + stderr


@pytest.fixture(scope="module")
def pretrain_reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    result = invoke(["pretrain", "--data", str(photos), "--out", str(out), *PRETRAIN])
    assert result.exit_code == 0, result.output
    return out


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    photos, pretrain_reference, tmp_path
):
    out = tmp_path / "killed"
    code, _ = signal_during_epoch_2(
        start(["pretrain", "--data", str(photos), "--out", str(out), *PRETRAIN]),
        out,
        signal.SIGKILL,
    )
    assert code == -signal.SIGKILL
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] in (1, 2) and not (out / "result.json").exists()
    result = invoke(["pretrain", "--out", str(out), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 3 and len(record["history"]["loss"]) == 3 - state["epoch"]
    difference = max_difference(
        weights(out / "encoder.keras"), weights(pretrain_reference / "encoder.keras")
    )
    assert difference <= TOLERANCE, difference


def test_sigint_saves_a_mid_epoch_checkpoint_and_resume_matches(
    photos, pretrain_reference, tmp_path
):
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(
        start(["pretrain", "--data", str(photos), "--out", str(out), *PRETRAIN]), out, signal.SIGINT
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
    result = invoke(["pretrain", "--out", str(out), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "result.json").read_text())["epochs"] == 3
    difference = max_difference(
        weights(out / "encoder.keras"), weights(pretrain_reference / "encoder.keras")
    )
    assert difference <= TOLERANCE, difference


def test_detect_sigint_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    result = invoke(["detect", "--out", str(reference), *DETECT])
    assert result.exit_code == 0, result.output
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(
        start(["detect", "--out", str(out), *DETECT]), out, signal.SIGINT, delay=0.1
    )
    assert code == 130 and "Traceback" not in output, output
    assert f"resume with: ssl-keras detect --out {out} --resume" in output
    assert not (out / "metrics.json").exists()
    result = invoke(["detect", "--out", str(out), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    difference = max_difference(weights(out / "model.keras"), weights(reference / "model.keras"))
    assert difference <= TOLERANCE, difference
    resumed, uninterrupted = (
        json.loads((run / "metrics.json").read_text()) for run in (out, reference)
    )
    for key in ("mean_iou", "loc_acc@0.5", "top1"):
        assert abs(resumed[key] - uninterrupted[key]) <= 1e-6


def test_frozen_detect_on_cached_features_resumes_exactly(tmp_path):
    # The frozen head trains on cached features with seeded flips; a resumed run must draw the
    # same batches and flips, and keep the best val epoch of its first part.
    args = [
        *DETECT[:-8],
        "--epochs",
        "10",
        "--mode",
        "freeze",
        "--seed",
        "5",
        "--quiet",
        "--no-export",
    ]
    reference = tmp_path / "reference"
    result = invoke(["detect", "--out", str(reference), *args])
    assert result.exit_code == 0, result.output
    assert "on cached features" in result.output
    out = tmp_path / "interrupted"
    code, output = signal_during_epoch_2(
        start(["detect", "--out", str(out), *args]), out, signal.SIGINT, delay=0.05
    )
    assert code == 130 and "Traceback" not in output, output
    result = invoke(["detect", "--out", str(out), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    difference = max_difference(weights(out / "model.keras"), weights(reference / "model.keras"))
    assert difference <= TOLERANCE, difference
    resumed, uninterrupted = (
        json.loads((run / "metrics.json").read_text()) for run in (out, reference)
    )
    assert resumed["selected_epoch"] == uninterrupted["selected_epoch"]
    for key in ("mean_iou", "loc_acc@0.5", "top1"):
        assert abs(resumed[key] - uninterrupted[key]) <= 1e-6


def test_nan_loss_stops_with_the_step_and_keeps_no_bad_checkpoint(photos, tmp_path):
    out = tmp_path / "nan"
    result = CliRunner().invoke(
        main,
        [
            "pretrain",
            "--data",
            str(photos),
            "--out",
            str(out),
            *TINY_ARGS,
            "--epochs",
            "2",
            "--quiet",
            "--warmup-epochs",
            "0",
            "--no-export",
            "--learning-rate",
            "1e30",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "loss became nan at epoch 1, step" in result.output and "--learning-rate" in result.output
    )
    assert os.listdir(out / "checkpoints") == [] and not (out / "encoder.keras").exists()


def test_same_command_and_seed_give_identical_metrics_json(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = invoke(
            [
                "detect",
                "--out",
                str(tmp_path / name),
                *DETECT[:-6],
                "--epochs",
                "2",
                "--seed",
                "5",
                "--quiet",
                "--no-export",
            ]
        )
        assert result.exit_code == 0, result.output
        runs.append((tmp_path / name / "metrics.json").read_bytes())
    assert runs[0] == runs[1]  # bitwise: metrics.json holds no time or memory figures
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    assert timing["wall_seconds"] > 0 and "wall_seconds" not in json.loads(runs[0])


def test_same_pretrain_command_and_seed_give_identical_results(photos, tmp_path):
    args = [
        "--data",
        str(photos),
        *TINY_ARGS,
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
        "--seed",
        "11",
        "--quiet",
        "--no-export",
    ]
    for name in ("a", "b"):
        assert invoke(["pretrain", "--out", str(tmp_path / name), *args]).exit_code == 0
    a, b = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("a", "b"))
    assert a["history"] == b["history"] and a["loss"] == b["loss"]
    assert (
        max_difference(
            weights(tmp_path / "a" / "encoder.keras"), weights(tmp_path / "b" / "encoder.keras")
        )
        == 0.0
    )


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
    args = [
        "compare",
        "--data",
        "synthetic:240",
        "--backbones",
        "scratch",
        "--backbone-name",
        "tiny",
        "--label-fractions",
        "1.0",
        "--modes",
        "freeze",
        "--seeds",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "3",
        "--no-export",
        "--gradcam-images",
        "0",
        "--out",
        str(out),
    ]
    process = start(args)
    first_cell = out / "cells"
    deadline = time.time() + 300
    while (
        not list(first_cell.rglob("state.json"))
        and time.time() < deadline
        and process.poll() is None
    ):
        time.sleep(0.02)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stdout + stderr, stdout + stderr
    assert "resume with: the same ssl-keras compare command again" in stdout + stderr
    assert not list(out.glob("cells/**/metrics.json"))
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert len(list(out.glob("cells/**/metrics.json"))) == 2 and (out / "results.csv").exists()


def test_sigterm_saves_a_checkpoint_and_exits_143(photos, tmp_path):
    # The shell convention is 128 + the signal number: 143 after SIGTERM, 130 after SIGINT.
    out = tmp_path / "terminated"
    code, output = signal_during_epoch_2(
        start(["pretrain", "--data", str(photos), "--out", str(out), *PRETRAIN]),
        out,
        signal.SIGTERM,
    )
    assert code == 143, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert f"resume with: ssl-keras pretrain --out {out} --resume" in output
