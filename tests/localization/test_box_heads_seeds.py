"""A seeded head starts from the same weights as the layers built in their original order."""

import keras
import numpy as np
import pytest

from ssl_keras.localization.box_heads import PooledBoxHead, SpatialBoxHead


def _reference_pooled():
    """pool, hidden, dropout, box output, class output: the order of the first release."""
    layers = [
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(4),
        keras.layers.Dense(3),
    ]
    hidden, _, box, cls = layers
    hidden.build((None, 6))
    box.build((None, 8))
    cls.build((None, 8))
    return [hidden, box, cls]


def _reference_spatial():
    """map dropout, reduce, cell scores, cell sides, pool, hidden, dropout, class output."""
    keras.layers.Dropout(0.2)
    reduce = keras.layers.Conv2D(5, 1, activation="relu")
    scores, sides = keras.layers.Conv2D(1, 1), keras.layers.Conv2D(4, 1)
    hidden = keras.layers.Dense(8, activation="relu")
    keras.layers.Dropout(0.2)
    cls = keras.layers.Dense(3)
    reduce.build((None, 2, 2, 6))
    scores.build((None, 2, 2, 5))
    sides.build((None, 2, 2, 5))
    hidden.build((None, 6))
    cls.build((None, 8))
    return [reduce, scores, sides, hidden, cls]


@pytest.mark.parametrize(
    "make_head, make_reference, input_shape",
    [
        (lambda: PooledBoxHead(num_classes=3, hidden_units=8), _reference_pooled, (None, 6)),
        (
            lambda: SpatialBoxHead(num_classes=3, channels=5, hidden_units=8),
            _reference_spatial,
            (None, 2, 2, 6),
        ),
    ],
)
def test_seeded_initial_weights_are_unchanged(make_head, make_reference, input_shape):
    keras.utils.set_random_seed(7)
    head = make_head()
    head.build(input_shape)
    keras.utils.set_random_seed(7)
    reference = make_reference()
    expected = {tuple(w.shape): w.numpy() for layer in reference for w in layer.weights}
    got = {tuple(w.shape): w.numpy() for w in head.weights}
    assert got.keys() == expected.keys()
    for shape, value in expected.items():
        np.testing.assert_array_equal(got[shape], value, err_msg=str(shape))
