"""Helpers the tests share (STYLE.md: one shared `tests/test_case.py`); no tests of its own.

Import it as `from test_case import ...`: pytest puts `tests/` on the path (see conftest.py).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[1])


def run_on_backend(backend, script, *, timeout=300):
    """Runs `script` in a new Python process whose Keras uses `backend`, and checks that it exits with 0.

    The package is imported from this checkout (`REPO_ROOT` first on `PYTHONPATH`), whatever is
    installed. The test is skipped when `backend`'s package is not installed.

    Args:
        backend: str, a `KERAS_BACKEND` value, e.g. `"torch"` or `"jax"`.
        script: str, Python source run with `python -c`.
        timeout: seconds before the process is killed. Defaults to 300.

    Returns:
        The `subprocess.CompletedProcess`, with text `stdout` and `stderr`.

    Example:

    >>> result = run_on_backend("torch", "import keras; print(keras.backend.backend())")
    >>> result.stdout.strip()
    'torch'
    """
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result
