"""Collapse metrics of embeddings: the spread of L2-normalised vectors and their effective rank.

A self-supervised encoder *collapses* when it maps different images to (nearly) the same
vector, or to a few directions only. Two numbers tell, for a batch of embeddings [N, D]:

- `normalized_std`: the standard deviation across the batch of the L2-normalised embeddings,
  averaged over dimensions (lightly's `std_of_l2_normalized`). About 1/sqrt(D) when the
  vectors are spread over the sphere, 0 when they are all the same.
- `effective_rank`: exp of the entropy of the normalised singular values of the (uncentered)
  L2-normalised embeddings (Roy & Vetterli, 2007; RankMe, Garrido et al., 2023). 1 when all
  vectors lie on one line, up to min(N, D) when they use every direction. It catches the
  dimensional collapse that `normalized_std` misses, e.g. vectors spread along one axis only.
"""

import keras
from keras import ops


def _l2_normalize(embeddings):
    embeddings = ops.cast(embeddings, "float32")
    return embeddings / ops.maximum(ops.norm(embeddings, axis=-1, keepdims=True), 1e-12)


def normalized_std(embeddings):
    """Mean over dimensions of the batch standard deviation of L2-normalised embeddings.

    Args:
        embeddings: tensor [N, D].

    Returns:
        A float32 scalar: about 1/sqrt(D) when healthy, 0 when collapsed to one vector.

    Example:

    >>> float(normalized_std(ops.ones((8, 4))))
    0.0
    """
    return ops.mean(ops.std(_l2_normalize(embeddings), axis=0))


def effective_rank(embeddings):
    """exp(entropy) of the normalised singular values of the L2-normalised embeddings.

    Args:
        embeddings: tensor [N, D].

    Returns:
        A float32 scalar in [1, min(N, D)].

    Example:

    >>> float(effective_rank(ops.eye(4)))  # 4 orthogonal vectors
    4.0
    """
    singular = ops.svd(_l2_normalize(embeddings), compute_uv=False)
    p = singular / ops.maximum(ops.sum(singular), 1e-12)
    entropy = -ops.sum(ops.where(p > 0, p * ops.log(ops.maximum(p, 1e-30)), 0.0))
    return ops.exp(entropy)


COLLAPSE_STD_FRACTION = 0.2
"""A run is reported as collapsing once `normalized_std` falls below this fraction of 1/sqrt(D)."""

COLLAPSE_RANK = 2.0
"""... or once `effective_rank` falls below this (all embeddings on one or two directions)."""


def collapse_reason(name, std, rank, dim):
    """A one-line explanation when (std, rank) of a D-dim embedding indicate collapse, else None."""
    healthy_std = dim**-0.5
    if std < COLLAPSE_STD_FRACTION * healthy_std:
        return (
            f"{name}_std is {std:.4f}, below {COLLAPSE_STD_FRACTION:g} x 1/sqrt({dim}) = "
            f"{COLLAPSE_STD_FRACTION * healthy_std:.4f}: the embeddings are collapsing to one vector"
        )
    if rank < COLLAPSE_RANK:
        return (
            f"{name}_rank is {rank:.2f}, below {COLLAPSE_RANK:g}: the embeddings are collapsing "
            "onto one or two directions"
        )
    return None


class CollapseMonitor(keras.callbacks.Callback):
    """Adds collapse metrics of the encoder features to each epoch's logs and warns once.

    The projections' metrics (`projection_std`, `projection_rank`) come from the training step
    itself (see `SimCLR`); this callback adds `feature_std` and `feature_rank`, computed on a
    fixed batch of un-augmented images passed through the encoder in inference mode, i.e. the
    features that transfer uses. Place it before TensorBoard so they reach its logs.

    Args:
        images: array [N, H, W, 3] in [0, 255], a fixed batch (N >= 2).
        log: function receiving the one-time warning. Defaults to `print`.
    """

    def __init__(self, images, *, log=print):
        super().__init__()
        self.images = images
        self.log = log
        self.warned = False

    def feature_metrics(self):
        features = self.model.encoder(self.images, training=False)
        return {
            "feature_std": float(normalized_std(features)),
            "feature_rank": float(effective_rank(features)),
            "feature_dim": int(features.shape[-1]),
        }

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        metrics = self.feature_metrics()
        dim = metrics.pop("feature_dim")
        logs.update(metrics)
        if self.warned:
            return
        # Inference-mode features need the batch-norm moving statistics to have settled, which
        # takes more than one epoch of a short run: they are judged from the second epoch on.
        checks = (
            [("feature", metrics["feature_std"], metrics["feature_rank"], dim)]
            if epoch >= 1
            else []
        )
        if "projection_std" in logs:
            checks.insert(
                0,
                (
                    "projection",
                    float(logs["projection_std"]),
                    float(logs["projection_rank"]),
                    int(self.model.projection_head.output_dim),
                ),
            )
        for name, std, rank, d in checks:
            reason = collapse_reason(name, std, rank, d)
            if reason:
                hint = (
                    (
                        " (encoder features in inference mode; if the projections are healthy, the batch-norm "
                        "moving statistics lag: see --bn-momentum)"
                    )
                    if name == "feature"
                    else ""
                )
                self.log(f"warning: collapse at epoch {epoch + 1}: {reason}{hint}")
                self.warned = True
                return
