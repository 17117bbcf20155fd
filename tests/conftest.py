"""Shared pytest fixtures, and the `shared_data` marker.

Every test that uses the `shared_data` fixture is marked `shared_data` at collection, so
`-m "not shared_data"` runs without the real data. Where the data folder is missing, such a
test is skipped, unless `SSL_KERAS_REQUIRE_DATA=1` (set by `.ci/run`): then it fails, so a CI
run cannot be green on skips.
"""

import os
import pathlib

import pytest

pytest_plugins = ["pytester"]

REQUIRE_DATA = "SSL_KERAS_REQUIRE_DATA"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data():
    """Path of the shared real-data folder (`unlabeled/`, `voc2007/`).

    `SSL_KERAS_DATA` overrides the default, `shared/data` beside the repository.
    """
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    path = pathlib.Path(os.environ.get("SSL_KERAS_DATA") or default)
    if not path.is_dir():
        message = f"shared data folder {path} not found; set SSL_KERAS_DATA to its path"
        if os.environ.get(REQUIRE_DATA) == "1":
            pytest.fail(f"{message} ({REQUIRE_DATA}=1: the real-data tests must run)")
        pytest.skip(message)
    return path
