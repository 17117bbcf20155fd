"""Cross-replica NT-Xent (issue 15): 2 replicas of N images each equal one device with 2N images.

TensorFlow needs its logical devices configured before it starts, so each check runs in a new
process (`test_case.run_on_backend`) with the CPU split into two logical devices.
"""

import numpy as np
import pytest

from ssl_keras.pretraining.ntxent_loss import nt_xent_logits
from ssl_keras.runs.distribution import all_gather, replica_context
from test_case import run_on_backend

TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
"""

LOSS_AND_GRADIENTS = (
    TWO_CPUS
    + """
import numpy as np
import keras
from ssl_keras.pretraining.ntxent_loss import NTXentLoss

rng = np.random.default_rng(0)
n = 4  # images per replica; the global batch is 2n
view_1 = rng.normal(size=(2 * n, 6)).astype("float32")
view_2 = (view_1 + 0.3 * rng.normal(size=(2 * n, 6))).astype("float32")
kernel_value = rng.normal(size=(6, 5)).astype("float32")
loss_fn = NTXentLoss(temperature=0.5)

def loss_and_gradient(kernel, v1, v2):
    with tf.GradientTape() as tape:
        loss = loss_fn(tf.matmul(v1, kernel), tf.matmul(v2, kernel))
    return loss, tape.gradient(loss, kernel)

one_kernel = tf.Variable(kernel_value)
one_loss, one_gradient = loss_and_gradient(one_kernel, view_1, view_2)

with strategy.scope():
    kernel = tf.Variable(kernel_value)

def shard(array):
    return strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(array[context.replica_id_in_sync_group * n:][:n])
    )

@tf.function
def replicated():
    return strategy.run(loss_and_gradient, args=(kernel, shard(view_1), shard(view_2)))

losses, gradients = replicated()
# Keras divides each replica's loss by the number of replicas, so they add up to the global loss.
loss = strategy.reduce("SUM", losses, axis=None)
gradient = strategy.reduce("SUM", gradients, axis=None)
np.testing.assert_allclose(loss.numpy(), one_loss.numpy(), rtol=0, atol=1e-5)
np.testing.assert_allclose(gradient.numpy(), one_gradient.numpy(), rtol=0, atol=1e-5)
# Without the gather, each replica would contrast only its own shard: a different loss.
local = NTXentLoss(temperature=0.5)
shard_loss = np.mean([
    float(local(view_1[r * n:][:n] @ kernel_value, view_2[r * n:][:n] @ kernel_value))
    for r in range(2)
])
assert abs(shard_loss - float(one_loss)) > 0.05, (shard_loss, float(one_loss))
print("OK", float(loss), float(one_loss))
"""
)


@pytest.mark.large
def test_two_replicas_give_the_loss_and_gradients_of_one_device_with_the_global_batch():
    result = run_on_backend("tensorflow", LOSS_AND_GRADIENTS, timeout=300)
    assert "OK" in result.stdout


LOGITS = (
    TWO_CPUS
    + """
import numpy as np
from ssl_keras.pretraining.ntxent_loss import nt_xent_logits

rng = np.random.default_rng(1)
n = 3
z1 = rng.normal(size=(2 * n, 4)).astype("float32")
z2 = rng.normal(size=(2 * n, 4)).astype("float32")
one_logits, one_labels = (t.numpy() for t in nt_xent_logits(z1, z2, temperature=0.2))

def shard(array):
    return strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(array[context.replica_id_in_sync_group * n:][:n])
    )

@tf.function
def replicated():
    return strategy.run(lambda a, b: nt_xent_logits(a, b, temperature=0.2), args=(shard(z1), shard(z2)))

logits, labels = replicated()
for r, (l, y) in enumerate(zip(strategy.experimental_local_results(logits),
                               strategy.experimental_local_results(labels))):
    rows = np.r_[np.arange(n) + r * n, np.arange(n) + r * n + 2 * n]
    assert l.shape == (2 * n, 4 * n - 1), l.shape
    np.testing.assert_allclose(l.numpy(), one_logits[rows], atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), one_labels[rows])
