"""`network_available`: the one download-host probe that TFDS sources and `build_backbone` share."""

import socket

import pytest

from ssl_keras import backbone
from ssl_keras.data import download_host, tfds_builder


def test_a_listening_host_is_available_and_a_closed_port_is_not(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setattr(download_host, "DOWNLOAD_HOST", server.getsockname())
        assert download_host.network_available(timeout=2.0) is True
    # The port is closed now: the connection is refused at once.
    assert download_host.network_available(timeout=2.0) is False


def test_tfds_sources_and_backbones_ask_the_same_probe():
    assert tfds_builder.network_available is download_host.network_available
    assert backbone.network_available is download_host.network_available


def test_imagenet_weights_offline_and_not_cached_are_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights there
    monkeypatch.setattr(backbone, "network_available", lambda: False)
    with pytest.raises(
        backbone.BackboneWeightsError, match="cannot be downloaded .no network.*--backbone-weights"
    ):
        backbone.build_backbone("EfficientNetB0", weights="imagenet", input_shape=(32, 32, 3))
