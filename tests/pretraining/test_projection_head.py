import keras
import numpy as np
import pytest

from ssl_keras.pretraining.projection_head import ProjectionHead
from test_case import run_model_saving_test


def test_shapes_and_layer_count():
    head = ProjectionHead(output_dim=16, hidden_dim=32, num_layers=3)
    out = head(np.random.rand(4, 10).astype("float32"))
    assert tuple(out.shape) == (4, 16)
    assert len(head.hidden_layers) == 2
    assert tuple(head.hidden_layers[0][0].kernel.shape) == (10, 32)


def test_hidden_width_defaults_to_input_width():
    head = ProjectionHead(output_dim=8)
    head(np.zeros((2, 12), "float32"))
    assert tuple(head.hidden_layers[0][0].kernel.shape) == (12, 12)


def test_single_layer_is_linear_plus_norm():
    head = ProjectionHead(output_dim=5, num_layers=1, output_batch_norm=False)
    head(np.zeros((2, 3), "float32"))
    assert head.hidden_layers == [] and head.output_dense.use_bias


@pytest.mark.parametrize("kwargs", [{"output_dim": 0}, {"num_layers": 0}, {"hidden_dim": -1}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="Received"):
        ProjectionHead(**kwargs)


def predict(model, x):
    return model.predict(x, verbose=0)


def test_keras_round_trip_with_non_default_config(tmp_path):
    head = ProjectionHead(output_dim=6, hidden_dim=20, num_layers=3, output_batch_norm=False)
    inputs = keras.Input((9,))
    model = keras.Model(inputs, head(inputs))
    x = np.random.default_rng(0).normal(size=(5, 9)).astype("float32")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((5, 6), "float32"), epochs=1, verbose=0)  # moves BN statistics
    restored = run_model_saving_test(model, x, tmp_path, call=predict)
    layer = restored.layers[-1]
    assert isinstance(layer, ProjectionHead)
    assert (layer.output_dim, layer.hidden_dim, layer.num_layers, layer.output_batch_norm) == (
        6,
        20,
        3,
        False,
    )