print("OK")
"""
)


@pytest.mark.large
def test_each_replica_holds_the_one_device_rows_of_its_anchors():
    result = run_on_backend("tensorflow", LOGITS, timeout=300)
    assert "OK" in result.stdout


def test_outside_a_strategy_there_is_one_replica_and_nothing_to_gather():
    x = np.arange(6, dtype="float32").reshape(3, 2)
    assert replica_context() == (1, 0)
    np.testing.assert_array_equal(np.asarray(all_gather(x)), x)
    logits, labels = nt_xent_logits(x, x + 1.0)
    assert tuple(logits.shape) == (6, 5)
    np.testing.assert_array_equal(np.asarray(labels), [2, 3, 4, 0, 1, 2])


# The model both fits below train, once on one device and once on two replicas. No augmentation:
# the two views are equal, so both runs see the same batches; the BN statistics still depend on
# which images share a replica.
TINY_SIMCLR = """
import numpy as np
import keras
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.runs.distribution import resolve_distribution, synchronize_batch_norm

images = np.random.default_rng(2).uniform(0, 255, size=(8, 12, 12, 3)).astype("float32")

def tiny_simclr():
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(6, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
    ])
    model = SimCLR(encoder=encoder, augmenter=None, temperature=0.5)
    model.build((None, 12, 12, 3))
    return model
"""

FIT = (
    TWO_CPUS
    + TINY_SIMCLR
    + """
SYNC = {sync}

def train(distributed, sync):
    model = tiny_simclr()
    if sync:
        # The encoder's and the projection head's (hidden and output) layers.
        assert synchronize_batch_norm(model) == 3
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=2, verbose=0)
    return [w.numpy() for w in model.weights]

one = train(False, False)
distribution = resolve_distribution("mirrored")
assert distribution.num_replicas == 2
with distribution.scope():
    two = train(True, SYNC)
gap = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
print("GAP", gap)
"""
)


@pytest.mark.large
def test_a_mirrored_fit_with_synchronized_batch_norm_equals_one_device():
    synchronized = run_on_backend("tensorflow", FIT.format(sync=True), timeout=300)
    gap = float(synchronized.stdout.split("GAP")[1])
    # Two SGD steps at learning rate 0.5 amplify float round-off (the summation order of the
    # all-reduced moments and gradients): 0 to 2e-5 here.
    assert gap < 1e-4, gap
    # Per-replica statistics give a different model: the reason --sync-bn is on by default.
    per_replica = run_on_backend("tensorflow", FIT.format(sync=False), timeout=300)
    per_replica_gap = float(per_replica.stdout.split("GAP")[1])
    assert per_replica_gap > 10 * max(gap, 1e-5), (gap, per_replica_gap)


JAX_FIT = (
    TINY_SIMCLR
    + """
import jax

assert len(jax.devices()) == 2, jax.devices()

def train():
    model = tiny_simclr()
    assert synchronize_batch_norm(model) == 0  # JAX's statistics are already global
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = model.fit(images, batch_size=8, epochs=2, verbose=0, shuffle=False)
    return [np.asarray(w) for w in model.weights], history.history["loss"]

one, one_loss = train()
distribution = resolve_distribution("data-parallel")
assert distribution.num_replicas == 2
with distribution.scope():
    two, two_loss = train()
np.testing.assert_allclose(two_loss, one_loss, atol=1e-5)
gap = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
assert gap < 1e-5, gap
print("OK", gap)
"""
)


@pytest.mark.large
def test_jax_data_parallel_fit_equals_one_device(monkeypatch):
    # Two host devices: one program over the global, sharded batch, so the loss already sees
    # all 2N projections and BatchNorm its global statistics.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    result = run_on_backend("jax", JAX_FIT, timeout=300)
    assert "OK" in result.stdout
