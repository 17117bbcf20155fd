"""End-to-end tests of `ssl-keras detect`, `evaluate` and `predict` on the shared VOC2007 folder."""

import json
import os

import keras
import numpy as np
import pytest
from cli_runs import command_args, invoke, invoke_as_user, options, resume_args
from PIL import Image
from voc_devkit import copy_devkit

from ssl_keras.backbone import tiny_backbone
from ssl_keras.runs.export import load_serving

SCORES = ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5")
"""The figures of metrics.json that are fractions in [0, 1]."""
METRIC_KEYS = {*SCORES, "num_test_images", "skipped", "per_class"}


@pytest.fixture(scope="module")
def voc(shared_data):
    return f"voc:{shared_data / 'voc2007'}"


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    """A stand-in pretrain run directory: an encoder.keras written as `ssl-keras pretrain` does."""
    run = tmp_path_factory.mktemp("pretrain_run")
    tiny_backbone(width=8).save(run / "encoder.keras")
    return run


@pytest.fixture(scope="module")
def detect_run(voc, ssl_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "run"
    run_options = options(epochs=2, image_size=32, batch_size=32, label_fraction=0.5, quiet=True)
    result = invoke(command_args("detect", voc, out, "--backbone", ssl_run, *run_options))
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.large
def test_detect_writes_all_outputs(detect_run, ssl_run):
    out, output = detect_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["num_test_images"] == 297  # every test image has a non-difficult object
    assert metrics["skipped"] == {} and metrics["repaired"] == {}
    assert metrics["skipped_by_split"] == {"train": {}, "val": {}, "test": {}}
    for key in SCORES:
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["loc_acc@0.7"] <= metrics["loc_acc@0.5"] and metrics["top1"] <= metrics["top3"]
    assert sum(c["num_images"] for c in metrics["per_class"].values()) == 297
    config = json.loads((out / "config.json").read_text())
    assert (
        config["resolved"]["backbone"].startswith("pretrained encoder")
        and str(ssl_run) in config["resolved"]["backbone"]
    )
    assert config["resolved"]["head_epochs"] == 1 and config["resolved"]["finetune_epochs"] == 1
    train_ids = json.loads((out / "train_ids.json").read_text())["train_ids"]
    assert (
        metrics["num_train_images"] == len(train_ids) and 190 <= len(train_ids) <= 240
    )  # ~50% of 430
    assert (out / "model.keras").is_file() and (out / "savedmodel" / "saved_model.pb").is_file()
    assert (out / "checkpoints" / "state.json").is_file()
    assert any("tfevents" in f for _, _, files in os.walk(out / "logs") for f in files)
    assert "mean_iou" in output and "loc_acc@0.5" in output
    # The baselines, fitted on the run's own train subset, sit beside the model's numbers.
    baselines = json.loads((out / "baselines.json").read_text())
    assert baselines["num_train_images"] == len(train_ids)
    assert metrics["baselines"]["prior_box"]["box"] == baselines["prior_box"]["box"]
    assert metrics["baselines"]["majority_class"]["classes"][0] == "person"
    assert metrics["margins"]["mean_iou"] == pytest.approx(
        metrics["mean_iou"] - metrics["baselines"]["prior_box"]["mean_iou"]
    )
    assert (
        "prior_box" in output and "majority_class" in output and "margin over prior_box" in output
    )
    assert 1 <= metrics["selected_epoch"] <= 2 and (out / "best_epoch.json").is_file()


@pytest.mark.large
def test_savedmodel_endpoint_equals_inference(detect_run):
    out, _ = detect_run
    model = keras.saving.load_model(out / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = model(images, training=False)
    served = load_serving(out / "savedmodel")(images)
    np.testing.assert_allclose(np.asarray(served["boxes"]), expected["boxes"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(served["class_probs"]),
        keras.ops.softmax(expected["class_logits"]),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.large
def test_evaluate_reproduces_metrics_json(detect_run, tmp_path):
    out, _ = detect_run
    target = tmp_path / "again.json"
    result = invoke(["evaluate", "--model", out, "--out", target])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    again = json.loads(target.read_text())
    for key in (*SCORES, "num_test_images"):
        assert again[key] == pytest.approx(saved[key], abs=1e-6), key
    assert again["per_class"].keys() == saved["per_class"].keys()


@pytest.mark.large
def test_evaluate_on_a_folder_with_only_a_test_set(detect_run, shared_data, tmp_path):
    out, _ = detect_run
    root = tmp_path / "VOC2007"
    listed = copy_devkit(
        shared_data / "voc2007", root, sizes={"test": 297}
    )  # only ImageSets/Main/test.txt
    assert len(listed["test"]) == 297 and not (root / "ImageSets" / "Main" / "train.txt").exists()
    target = tmp_path / "test_only.json"
    result = invoke(["evaluate", "--model", out, "--data", f"voc:{root}", "--out", target])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    again = json.loads(target.read_text())
    for key in ("mean_iou", "loc_acc@0.5", "top1", "num_test_images"):
        assert again[key] == pytest.approx(saved[key], abs=1e-6), key
    # The baselines come from the run's own train subset (baselines.json), not from this folder.
    for name in ("prior_box", "majority_class"):
        for key, value in saved["baselines"][name].items():
            assert again["baselines"][name][key] == (
                pytest.approx(value) if isinstance(value, float) else value
            )
    result = invoke_as_user(["evaluate", "--model", out, "--data", f"voc:{root}", "--split", "val"])
    assert result.exit_code != 0 and "val.txt" in result.output and "Traceback" not in result.output


@pytest.mark.large
def test_predict_draws_pngs_and_rejects_unreadable_files(detect_run, shared_data, tmp_path):
    out, _ = detect_run
    image = (
        shared_data
        / "voc2007"
        / "JPEGImages"
        / sorted(os.listdir(shared_data / "voc2007" / "JPEGImages"))[0]
    )
    png = tmp_path / "photo.png"
    Image.open(shared_data / "unlabeled" / "imagenette_00001.jpg").convert("L").save(
        png
    )  # grayscale PNG
    result = invoke(["predict", "--model", out, image, png, "--out", tmp_path / "pred"])
    assert result.exit_code == 0, result.output
    drawn = sorted(os.listdir(tmp_path / "pred"))
    assert drawn == [image.stem + "_pred.png", "photo_pred.png", "predictions.json"]
    assert f"image {png}: read, grayscale converted to RGB" in result.output
    assert "2/2" in result.output and "/image" in result.output  # the progress bar
    with Image.open(tmp_path / "pred" / drawn[0]) as picture:
        assert picture.size == Image.open(image).size  # drawn on the original image
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    result = invoke_as_user(["predict", "--model", out, bad, "--out", tmp_path / "pred2"])
    assert (
        result.exit_code != 0 and "broken.jpg" in result.output and "Traceback" not in result.output
    )
    assert not (tmp_path / "pred2").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--label-fraction", "1.5"], "--label-fraction must be in (0, 1]; got 1.5"),
        (["--label-fraction", "0"], "--label-fraction must be in (0, 1]"),
        (["--epochs", "-1"], "--epochs must be an integer >= 1; got -1"),
        (
            ["--backbone", "scratch", "--backbone-name", "Xception", "--image-size", "64"],
            "--image-size must be an integer >= 71 (Xception's smallest input); got 64",
        ),
        (["--mode", "sideways"], "is not one of 'freeze', 'finetune'"),
        (["--backbone", "/no/such/run"], "no such pretrain run"),
        (["--num-labeled", "1000"], "--num-labeled must be in [1, "),
    ],
)
def test_detect_rejects_bad_options(voc, tmp_path, args, message):
    tiny = options(image_size=32, backbone_name="tiny")
    result = invoke_as_user(command_args("detect", voc, tmp_path / "r", *tiny, *args))
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_tfds_voc_offline_fails_fast_naming_the_alternative(tmp_path):
    import time

    start = time.time()
    tiny = options(backbone_name="tiny", image_size=32)
    result = invoke_as_user(command_args("detect", "tfds:voc/2007", tmp_path / "r", *tiny))
    assert result.exit_code != 0 and "voc:" in result.output
    assert time.time() - start < 30


@pytest.mark.large
def test_resume_continues_from_the_checkpoint_into_fine_tuning(tmp_path):
    out = tmp_path / "run"
    tiny = options(backbone_name="tiny", image_size=32, batch_size=16, quiet=True, export=False)
    assert invoke(command_args("detect", "synthetic:120", out, *tiny, epochs=1)).exit_code == 0
    first = json.loads((out / "metrics.json").read_text())
    result = invoke(resume_args("detect", out, epochs=2, quiet=True))
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "fine-tuning: epochs 2-2" in result.output
    second = json.loads((out / "metrics.json").read_text())
    assert (
        second["epochs"] == 2 and len(second["history"]["loss"]) == 1
    )  # only the missing epoch ran
    assert second["backbone"] == first["backbone"]
    assert json.loads((out / "checkpoints" / "state.json").read_text())["epoch"] == 2
