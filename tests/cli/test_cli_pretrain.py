"""End-to-end tests of `ssl-keras pretrain` on real photos from ../shared/data/unlabeled."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from ssl_keras.cli.main import main
from ssl_keras.runs.export import load_serving
from test_case import TINY_ARGS

TINY = [
    *TINY_ARGS,
    "--warmup-epochs",
    "0",
    "--quiet",
]


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    names = sorted(os.listdir(shared_data / "unlabeled"))
    names = [n for n in names if n.endswith(".jpg")][:32]
    for name in names:
        shutil.copy(shared_data / "unlabeled" / name, folder / name)
    return folder


def run_cli(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


@pytest.mark.large
def test_pretrain_writes_the_whole_run_directory(photos, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        [
            "pretrain",
            "--data",
            str(photos),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--seed",
            "7",
            *TINY,
        ]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["epochs"] == 2 and config["options"]["seed"] == 7
    assert config["seeds"]["global"] == 7 and set(config["seeds"]) >= {"augmenter", "data_shuffle"}
    assert (
        config["resolved"]["num_images"] == 32 and config["environment"]["backend"] == "tensorflow"
    )
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 2 and record["num_images"] == 32 and record["skipped"] == {}
    assert np.isfinite(record["loss"]) and 0.0 <= record["contrastive_accuracy"] <= 1.0
    assert record["images_per_second"] > 0 and record["wall_seconds"] > 0
    assert len(record["history"]["loss"]) == 2 and len(record["history"]["learning_rate"]) == 2
    assert record["steps"] == 2 * 32 // 8  # every epoch is a full pass over the photos
    assert sorted(p.name for p in (out / "checkpoints").glob("*.keras")) == [
        "epoch-0001.keras",
        "epoch-0002.keras",
    ]
    events = [f for _, _, files in os.walk(out / "logs") for f in files if "tfevents" in f]
    assert len(events) >= 2  # scalars (train) and the view-pair images
    encoder = keras.saving.load_model(out / "encoder.keras")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    served = np.asarray(load_serving(out / "encoder_savedmodel")(images))
    np.testing.assert_allclose(
        served, np.asarray(encoder(images, training=False)), rtol=1e-5, atol=1e-5
    )
    assert "pretrain done: 2 epoch(s)" in result.output


def test_existing_output_directory_is_refused_and_left_alone(photos, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(
        main, ["pretrain", "--data", str(photos), "--out", str(out), "--epochs", "1", *TINY]
    )
    assert result.exit_code != 0
    assert "exists and is not empty" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "0"], "--epochs must be an integer >= 1"),
        (["--epochs", "-3"], "--epochs must be an integer >= 1; got -3"),
        (["--temperature", "0"], "--temperature must be a number > 0"),
        (["--image-size", "16"], "--image-size must be an integer >= 32; got 16"),
        (
            ["--backbone", "InceptionV3", "--image-size", "64"],
            "--image-size must be an integer >= 75 (InceptionV3's",
        ),
        (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    ],
)
def test_bad_options_are_one_line_errors(photos, tmp_path, args, message):
    base = ["pretrain", "--data", str(photos), "--out", str(tmp_path / "x"), *TINY]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


@pytest.mark.large
def test_config_file_sets_defaults_and_options_override_it(photos, tmp_path):
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text("epochs: 1\ntemperature: 0.3\nprojection_dim: 16\n")
    out = tmp_path / "run"
    result = run_cli(
        [
            "pretrain",
            "--config",
            str(config_file),
            "--data",
            str(photos),
            "--out",
            str(out),
            "--temperature",
            "0.5",
            *TINY,
        ]
    )
    assert result.exit_code == 0, result.output
    options = json.loads((out / "config.json").read_text())["options"]
    assert (
        options["epochs"] == 1 and options["projection_dim"] == 16 and options["temperature"] == 0.5
    )


def test_resume_without_a_run_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code != 0 and "no config.json" in result.output


@pytest.mark.large
def test_efficientnetb1_pretrain_and_export_on_real_photos(photos, tmp_path):
    out = tmp_path / "b1"
    result = run_cli(
        [
            "pretrain",
            "--data",
            str(photos),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--image-size",
            "64",
            "--warmup-epochs",
            "0",
            "--quiet",
        ]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 1 and record["steps"] == 2 and np.isfinite(record["loss"])
    encoder = keras.saving.load_model(out / "encoder.keras")
    assert encoder.name == "efficientnetb1" and encoder.output_shape == (None, 1280)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    served = np.asarray(load_serving(out / "encoder_savedmodel")(images))
    np.testing.assert_allclose(
        served, np.asarray(encoder(images, training=False)), rtol=1e-4, atol=1e-4
    )


@pytest.mark.large
def test_probe_monitor_is_logged_during_pretraining(photos, tmp_path):
    out = tmp_path / "probed"
    result = run_cli(
        [
            "pretrain",
            "--data",
            str(photos),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--probe-data",
            "synthetic:60",
            "--probe-every",
            "1",
            *TINY,
        ]
    )
    assert result.exit_code == 0, result.output
    history = json.loads((out / "result.json").read_text())["history"]
    assert len(history["probe_top1"]) == 2
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(history["probe_top1"], history["probe_top3"]))


@pytest.mark.large
def test_resume_with_more_epochs_keeps_training(photos, tmp_path):
    out = tmp_path / "run"
    args = [
        "pretrain",
        "--data",
        str(photos),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-export",
        *TINY,
    ]
    assert run_cli(args).exit_code == 0

    def trainable():
        return [
            np.asarray(v) for v in keras.saving.load_model(out / "encoder.keras").trainable_weights
        ]

    before = trainable()
    result = run_cli(["pretrain", "--out", str(out), "--resume", "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "schedule stretched from 4 to 8 steps" in result.output
    # The old schedule ends at learning rate 0: without stretching, epoch 2 would change nothing.
    change = max(float(np.max(np.abs(a - b))) for a, b in zip(before, trainable()))
    assert change > 1e-6, change
    assert json.loads((out / "result.json").read_text())["epochs"] == 2
