import math

import keras
import numpy as np
import pytest

from ssl_keras.pretraining.ntxent_loss import NTXentLoss, nt_xent, nt_xent_logits
from test_case import run_serialization_test


def reference_nt_xent(z1, z2, temperature):
    """Slow transcription of SimCLR's Algorithm 1 (Chen et al., 2020), per anchor."""
    z = np.concatenate([z1, z2]).astype("float64")
    n2 = len(z)
    n = n2 // 2
    sim = np.array(
        [
            [z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])) for j in range(n2)]
            for i in range(n2)
        ]
    )

    def l(i, j):
        denominator = sum(math.exp(sim[i, k] / temperature) for k in range(n2) if k != i)
        return -math.log(math.exp(sim[i, j] / temperature) / denominator)

    return np.array([l(i, (i + n) % n2) for i in range(n2)])


@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.1), (5, 8, 0.5), (8, 16, 1.0), (16, 4, 0.07)])
def test_matches_numpy_reference(n, d, temperature):
    rng = np.random.default_rng(n * 100 + d)
    z1 = rng.normal(size=(n, d)).astype("float32")
    z2 = rng.normal(size=(n, d)).astype("float32")
    expected = reference_nt_xent(z1, z2, temperature)
    got = keras.ops.convert_to_numpy(nt_xent(z1, z2, temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    loss = keras.ops.convert_to_numpy(NTXentLoss(temperature=temperature)(z1, z2))
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-4)


def test_symmetric_in_the_two_views():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(2, 6, 5)).astype("float32")
    loss = NTXentLoss(temperature=0.3)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss(z1, z2)),
        keras.ops.convert_to_numpy(loss(z2, z1)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("n,temperature", [(2, 0.1), (4, 0.5), (7, 2.0)])
def test_identical_embeddings_give_log_2n_minus_1(n, temperature):
    z = np.tile(np.arange(1, 5, dtype="float32"), (n, 1))
    value = float(keras.ops.convert_to_numpy(NTXentLoss(temperature=temperature)(z, z)))
    assert value == pytest.approx(-math.log(1.0 / (2 * n - 1)), rel=1e-5)


def test_perfect_pairs_have_low_loss_and_full_accuracy():
    z = np.eye(6, dtype="float32")[:4]  # orthogonal across images, identical within a pair
    logits, labels = nt_xent_logits(z, z, 0.1)
    predicted = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    np.testing.assert_array_equal(predicted, keras.ops.convert_to_numpy(labels))
    assert float(keras.ops.convert_to_numpy(keras.ops.mean(nt_xent(z, z, 0.1)))) < 1e-3


def test_float16_inputs_are_computed_in_float32_without_overflow():
    rng = np.random.default_rng(2)
    z1, z2 = rng.normal(size=(2, 8, 4)).astype("float16")
    value = keras.ops.convert_to_numpy(nt_xent(z1, z2, 0.05))
    assert value.dtype == np.float32
    assert np.all(np.isfinite(value))
    np.testing.assert_allclose(
        value,
        reference_nt_xent(z1.astype("float32"), z2.astype("float32"), 0.05),
        rtol=2e-3,
        atol=2e-3,
    )


@pytest.mark.parametrize("temperature", [0, -0.5])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(np.ones((2, 2), "float32"), np.ones((2, 2), "float32"), temperature)


def test_config_round_trip():
    loss = NTXentLoss(temperature=0.25, name="my_loss")
    _, restored = run_serialization_test(loss)
    assert restored.temperature == 0.25 and restored.name == "my_loss"
