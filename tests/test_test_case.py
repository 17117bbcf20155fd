"""The shared helpers of tests/test_case.py catch the round trips they are meant to catch."""

import keras
import numpy as np
import pytest

from test_case import run_model_saving_test, run_serialization_test


class ForgetfulScale(keras.layers.Layer):
    """Multiplies by `factor`, but its config forgets the factor (a broken round trip)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return super().get_config()  # no "factor"


class FaithfulScale(ForgetfulScale):
    """The same layer with a faithful config."""

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def test_serialization_test_passes_a_faithful_layer_and_returns_its_copies():
    restored, revived = run_serialization_test(
        keras.layers.Dense(3, name="d"), settings={"units": 3, "name": "d"}
    )
    assert (restored.units, revived.units, revived.name) == (3, 3, "d")
    with pytest.raises(AssertionError, match="units"):
        run_serialization_test(keras.layers.Dense(3), settings={"units": 4})


def test_serialization_test_fails_when_from_config_builds_something_else():
    class Shrinking(keras.layers.Dense):
        @classmethod
        def from_config(cls, config):
            return cls(**{**config, "units": 1})

    with pytest.raises(AssertionError):
        run_serialization_test(Shrinking(3))


def test_serialization_test_fails_when_the_config_is_not_json():
    with pytest.raises(TypeError, match="JSON serializable"):
        run_serialization_test(FaithfulScale(factor=np.float16(2.0)))


def test_model_saving_test_fails_when_the_loaded_model_computes_something_else(tmp_path):
    inputs = keras.Input((2,))
    x = np.ones((1, 2), "float32")
    with keras.saving.custom_object_scope({"ForgetfulScale": ForgetfulScale}):
        forgetful = keras.Model(inputs, ForgetfulScale(factor=3.0)(inputs))
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            run_model_saving_test(forgetful, x, tmp_path)
    with keras.saving.custom_object_scope({"FaithfulScale": FaithfulScale}):
        faithful = keras.Model(inputs, FaithfulScale(factor=3.0)(inputs))
        restored = run_model_saving_test(faithful, x, tmp_path)
    np.testing.assert_allclose(np.asarray(restored(x)), 3.0)
