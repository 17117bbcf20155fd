"""Shared pytest fixtures."""

import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def shared_data():
    """Path of the shared real-data folder (`unlabeled/`, `voc2007/`).

    `SSL_KERAS_DATA` overrides the default, `shared/data` beside the repository.
    """
    default = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
    path = pathlib.Path(os.environ.get("SSL_KERAS_DATA") or default)
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found; set SSL_KERAS_DATA to its path")
    return path
