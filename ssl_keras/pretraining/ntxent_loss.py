"""NT-Xent (normalized temperature-scaled cross entropy), the InfoNCE loss of SimCLR."""

import keras
from keras import ops

from ssl_keras.runs.distribution import all_gather, local_rows, replica_context


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"`temperature` must be a number > 0. Received: temperature={temperature}")


def _drop_diagonal(matrix):
    """Removes the diagonal of a square [M, M] matrix, giving [M, M - 1].

    Self-similarities are dropped rather than masked with a large negative constant: a constant
    such as -1e9 overflows float16, and even in float32 it needlessly enters the softmax.
    """
    m = ops.shape(matrix)[0]
    flat = ops.reshape(matrix, (-1,))[1:]
    flat = ops.reshape(flat, (m - 1, m + 1))[:, :-1]
    return ops.reshape(flat, (m, m - 1))


def nt_xent_logits(z1, z2, temperature=0.1):
    """Similarity logits and positive indices of the NT-Xent loss.

    The 2N projections `[z1; z2]` are L2-normalised; each of them is an anchor whose positive is
    the other view of the same image and whose negatives are the other 2N - 2 projections.
    Computed in float32 whatever the input dtype (mixed precision safe).

    Args:
        z1: tensor [N, D], projections of the first view.
        z2: tensor [N, D], projections of the second view (row i pairs with row i of `z1`).
        temperature: float > 0, the softmax temperature tau. Defaults to 0.1.

    Returns:
        A tuple `(logits, labels)`: `logits` [2N, 2N - 1] are cosine similarities divided by
        tau with each anchor's self-similarity removed; `labels` [2N] (int32) is the column of
        each anchor's positive. `argmax(logits) == labels` is the contrastive top-1 accuracy.
    """
    _check_temperature(temperature)
    z1 = _normalize(ops.cast(z1, "float32"))
    z2 = _normalize(ops.cast(z2, "float32"))
    num_replicas, replica_id = replica_context()
    if num_replicas > 1:
        return _cross_replica_logits(z1, z2, temperature, replica_id)
    n = ops.shape(z1)[0]
    z = ops.concatenate([z1, z2], axis=0)
    similarity = ops.matmul(z, ops.transpose(z)) / temperature
    logits = _drop_diagonal(similarity)
    # Anchor i < N has its positive at column i + N of the full matrix, which moves one to the
    # left once the diagonal element (column i, before it) is dropped; anchors i >= N keep i - N.
    first = ops.arange(n, dtype="int32") + ops.cast(n, "int32") - 1
    second = ops.arange(n, dtype="int32")
    labels = ops.concatenate([first, second], axis=0)
    return logits, labels


def _normalize(z):
    return z / ops.maximum(ops.norm(z, axis=1, keepdims=True), 1e-12)


def _cross_replica_logits(z1, z2, temperature, replica_id):
    """`nt_xent_logits` of this replica's anchors against the projections of every replica.

    Under a strategy each replica holds `n` images of the global batch of `N = n * replicas`.
    Its 2n anchors (its view-1 rows, then its view-2 rows) are scored against the 2N gathered
    candidates `[all view-1 rows; all view-2 rows]`, in the order one device would hold them,
    and each anchor's own column is removed, so row `a` equals the row of the same image in the
    one-device logits of the global batch. The loss of one replica is the mean over its 2n
    anchors; Keras divides it by the number of replicas and sums the gradients, which gives the
    one-device mean over the 2N anchors. The gather is differentiable, so an anchor's
    projection also gets the gradient of the other replicas' anchors that use it as a negative.
    """
    n = ops.shape(z1)[0]
    candidates = ops.concatenate([all_gather(z1), all_gather(z2)], axis=0)
    total = ops.shape(candidates)[0] // 2
    rows = local_rows(n, replica_id)
    own = ops.concatenate([rows, rows + total], axis=0)
    positive = ops.concatenate([rows + total, rows], axis=0)
    similarity = ops.matmul(ops.concatenate([z1, z2], axis=0), ops.transpose(candidates))
    # Column k of row a, for k < 2N - 1, is candidate k, or k + 1 once past the anchor itself.
    columns = ops.arange(2 * total - 1, dtype="int32")[None, :]
    columns = columns + ops.cast(columns >= own[:, None], "int32")
    logits = ops.take_along_axis(similarity / temperature, columns, axis=1)
    labels = positive - ops.cast(positive > own, "int32")
    return logits, labels


def nt_xent(z1, z2, temperature=0.1):
    """NT-Xent / InfoNCE loss of SimCLR (Chen et al., 2020, Algorithm 1), per anchor.

    Formula:

    ```
    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )
    loss = mean over the 2N anchors of l(i, positive(i))
    ```

    Args:
        z1: tensor [N, D], projections of the first augmented view.
        z2: tensor [N, D], projections of the second augmented view.
        temperature: float > 0. Defaults to 0.1.

    Returns:
        Float32 tensor [2N] with one loss per anchor (view-1 anchors first); its mean is the
        SimCLR loss.

    Example:

    >>> import numpy as np
    >>> z = np.ones((4, 8), "float32")
    >>> float(keras.ops.mean(nt_xent(z, z, temperature=0.5)))  # log(2N - 1) = log(7)
    1.9459...
    """
    logits, labels = nt_xent_logits(z1, z2, temperature)
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


@keras.saving.register_keras_serializable(package="ssl_keras")
class NTXentLoss(keras.losses.Loss):
    """NT-Xent contrastive loss as a `keras.losses.Loss`.

    Called as `loss(z1, z2)`: the two arguments take the places of `y_true` and `y_pred` and
    are the projections of the two views, [N, D] each. Reduced to the mean over the 2N anchors.

    Args:
        temperature: float > 0, softmax temperature. Defaults to 0.1 (SimCLR).
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: string. Defaults to `"nt_xent"`.

    Example:

    >>> loss = NTXentLoss(temperature=0.5)
    >>> value = loss(z1, z2)
    """

    def __init__(
        self, temperature=0.1, reduction="sum_over_batch_size", name="nt_xent", dtype=None
    ):
        _check_temperature(temperature)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        return nt_xent(y_true, y_pred, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
