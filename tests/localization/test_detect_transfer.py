"""Tests of the transfer stage's learning machinery: cached features, model selection, baselines, overfitting."""

import json

import numpy as np
import pytest

from ssl_keras.localization.box_baselines import fit_baselines, score_baselines
from ssl_keras.localization.box_iou import box_iou_numpy
from ssl_keras.runs.config import DetectConfig
from ssl_keras.data.localization import load_localization_data
from ssl_keras.localization.detect import (
    _load_data,
    evaluate_run,
    load_run,
    predict_dataset,
    run_detect,
)

METRICS = ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3")


def detect(tmp_path, name, **options):
    base = dict(
        data="synthetic:80",
        backbone="scratch",
        backbone_name="tiny",
        out=str(tmp_path / name),
        mode="freeze",
        epochs=3,
        image_size=32,
        batch_size=8,
        export=False,
    )
    base.update(options)
    return run_detect(DetectConfig(**base).validate(), verbose=0, log=lambda line: None)


@pytest.mark.large
@pytest.mark.parametrize("head", ["spatial", "pooled"])
def test_cached_and_uncached_frozen_training_give_the_same_numbers(tmp_path, head):
    # Without augmentation both paths see the same batches in the same order; the frozen
    # backbone's features are the same whether computed once or every step.
    cached = detect(
        tmp_path, "cached", head=head, augment=False, cache_features=True, model_selection="last"
    )
    uncached = detect(
        tmp_path, "uncached", head=head, augment=False, cache_features=False, model_selection="last"
    )
    for metric in METRICS:
        assert cached[metric] == pytest.approx(uncached[metric], abs=1e-5), metric
    for key in ("loss", "val_mean_iou"):
        np.testing.assert_allclose(
            cached["history"][key], uncached["history"][key], rtol=1e-4, atol=1e-5
        )


@pytest.mark.large
def test_cached_flips_change_training_and_are_reproducible(tmp_path):
    plain = detect(tmp_path, "plain", augment=False, model_selection="last")
    flipped = detect(tmp_path, "flipped", augment=True, model_selection="last")
    again = detect(tmp_path, "again", augment=True, model_selection="last")
    assert flipped["history"]["loss"] != plain["history"]["loss"]
    assert flipped["history"]["loss"] == again["history"]["loss"]


@pytest.mark.large
def test_model_selection_keeps_the_best_val_epoch(tmp_path):
    metrics = detect(tmp_path, "run", epochs=5, learning_rate=3e-2)
    val = metrics["history"]["val_mean_iou"]
    assert metrics["selected_epoch"] == int(np.argmax(val)) + 1
    assert metrics["selected_val_mean_iou"] == pytest.approx(max(val))
    record = json.loads((tmp_path / "run" / "best_epoch.json").read_text())
    assert record["epoch"] == metrics["selected_epoch"]
    # model.keras holds that epoch's weights: its val mean IoU is the recorded one.
    assert evaluate_run(str(tmp_path / "run"), split="val")["mean_iou"] == pytest.approx(
        max(val), abs=1e-5
    )


@pytest.mark.large
def test_last_epoch_selection_keeps_the_last_weights(tmp_path):
    metrics = detect(tmp_path, "run", epochs=3, model_selection="last")
    assert metrics["selected_epoch"] == 3 and not (tmp_path / "run" / "best_epoch.json").exists()


@pytest.mark.large
def test_baselines_are_fitted_on_the_train_subset_and_scored_on_test(tmp_path):
    metrics = detect(tmp_path, "run", num_labeled=20)
    data = load_localization_data(
        "synthetic:80",
        image_size=32,
        batch_size=8,
        seed=metrics_seed(tmp_path / "run"),
        num_labeled=20,
    )
    train, test = data.targets["train"], data.targets["test"]
    fitted = fit_baselines(train["boxes"], train["labels"], list(data.class_names))
    assert (
        json.loads((tmp_path / "run" / "baselines.json").read_text())["prior_box"]["box"]
        == fitted["prior_box"]["box"]
    )
    expected = score_baselines(fitted, test["boxes"], test["labels"], list(data.class_names))
    for name, values in expected.items():
        for key, value in values.items():
            assert metrics["baselines"][name][key] == pytest.approx(value, abs=1e-6), (name, key)
    assert metrics["margins"]["mean_iou"] == pytest.approx(
        metrics["mean_iou"] - expected["prior_box"]["mean_iou"]
    )
    assert metrics["margins"]["top1"] == pytest.approx(
        metrics["top1"] - expected["majority_class"]["top1"]
    )


def metrics_seed(run_dir):
    return json.loads((run_dir / "config.json").read_text())["seeds"]["data"]


@pytest.mark.large
def test_class_balance_weight_stores_balanced_weights(tmp_path):
    detect(tmp_path, "run", class_balance="weight", epochs=1)
    model, record = load_run(str(tmp_path / "run"))
    weights = model.class_weights
    labels = load_localization_data(
        "synthetic:80", image_size=32, batch_size=8, seed=record["seeds"]["data"]
    ).targets["train"]["labels"]
    assert np.mean([weights[c] for c in labels]) == pytest.approx(1.0)
    counts = np.bincount(labels, minlength=len(weights))
    assert weights[int(np.argmax(counts))] == pytest.approx(min(w for w in weights if w > 0))


@pytest.mark.large
def test_fine_tuning_overfits_32_voc_images(shared_data, tmp_path):
    """A head, loss, metric or BatchNorm bug shows here at once: 32 images must be memorized.

    The budget (80 one-step epochs of the tiny backbone at 64 px, about 45 s on 2 cores) is
    about 1.5x what reaches the bar; with Keras's BatchNorm momentum of 0.99 the same run
    scores train mean IoU 0.34 in inference mode, the moving statistics lagging the weights.
    """
    config = DetectConfig(
        data=f"voc:{shared_data / 'voc2007'}",
        backbone="scratch",
        backbone_name="tiny",
        out=str(tmp_path / "run"),
        mode="finetune",
        num_labeled=32,
        epochs=80,
        image_size=64,
        batch_size=32,
        augment=False,
        dropout=0.0,
        backbone_lr_multiplier=1.0,
        learning_rate=3e-3,
        export=False,
        model_selection="last",
    ).validate()
    run_detect(config, verbose=0, log=lambda line: None)
    model, record = load_run(config.out)
    data = _load_data(record["options"], record["seeds"])
    arrays = predict_dataset(model, data.train)  # inference mode, as evaluation runs
    assert len(arrays["labels"]) == 32
    train_iou = box_iou_numpy(arrays["true_boxes"], arrays["pred_boxes"]).mean()
    train_top1 = (arrays["class_probs"].argmax(axis=-1) == arrays["labels"]).mean()
    assert train_iou >= 0.7, train_iou
    assert train_top1 >= 0.9, train_top1
