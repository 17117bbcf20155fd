import keras
import numpy as np
import pytest

from ssl_keras.optimizers import LARS, WarmupCosineDecay, build_optimizer, resolve_optimizer_name
from test_case import run_serialization_test


def lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_warmup_is_linear_then_cosine_to_final_fraction():
    schedule = WarmupCosineDecay(1.0, total_steps=110, warmup_steps=10, final_fraction=0.1)
    assert lr(schedule, 0) == pytest.approx(0.1)
    assert lr(schedule, 4) == pytest.approx(0.5)
    assert lr(schedule, 10) == pytest.approx(1.0)
    assert lr(schedule, 60) == pytest.approx(
        0.1 + 0.9 * 0.5, rel=1e-5
    )  # half-way through the cosine
    assert lr(schedule, 110) == pytest.approx(0.1)
    assert lr(schedule, 500) == pytest.approx(0.1)


def test_schedule_validates_and_round_trips():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineDecay(1e-3, total_steps=5, warmup_steps=6)
    schedule = WarmupCosineDecay(2e-3, total_steps=50, warmup_steps=5, final_fraction=0.2)
    _, restored = run_serialization_test(schedule)
    assert [lr(restored, s) for s in (0, 7, 49)] == pytest.approx(
        [lr(schedule, s) for s in (0, 7, 49)]
    )


def test_auto_picks_adamw_for_small_and_lars_for_large_batches():
    assert resolve_optimizer_name("auto", 256) == "adamw"
    assert resolve_optimizer_name("auto", 4096) == "lars"
    with pytest.raises(ValueError, match="optimizer"):
        resolve_optimizer_name("sgd", 64)


def _model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("name", ["adamw", "lamb", "lars"])
def test_weight_decay_skips_bias_and_batchnorm(name):
    # With zero gradients only weight decay moves a variable.
    model = _model()
    optimizer = build_optimizer(name, learning_rate=0.1, total_steps=10, weight_decay=0.5)
    variables = model.trainable_variables
    for v in variables:
        v.assign(np.ones(v.shape, "float32"))
    before = {v.path: np.array(v) for v in variables}
    optimizer.apply_gradients(
        [(np.zeros(v.shape, "float32") + (1e-8 if name == "lars" else 0.0), v) for v in variables]
    )
    moved = {v.path: not np.allclose(np.array(v), before[v.path], atol=1e-6) for v in variables}
    assert moved["dense/kernel"]
    assert not moved["dense/bias"] and not moved["bn/gamma"] and not moved["bn/beta"]


def test_lars_trust_ratio_scales_the_step():
    v = keras.Variable(np.full((10,), 2.0, "float32"), name="kernel")
    optimizer = LARS(learning_rate=1.0, momentum=0.0, weight_decay=0.0, trust_coefficient=0.01)
    g = np.full((10,), 100.0, "float32")
    optimizer.apply_gradients([(g, v)])
    # step = lr * eta * ||w|| / ||g|| * g = 0.01 * 2 / 100 * 100 = 0.02 per element
    np.testing.assert_allclose(np.array(v), 2.0 - 0.02, rtol=1e-5)
