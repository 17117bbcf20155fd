"""End-to-end tests of `ssl-keras pretrain` on real photos from ../shared/data/unlabeled."""

import json
import os

import keras
import numpy as np
import pytest
from cli_runs import command_args, copy_photos, invoke, invoke_as_user, options, resume_args

from ssl_keras.runs.export import load_serving
from test_case import TINY_ARGS

TINY = [*TINY_ARGS, *options(warmup_epochs=0, quiet=True)]


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return copy_photos(shared_data, tmp_path_factory.mktemp("photos"), 32)


def pretrain(photos, out, *more, **values):
    """`ssl-keras pretrain` on `photos` into `out`, run in this process."""
    return invoke(command_args("pretrain", photos, out, *more, **values))


def assert_served_like_the_encoder(out, images, *, tolerance):
    """The exported SavedModel of run `out` gives the `encoder.keras` features of `images`."""
    encoder = keras.saving.load_model(out / "encoder.keras")
    served = np.asarray(load_serving(out / "encoder_savedmodel")(images))
    np.testing.assert_allclose(
        served, np.asarray(encoder(images, training=False)), rtol=tolerance, atol=tolerance
    )
    return encoder


@pytest.mark.large
def test_pretrain_writes_the_whole_run_directory(photos, tmp_path):
    out = tmp_path / "run"
    result = pretrain(photos, out, *TINY, epochs=2, seed=7)
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
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    assert_served_like_the_encoder(out, images, tolerance=1e-5)
    assert "pretrain done: 2 epoch(s)" in result.output


def test_existing_output_directory_is_refused_and_left_alone(photos, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke_as_user(command_args("pretrain", photos, out, "--epochs", "1", *TINY))
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
    result = invoke_as_user(command_args("pretrain", photos, tmp_path / "x", *TINY, *args))
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


@pytest.mark.large
def test_config_file_sets_defaults_and_options_override_it(photos, tmp_path):
    config_file = tmp_path / "pretrain.yaml"
    config_file.write_text("epochs: 1\ntemperature: 0.3\nprojection_dim: 16\n")
    out = tmp_path / "run"
    result = pretrain(photos, out, "--config", config_file, "--temperature", "0.5", *TINY)
    assert result.exit_code == 0, result.output
    options = json.loads((out / "config.json").read_text())["options"]
    assert (
        options["epochs"] == 1 and options["projection_dim"] == 16 and options["temperature"] == 0.5
    )


def test_resume_without_a_run_is_refused(tmp_path):
    result = invoke_as_user(resume_args("pretrain", tmp_path / "none"))
    assert result.exit_code != 0 and "no config.json" in result.output


@pytest.mark.large
def test_efficientnetb1_pretrain_and_export_on_real_photos(photos, tmp_path):
    out = tmp_path / "b1"
    result = pretrain(
        photos, out, epochs=1, batch_size=16, image_size=64, warmup_epochs=0, quiet=True
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 1 and record["steps"] == 2 and np.isfinite(record["loss"])
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    encoder = assert_served_like_the_encoder(out, images, tolerance=1e-4)
    assert encoder.name == "efficientnetb1" and encoder.output_shape == (None, 1280)


@pytest.mark.large
def test_probe_monitor_is_logged_during_pretraining(photos, tmp_path):
    out = tmp_path / "probed"
    result = pretrain(photos, out, *TINY, epochs=2, probe_data="synthetic:60", probe_every=1)
    assert result.exit_code == 0, result.output
    history = json.loads((out / "result.json").read_text())["history"]
    assert len(history["probe_top1"]) == 2
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(history["probe_top1"], history["probe_top3"]))


@pytest.mark.large
def test_resume_with_more_epochs_keeps_training(photos, tmp_path):
    out = tmp_path / "run"
    assert pretrain(photos, out, "--epochs", "1", "--no-export", *TINY).exit_code == 0

    def trainable():
        return [
            np.asarray(v) for v in keras.saving.load_model(out / "encoder.keras").trainable_weights
        ]

    before = trainable()
    result = invoke(resume_args("pretrain", out, epochs=2, quiet=True))
    assert result.exit_code == 0, result.output
    assert "schedule stretched from 4 to 8 steps" in result.output
    # The old schedule ends at learning rate 0: without stretching, epoch 2 would change nothing.
    change = max(float(np.max(np.abs(a - b))) for a, b in zip(before, trainable()))
    assert change > 1e-6, change
    assert json.loads((out / "result.json").read_text())["epochs"] == 2
