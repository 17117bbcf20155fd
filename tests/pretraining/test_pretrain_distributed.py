"""`ssl-keras pretrain --distribute mirrored` on 2 logical CPU devices, end to end (issue 15).

Real processes (`tests/two_cpus.py` splits the CPU before TensorFlow starts): the run records
its replicas and batches, and a run killed after its first epoch and resumed under the strategy
ends with the weights of an uninterrupted one.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import ssl_keras.pretraining.simclr  # noqa: F401 - registers the classes stored in checkpoints
from test_case import TINY_ARGS

LAUNCHER = str(pathlib.Path(__file__).resolve().parents[1] / "two_cpus.py")
ARGS = [
    "--data",
    "synthetic:64",
    *TINY_ARGS,
    "--epochs",
    "2",
    "--steps-per-epoch",
    "6",
    "--warmup-epochs",
    "0",
    "--seed",
    "4",
    "--distribute",
    "mirrored",
    "--quiet",
    "--no-export",
]


def launch(*args):
    return subprocess.Popen(
        [sys.executable, LAUNCHER, "pretrain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def weights(out):
    return keras.saving.load_model(out / "encoder.keras").get_weights()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "run"
    output = finish(launch("--out", str(out), *ARGS))
    return out, output


@pytest.mark.large
def test_the_run_records_the_strategy_replicas_and_batches(reference):
    out, output = reference
    assert "distribute: mirrored, 2 replicas of 4 images (global batch 8)" in output
    result = json.loads((out / "result.json").read_text())
    assert result["distribution"] == {
        "strategy": "mirrored",
        "num_replicas": 2,
        "global_batch_size": 8,
        "per_replica_batch_size": 4,
    }
    # Negatives come from the global batch: chance is 1 / (2 * 8 - 1), not 1 / (2 * 4 - 1).
    assert result["chance_contrastive_accuracy"] == pytest.approx(1 / 15)
    assert json.loads((out / "config.json").read_text())["resolved"]["num_replicas"] == 2


@pytest.mark.large
def test_a_killed_mirrored_run_resumes_to_the_uninterrupted_weights(reference, tmp_path):
    out = tmp_path / "run"
    process = launch("--out", str(out), *ARGS)
    state = out / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    output = finish(launch("--out", str(out), "--resume", "--quiet", "--distribute", "mirrored"))
    assert "resum" in output.lower(), output[-2000:]
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(weights(reference[0]), weights(out)))
    assert gap < 1e-5, gap


@pytest.mark.large
def test_a_batch_that_does_not_split_over_the_replicas_is_refused(tmp_path):
    process = launch("--out", str(tmp_path / "run"), *ARGS, "--batch-size", "7")
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "--batch-size 7 is the global batch and must be a multiple of the 2 replicas" in output
    assert "Traceback" not in output
    assert not os.path.exists(tmp_path / "run")
