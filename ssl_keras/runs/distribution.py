"""Data-parallel training on the engines that exist for it: `tf.distribute` and `keras.distribution`.

What the losses need from the engine is two questions, answered here once for every backend:

- how many replicas share the step, and which one is running (`replica_context`);
- the rows of a tensor from every replica, in replica order (`all_gather`).

On the TensorFlow backend, `model.fit` under a `tf.distribute` strategy runs the step once per
replica, each on its shard of the global batch, so a contrastive loss sees only its own shard
unless it gathers the others. On the JAX backend, `keras.distribution.DataParallel` shards the
global batch over the devices but traces one program over the *global* arrays: a loss there
already sees every row, so there is nothing to gather (and BatchNorm statistics are already
computed over the global batch). The torch backend has no multi-device path in Keras.

TensorFlow is imported only on its backend, when a strategy is in use.
"""

import keras
from keras import ops


def replica_context():
    """`(num_replicas, replica_id)` of the step being traced; `(1, 0)` outside a TF strategy.

    `replica_id` is a Python int where the strategy fixes it, else a scalar int32 tensor.
    """
    context = _tf_replica_context()
    if context is None:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


def all_gather(x):
    """`x`'s rows from every replica, concatenated along axis 0 in replica order.

    Differentiable: the gradient of the gathered tensor flows back to each replica's own rows
    (TensorFlow's `all_gather` gradient is the all-reduced slice), so a loss over the gathered
    rows gets the same gradient as the one-device loss over the global batch. Outside a TF
    strategy (one device, or JAX's global arrays) it returns `x`.
    """
    context = _tf_replica_context()
    if context is None:
        return x
    return context.all_gather(x, axis=0)


def _tf_replica_context():
    """The TF replica context of a step running under a strategy with several replicas, or None."""
    if keras.config.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def local_rows(n, replica_id):
    """Global row indices `[replica_id * n, (replica_id + 1) * n)` of a replica's `n` rows."""
    return ops.arange(n, dtype="int32") + ops.cast(replica_id, "int32") * ops.cast(n, "int32")
