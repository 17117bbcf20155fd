import keras
import numpy as np
import pytest

from ssl_keras.pretraining.collapse import (
    CollapseMonitor,
    collapse_reason,
    effective_rank,
    normalized_std,
)


def reference_effective_rank(z):
    """Roy & Vetterli (2007), transcribed with NumPy: exp(entropy of s / sum(s))."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def reference_std(z):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return float(z.std(axis=0).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_numpy_references(seed):
    z = np.random.default_rng(seed).normal(size=(32, 16)).astype("float32") @ np.diag(
        np.linspace(0.1, 3, 16)
    )
    assert float(effective_rank(z)) == pytest.approx(reference_effective_rank(z), rel=1e-4)
    assert float(normalized_std(z)) == pytest.approx(reference_std(z), rel=1e-4)


def test_random_embeddings_are_healthy_and_identical_ones_collapsed():
    d = 128
    random = np.random.default_rng(0).normal(size=(256, d)).astype("float32")
    assert float(normalized_std(random)) == pytest.approx(d**-0.5, rel=0.05)
    assert float(effective_rank(random)) > 0.7 * d
    assert (
        collapse_reason(
            "projection", float(normalized_std(random)), float(effective_rank(random)), d
        )
        is None
    )

    same = np.tile(random[:1], (256, 1)) + 1e-6 * random
    std, rank = float(normalized_std(same)), float(effective_rank(same))
    assert std < 1e-5 and rank < 1.01
    assert "collapsing to one vector" in collapse_reason("projection", std, rank, d)


def test_rank_catches_collapse_onto_one_line_that_std_misses():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(1, 64))
    line = np.sign(rng.normal(size=(256, 1))) * direction + 0.001 * rng.normal(size=(256, 64))
    std, rank = float(normalized_std(line)), float(effective_rank(line))
    assert std > 0.5 * 64**-0.5  # the spread alone looks healthy...
    assert rank < 1.5  # ...but every vector lies on one line
    assert "one or two directions" in collapse_reason("feature", std, rank, 64)


def test_orthogonal_vectors_have_full_rank():
    assert float(effective_rank(np.eye(6, dtype="float32"))) == pytest.approx(6.0, rel=1e-5)


def test_monitor_logs_feature_metrics_and_warns_once():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    # A constant encoder: every image gets the same features.
    encoder = keras.Model(
        inputs, keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones")(inputs)
    )

    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

    messages = []
    monitor = CollapseMonitor(
        np.random.default_rng(0).normal(size=(16, 8)).astype("float32"), log=messages.append
    )
    monitor.set_model(Model())
    for epoch in range(3):
        logs = {}
        monitor.on_epoch_end(epoch, logs)
        assert logs["feature_std"] == pytest.approx(0.0, abs=1e-6) and logs[
            "feature_rank"
        ] == pytest.approx(1.0)
    # Not at epoch 1 (batch-norm statistics may still be settling), then once only.
    assert len(messages) == 1 and messages[0].startswith(
        "warning: collapse at epoch 2: feature_std"
    )
