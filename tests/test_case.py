"""Helpers the tests share (STYLE.md: one shared `tests/test_case.py`); no tests of its own.

Import it as `from test_case import ...`: pytest puts `tests/` on the path (see conftest.py).
"""

import copy
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[1])

TINY_ARGS = ["--backbone", "tiny", "--batch-size", "8", "--image-size", "32"]
"""The options of a seconds-long `ssl-keras pretrain` in tests: the tiny backbone at 32 px."""


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


def run_serialization_test(instance, *, settings=None):
    """Checks that `instance` survives Keras's config round trips, as keras-hub's helper does.

    Four copies are made, and each must be of `instance`'s exact class with a `get_config()`
    equal (`==`, so a tuple is not a list) to the original's:

    1. `type(instance).from_config(instance.get_config())`;
    2. the same, from the config written to JSON text and read back (the config must be
       JSON-serializable), compared as JSON text;
    3. `keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(instance))`;
    4. the same, with the serialized form written to JSON text and read back, compared as JSON text.

    Args:
        instance: a Keras layer, model, loss, metric or schedule with `get_config`/`from_config`.
        settings: a dict of entries `instance.get_config()` must hold (a tuple given here is
            stored as a list), or None. Defaults to None.

    Returns:
        The copies from 1 and 3, `(from_config_copy, deserialized_copy)`, for further checks.

    Example:

    >>> restored, revived = run_serialization_test(keras.layers.Dense(3, name="d"))
    >>> revived.units
    3
    """
    cls = type(instance)
    config = instance.get_config()
    for key, value in (settings or {}).items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    config_json = json.dumps(config, sort_keys=True)

    def check(copy_, compare_json):
        assert type(copy_) is cls, f"expected {cls.__name__}, got {type(copy_).__name__}"
        if compare_json:
            assert json.dumps(copy_.get_config(), sort_keys=True) == config_json
        else:
            assert copy_.get_config() == config
        return copy_

    restored = check(cls.from_config(copy.deepcopy(config)), False)
    check(cls.from_config(json.loads(config_json)), True)
    serialized = keras.saving.serialize_keras_object(instance)
    revived = check(keras.saving.deserialize_keras_object(copy.deepcopy(serialized)), False)
    check(keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized))), True)
    return restored, revived


def _inference(model, inputs):
    return model(inputs, training=False)


def run_model_saving_test(model, inputs, directory, *, call=_inference, atol=1e-6, rtol=1e-6):
    """Saves `model` to a `.keras` file, loads it back, and checks that nothing was lost.

    The loaded model must be of `model`'s exact class, with the same `get_config()` as JSON text
    (the file holds JSON, so tuples come back as lists), and give
    the same outputs on `inputs` (every output of a dict, list or tuple; within `atol`/`rtol`).

    Args:
        model: a Keras model (trained or not); `call` runs on it before saving, which builds it.
        inputs: the input data passed to `call`.
        directory: a folder (e.g. pytest's `tmp_path`); the file is `directory/model.keras`.
        call: `call(model, inputs)` gives the outputs to compare. Defaults to
            `model(inputs, training=False)`.
        atol: absolute tolerance, as in `np.testing.assert_allclose`. Defaults to 1e-6.
        rtol: relative tolerance. Defaults to 1e-6.

    Returns:
        The loaded model, for further checks.

    Example:

    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> restored = run_model_saving_test(model, np.ones((1, 3), "float32"), tmp_path)
    """
    expected = keras.tree.flatten(call(model, inputs))  # before saving: this builds the model
    path = pathlib.Path(directory) / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model), f"loaded a {type(restored).__name__}"
    # The file holds JSON, so tuples (e.g. the build shapes of sub-layers) come back as lists.
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )
    actual = keras.tree.flatten(call(restored, inputs))
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), atol=atol, rtol=rtol
        )
    return restored
