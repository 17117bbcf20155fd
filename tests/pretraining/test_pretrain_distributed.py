"""`ssl-keras pretrain --distribute mirrored` on 2 logical CPU devices, end to end (issue 15).

Real processes (`tests/two_cpus.py` splits the CPU before TensorFlow starts): the run records
its replicas and batches, and a run killed after its first epoch and resumed under the strategy
ends with the weights of an uninterrupted one.
"""

import json
import os
import signal

import pytest
from cli_runs import TWO_CPUS, finish, max_difference, model_weights, options, start_cli
from cli_runs import wait_while_running

import ssl_keras.pretraining.simclr  # noqa: F401 - registers the classes stored in checkpoints
from test_case import TINY_ARGS

ARGS = [
    "--data",
    "synthetic:64",
    *TINY_ARGS,
    *options(
        epochs=2,
        steps_per_epoch=6,
        warmup_epochs=0,
        seed=4,
        distribute="mirrored",
        quiet=True,
        export=False,
    ),
]


def launch(*args):
    return start_cli(["pretrain", *args], launcher=TWO_CPUS)


def output_of_success(process):
    code, output = finish(process)
    assert code == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "run"
    output = output_of_success(launch("--out", str(out), *ARGS))
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
    assert wait_while_running(process, state.exists), "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    output = output_of_success(
        launch("--out", str(out), "--resume", "--quiet", "--distribute", "mirrored")
    )
    assert "resum" in output.lower(), output[-2000:]
    gap = max_difference(*(model_weights(run / "encoder.keras") for run in (reference[0], out)))
    assert gap < 1e-5, gap


@pytest.mark.large
def test_a_batch_that_does_not_split_over_the_replicas_is_refused(tmp_path):
    process = launch("--out", str(tmp_path / "run"), *ARGS, "--batch-size", "7")
    code, output = finish(process, timeout=300)
    assert code != 0
    assert "--batch-size 7 is the global batch and must be a multiple of the 2 replicas" in output
    assert "Traceback" not in output
    assert not os.path.exists(tmp_path / "run")
