import collections
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_keras.backbone import tiny_backbone
from ssl_keras.data.source_spec import SourceError
from ssl_keras.probing.probe import (
    ProbeMonitor,
    extract_features,
    knn_probe,
    linear_probe,
    probe_data,
    read_class_folders,
    read_manifest,
    run_probe,
    topk_accuracy,
)
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.runs.run_directory import RunDirectoryError
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

NUM_CLASSES = 5


def blobs(n_per_class, *, dim=16, spread=0.6, seed=0):
    """Gaussian blobs, one per class, around random unit-scale centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0.0, 1.0, (NUM_CLASSES, dim)) * 2.0
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    return (centres[labels] + rng.normal(0.0, spread, (len(labels), dim))).astype("float32"), labels


@pytest.fixture(scope="module")
def blob_split():
    train_x, train_y = blobs(60, seed=0)
    test_x, test_y = blobs(80, seed=1)
    return train_x, train_y, test_x, test_y


def test_topk_accuracy_counts_ties_and_small_class_counts():
    scores = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 3) == 1.0
    assert topk_accuracy(scores[:, :2], np.array([1, 0, 1]), 3) == 1.0  # k capped at C


@pytest.mark.parametrize("method", ["linear", "knn"])
def test_probes_separate_blobs_and_fall_to_chance_on_shuffled_labels(method, blob_split):
    train_x, train_y, test_x, test_y = blob_split
    probe = (
        (lambda *a: linear_probe(*a, num_classes=NUM_CLASSES, epochs=40))
        if method == "linear"
        else (lambda *a: knn_probe(*a, num_classes=NUM_CLASSES, k=10))
    )
    result = probe(train_x, train_y, test_x, test_y)
    assert result["method"] == method and result["num_train"] == 300 and result["num_test"] == 400
    assert result["top1"] > 0.9
    assert result["top3"] >= result["top1"]
    shuffled = np.random.default_rng(7).permutation(train_y)
    chance = probe(train_x, shuffled, test_x, test_y)
    assert chance["top1"] < 1 / NUM_CLASSES + 0.15, chance
    assert chance["top3"] >= chance["top1"]


def test_linear_probe_is_deterministic_and_leaves_the_global_seed_alone(blob_split):
    train_x, train_y, test_x, test_y = blob_split
    keras.utils.set_random_seed(3)
    expected = keras.random.uniform((1,), seed=None)
    keras.utils.set_random_seed(3)
    first = linear_probe(
        train_x, train_y, test_x[:50], test_y[:50], num_classes=NUM_CLASSES, epochs=3, seed=1
    )
    after = keras.random.uniform((1,), seed=None)
    second = linear_probe(
        train_x, train_y, test_x[:50], test_y[:50], num_classes=NUM_CLASSES, epochs=3, seed=1
    )
    assert first == second
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(after), keras.ops.convert_to_numpy(expected)
    )


def test_knn_matches_a_hand_count():
    train_x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train_y = np.array([0, 0, 1, 1])
    # The first query's 3 nearest are rows 0, 1 (class 0) and 3 (class 1): class 0 wins.
    result = knn_probe(
        train_x, train_y, np.array([[1.0, 0.2], [0.2, 1.0]]), np.array([0, 1]), num_classes=2, k=3
    )
    assert result["top1"] == 1.0
    # With one neighbour and a huge temperature, labels far from it are missed.
    result = knn_probe(
        train_x,
        train_y,
        np.array([[1.0, 0.0]]),
        np.array([1]),
        num_classes=2,
        k=1,
        temperature=100.0,
    )
    assert result["top1"] == 0.0 and result["top3"] == 1.0


def test_probe_arguments_are_checked(blob_split):
    train_x, train_y, test_x, test_y = blob_split
    with pytest.raises(ValueError, match="train_y"):
        knn_probe(train_x, train_y + 10, test_x, test_y, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="same C"):
        knn_probe(train_x, train_y, test_x[:, :3], test_y, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="one label per feature row"):
        linear_probe(train_x, train_y[:5], test_x, test_y, num_classes=NUM_CLASSES)


def test_extract_features_reads_plain_and_dict_labels():
    backbone = tiny_backbone(width=4)
    images = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1, 0])
    plain = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    as_dict = tf.data.Dataset.from_tensor_slices((images, {"labels": labels})).batch(3)
    features, got = extract_features(backbone, plain)
    assert features.shape == (5, 16) and features.dtype == np.float32
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_allclose(extract_features(backbone, as_dict)[0], features, atol=1e-5)
    np.testing.assert_allclose(
        features, keras.ops.convert_to_numpy(backbone(images, training=False)), atol=1e-5
    )


def test_reads_the_shared_imagenette_manifest(shared_data):
    manifest = read_manifest(shared_data / "unlabeled")
    assert len(manifest["class_names"]) == 10
    counts = collections.Counter(label for _, label in manifest["train"] + manifest["test"])
    assert sorted(counts.values()) == [850] * 10
    assert len(manifest["train"]) + len(manifest["test"]) == 8500
    assert all(os.path.isabs(path) and path.endswith(".jpg") for path, _ in manifest["train"][:5])

    capped = read_manifest(shared_data / "unlabeled" / "manifest.csv", max_per_class=7)
    again = read_manifest(shared_data / "unlabeled" / "manifest.csv", max_per_class=7)
    other_seed = read_manifest(shared_data / "unlabeled" / "manifest.csv", max_per_class=7, seed=1)
    assert capped["train"] == again["train"] and capped["test"] == again["test"]
    assert capped["train"] != other_seed["train"]
    for split in ("train", "test"):
        assert sorted(collections.Counter(label for _, label in capped[split]).values()) == [7] * 10
        assert set(capped[split]) <= set(manifest[split])


def test_manifest_errors_name_the_problem(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,wnid\na.jpg,n1\n")
    with pytest.raises(SourceError, match="imagenette_split"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,wnid,imagenette_split\na.jpg,n1,test\n")
    with pytest.raises(SourceError, match="line 2"):
        read_manifest(tmp_path)


def test_class_folders_split_80_20_deterministically_and_load(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("cats", 10), ("dogs", 5)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (12, 20, 3)).astype("uint8")).save(
                tmp_path / name / f"{i}.png"
            )
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not an image")
    listing = read_class_folders(tmp_path)
    assert listing["class_names"] == ("cats", "dogs")
    test_counts = collections.Counter(label for _, label in listing["test"])
    assert test_counts == {0: 2, 1: 1}
    assert read_class_folders(tmp_path) == listing
    assert not {p for p, _ in listing["train"]} & {p for p, _ in listing["test"]}

    data = probe_data(f"folder:{tmp_path}", image_size=16, batch_size=4)
    images, labels = next(iter(data.train))
    assert images.shape[1:] == (16, 16, 3) and images.dtype == tf.float32
    assert data.num_train + data.num_test == 15  # the broken file is left out and counted
    assert sum(data.skipped["train"].values()) + sum(data.skipped["test"].values()) == 1
    with pytest.raises(SourceError, match="one sub-folder"):
        probe_data(str(tmp_path / "cats"), image_size=16, batch_size=4)


def test_run_probe_end_to_end_on_synthetic(tmp_path):
    out = tmp_path / "probe"
    report = run_probe(
        "scratch",
        "synthetic:96",
        out,
        backbone_name="tiny",
        method="both",
        image_size=32,
        batch_size=32,
        epochs=5,
        log=lambda message: None,
    )
    saved = json.loads((out / "probe.json").read_text())
    assert saved["num_train"] == 67 and saved["num_test"] == 29 and saved["feature_dim"] == 64
    assert set(saved["results"]) == {"linear", "knn"}
    for result in saved["results"].values():
        assert 0.0 <= result["top1"] <= result["top3"] <= 1.0
    assert saved["top1"] == report["top1"] == saved["results"]["linear"]["top1"]
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "probe" and config["options"]["image_size"] == 32
    assert config["options"]["estimate_bn"] is False
    assert "batch-norm statistics" not in config["resolved"]["backbone"]
    with pytest.raises(RunDirectoryError, match="not empty"):
        run_probe("scratch", "synthetic:96", out, backbone_name="tiny", image_size=32)


def test_run_probe_can_estimate_batch_norm_statistics_first(tmp_path):
    messages = []
    run_probe(
        "scratch",
        "synthetic:96",
        tmp_path / "probe",
        backbone_name="tiny",
        method="knn",
        image_size=32,
        batch_size=32,
        estimate_bn=True,
        log=messages.append,
    )
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    assert config["options"]["estimate_bn"] is True
    assert config["resolved"]["backbone"].endswith(
        "batch-norm statistics estimated on 67 train images"
    )
    assert "batch-norm statistics estimated on 67 train images" in messages


@pytest.mark.large
def test_probe_monitor_logs_into_history():
    keras.utils.set_random_seed(0)
    model = SimCLR(
        tiny_backbone(width=8),
        projection_head=ProjectionHead(output_dim=16, hidden_dim=32),
        augmenter=SimCLRAugmenter(seed=0, crop_area_min=0.3),
        temperature=0.2,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = probe_data("synthetic:40", image_size=32, batch_size=16)
    images = np.concatenate([x.numpy() for x, _ in data.train])
    monitor = ProbeMonitor(data, every=2, k=5)
    history = model.fit(images, batch_size=14, epochs=4, verbose=0, callbacks=[monitor])
    assert len(history.history["probe_top1"]) == 2 and len(history.history["loss"]) == 4
    assert [r["epoch"] for r in monitor.results] == [2, 4]
    assert all(0.0 <= r["top1"] <= r["top3"] <= 1.0 for r in monitor.results)
    with pytest.raises(ValueError, match="every"):
        ProbeMonitor(data, every=0)


def test_run_probe_shows_progress_bars_for_features_and_the_linear_probe(tmp_path, capsys):
    kwargs = dict(backbone_name="tiny", method="linear", image_size=32, batch_size=16, epochs=3)
    run_probe("scratch", "synthetic:64", tmp_path / "p1", log=print, **kwargs)
    shown = capsys.readouterr().out
    assert "extracting features of" in shown
    assert shown.count("/batch") >= 2 and "/epoch" in shown and "3/3" in shown
    run_probe("scratch", "synthetic:64", tmp_path / "p2", log=print, verbose=0, **kwargs)
    assert "/batch" not in capsys.readouterr().out
