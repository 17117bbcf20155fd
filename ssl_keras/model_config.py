"""The compile and config conventions the task models share (SimCLR, SupervisedPretrainer, BoxRegressor).

- `compile` refuses, with one clear `ValueError`, each argument it cannot honour (STYLE.md: never
  drop one): `refuse_compile_arguments`.
- `compile_from_config` re-compiles from the saved compile config and builds the optimizer, so
  its state loads with the file: `compile_from_saved_config`.
- `from_config` turns the nested layers and models of a config back into objects, keeping None
  as None: `deserialize_nested`.

Keras only, like the models that use it.
"""

import keras


def refuse_compile_arguments(reason, **arguments):
    """Raises `ValueError(reason + " Received: name=value, ...")` when any argument is not None.

    Args:
        reason: str, why the model cannot honour these arguments and what to do instead.
        **arguments: the `compile` arguments to refuse, by name, in the order they are reported.

    Example:

    >>> refuse_compile_arguments("The loss is part of the model.", loss=None, metrics=None)
    >>> refuse_compile_arguments("The loss is part of the model.", loss="mse", metrics=None)
    Traceback (most recent call last):
    ValueError: The loss is part of the model. Received: loss='mse', metrics=None
    """
    if any(value is not None for value in arguments.values()):
        received = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
        raise ValueError(f"{reason} Received: {received}")


def compile_from_saved_config(model, config, *, keys=None):
    """`model.compile` from a saved compile config, then builds the optimizer (for its state).

    Args:
        model: the `keras.Model` being loaded.
        config: the compile config Keras saved (`model.get_compile_config()`), still serialized.
        keys: the config entries passed to `compile`, or None for all of them. Defaults to None.
    """
    config = keras.saving.deserialize_keras_object(config)
    if keys is not None:
        config = {key: value for key, value in config.items() if key in keys}
    model.compile(**config)
    if model.built:
        model.optimizer.build(model.trainable_variables)


def deserialize_nested(config, keys):
    """A copy of `config` whose entries `keys` are deserialized; None and missing entries stay so.

    Args:
        config: dict, a `get_config()` result whose `keys` hold `keras.saving.serialize_keras_object`
            output (or None).
        keys: the names of the nested objects (layers, models).

    Returns:
        A new dict, ready for `cls(**config)`.
    """
    config = dict(config)
    for key in keys:
        if config.get(key) is not None:
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return config
