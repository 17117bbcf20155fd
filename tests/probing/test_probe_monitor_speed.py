"""What makes `ProbeMonitor` cheap after its first probe: padded batches and decoded images kept."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_keras.backbone import tiny_backbone
from ssl_keras.probing import probe
from ssl_keras.probing.probe import ProbeMonitor, extract_features, probe_data


class CountingLayer(keras.layers.Layer):
    """Identity that counts its calls: one per trace of a predict function (and per eager call)."""

    calls = 0

    def call(self, x):
        CountingLayer.calls += 1
        return x


def _counting_backbone():
    inputs = keras.Input((16, 16, 3))
    outputs = tiny_backbone(width=4)(CountingLayer()(inputs))
    return keras.Model(inputs, outputs)


def test_short_last_batch_is_padded_same_features_and_one_trace():
    backbone = _counting_backbone()
    images = np.random.default_rng(0).uniform(0, 255, (10, 16, 16, 3)).astype("float32")
    labels = np.arange(10) % 3
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # 4, 4, 2
    CountingLayer.calls = 0
    features, got = extract_features(backbone, dataset)
    assert CountingLayer.calls == 1  # the 2-image batch would trace a second shape
    assert features.shape == (10, 16)
    np.testing.assert_array_equal(got, labels)
    expected = keras.ops.convert_to_numpy(backbone(images, training=False))
    np.testing.assert_allclose(features, expected, atol=1e-5)


@pytest.fixture
def class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 255, (20, 20, 3)).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.png")
    return tmp_path / "photos"


class Encoded(keras.Model):
    """A model with the `backbone` sub-model that `ProbeMonitor` probes."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _probe_twice(folder, monkeypatch, cache_bytes):
    monkeypatch.setattr(probe, "PROBE_CACHE_BYTES", cache_bytes)
    data = probe_data(f"folder:{folder}", image_size=16, batch_size=4)
    monitor = ProbeMonitor(data, k=3)
    monitor.set_model(Encoded(tiny_backbone(width=4)))
    logs = {}
    monitor.on_epoch_end(0, logs)
    shutil.rmtree(folder)  # the second probe must not need the files
    monitor.on_epoch_end(1, logs)
    return monitor.results


def test_second_probe_reads_no_file_and_gives_the_same_result(class_folders, monkeypatch):
    first, second = _probe_twice(class_folders, monkeypatch, probe.PROBE_CACHE_BYTES)
    assert first["top1"] == second["top1"] and first["top3"] == second["top3"]


def test_over_the_memory_budget_it_streams_from_the_files(class_folders, monkeypatch):
    with pytest.raises(tf.errors.OpError):
        _probe_twice(class_folders, monkeypatch, 0)
