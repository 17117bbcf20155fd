"""Fixtures of the data tests."""

import time

import pytest

from ssl_keras.data import tfds_builder
from ssl_keras.data.source_spec import SourceError


@pytest.fixture
def offline_tfds_error(tmp_path, monkeypatch):
    """`error(load, *args)`: the message of the offline error of a TFDS load, on this machine.

    TFDS reads an empty data folder (`tmp_path`). `load(*args)` must raise the `SourceError`
    that says the dataset cannot be downloaded offline, and within 10 seconds (no download
    retries first). Skips where the network is reachable: TFDS would really download.
    """
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    if tfds_builder.network_available():
        pytest.skip("the network is reachable: TFDS would really download")

    def error(load, *args, **kwargs):
        start = time.monotonic()
        with pytest.raises(SourceError, match="cannot be downloaded offline") as raised:
            load(*args, **kwargs)
        assert time.monotonic() - start < 10.0
        return str(raised.value)

    return error
