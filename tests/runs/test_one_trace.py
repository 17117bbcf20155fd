"""`fit_resumable` creates every variable before `fit`, so the train step is traced once."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl_keras.backbone import make_backbone
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.runs import resumable
from ssl_keras.runs.resumable import create_variables_before_fit, fit_resumable


class CountingSimCLR(SimCLR):
    """Counts how often the loss is traced (once per trace of the train step)."""

    traces = 0

    def compute_loss(self, *args, **kwargs):
        CountingSimCLR.traces += 1
        return super().compute_loss(*args, **kwargs)


def _stream(start_batch):
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(images).batch(4, drop_remainder=True).repeat()


def _model():
    keras.utils.set_random_seed(0)
    model = CountingSimCLR(make_backbone("tiny"))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    return model


def _fit(model, folder):
    CountingSimCLR.traces = 0
    fit_resumable(model, _stream, epochs=1, steps_per_epoch=2, checkpoints=str(folder), verbose=0)
    return CountingSimCLR.traces


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function tracing")
def test_simclr_step_is_traced_once_and_trains_the_same(tmp_path, monkeypatch):
    created = _model()
    assert _fit(created, tmp_path / "a") == 1
    monkeypatch.setattr(resumable, "create_variables_before_fit", lambda model, dataset: None)
    deferred = _model()
    assert _fit(deferred, tmp_path / "b") == 2  # variables made in the first trace: traced again
    for a, b in zip(created.weights, deferred.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=a.path)


def test_unbuilt_model_and_optimizer_are_built_from_the_element_shapes():
    model = _model()
    assert not model.built and not model.optimizer.built
    create_variables_before_fit(model, _stream(0))
    assert model.built and model.optimizer.built
    assert len(model.optimizer.variables) > 2 * len(model.trainable_variables)
    before = [v.numpy().copy() for v in model.weights]
    create_variables_before_fit(model, _stream(0))  # built: nothing changes
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))
