"""The compile and config conventions of ssl_keras/model_config.py."""

import keras
import numpy as np
import pytest

from ssl_keras.model_config import (
    compile_from_saved_config,
    deserialize_nested,
    refuse_compile_arguments,
)


def test_refusal_names_every_argument_in_order_only_when_one_is_set():
    refuse_compile_arguments("Unused.", loss=None, metrics=None)  # nothing to refuse
    with pytest.raises(ValueError) as raised:
        refuse_compile_arguments("The loss is the model's.", loss=None, metrics=["mae"])
    assert str(raised.value) == "The loss is the model's. Received: loss=None, metrics=['mae']"


def test_deserialize_nested_keeps_none_and_missing_entries_and_the_input():
    dense = keras.saving.serialize_keras_object(keras.layers.Dense(3, name="d"))
    config = {"layer": dense, "other": None, "units": 2}
    restored = deserialize_nested(config, ("layer", "other", "missing"))
    assert isinstance(restored["layer"], keras.layers.Dense) and restored["layer"].units == 3
    assert restored["other"] is None and "missing" not in restored and restored["units"] == 2
    assert config["layer"] is dense  # the caller's config is not changed


def test_compile_from_saved_config_passes_only_the_keys_and_builds_the_optimizer():
    inputs = keras.Input((2,))
    saved = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    saved.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", metrics=["mae"])
    config = saved.get_compile_config()
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    compile_from_saved_config(model, config, keys=("optimizer",))
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.built
    assert float(model.optimizer.learning_rate) == pytest.approx(0.5)
    assert model.loss is None  # not passed
    everything = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    compile_from_saved_config(everything, config)
    assert everything.loss == "mse"
    everything.fit(np.ones((2, 2)), np.ones((2, 1)), verbose=0)
