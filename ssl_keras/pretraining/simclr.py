"""The SimCLR model: augmenter + encoder + projection head, trained with NT-Xent."""

import keras
from keras import ops

from ssl_keras.model_config import (
    compile_from_saved_config,
    deserialize_nested,
    refuse_compile_arguments,
)
from ssl_keras.pretraining.collapse import effective_rank, normalized_std
from ssl_keras.pretraining.ntxent_loss import NTXentLoss, nt_xent_logits
from ssl_keras.runs.distribution import logs_for_reduction, scale_for_replicas
from ssl_keras.optimizers import AdamW
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter


@keras.saving.register_keras_serializable(package="ssl_keras")
class SimCLR(keras.Model):
    """Self-supervised contrastive pretraining of an image encoder (SimCLR).

    `fit` takes a dataset of **unlabeled** image batches (float [N, H, W, 3] in [0, 255], no
    targets). Each step draws two augmented views of every image inside the model (so the
    augmentation runs on the accelerator), encodes both views in one pass, projects them and
    minimises the NT-Xent loss. It logs `loss`, `contrastive_accuracy` (how often an
    anchor's most similar other projection is its positive; chance is 1 / (2N - 1)), and two
    collapse metrics of the projections (`pretraining/collapse.py`): `projection_std`, about
    1/sqrt(D) when healthy and 0 when collapsed, and `projection_rank`, their effective rank.

    Calling the model returns the projections of two augmented views, stacked as [2N, D]
    (view 1 first); augmentation is applied whatever `training` is, because the contrastive
    task is defined on augmented pairs. For features use `model.encoder(images,
    training=False)` or `model.embed(images)`.

    The training logic lives in `compute_loss` and `compute_metrics` (keras.ops only), so the
    model trains unchanged on the TensorFlow, JAX and PyTorch backends.

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709)

    Args:
        encoder: a `keras.Model` mapping images in [0, 255] to pooled features [N, C].
        projection_head: a layer mapping features to projections, `"default"` for
            `ProjectionHead()` (2 layers to 128-d), or None for none (the features are the
            projections). Defaults to `"default"`.
        augmenter: a layer producing one random view per call, `"default"` for
            `SimCLRAugmenter()`, or None for no augmentation (both views are the image itself,
            which makes the task trivial: for tests and ablations). Defaults to `"default"`.
        temperature: float > 0, NT-Xent temperature used by the default loss. Defaults to 0.1.

    Example:

    >>> model = SimCLR(encoder=build_backbone("EfficientNetB1"), temperature=0.1)
    >>> model.compile()  # AdamW, NT-Xent
    >>> model.fit(image_batches, epochs=10)
    >>> features = model.embed(images)
    """

    def __init__(
        self, encoder, *, projection_head="default", augmenter="default", temperature=0.1, **kwargs
    ):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
        for name, value, default in (
            ("projection_head", projection_head, "ProjectionHead()"),
            ("augmenter", augmenter, "SimCLRAugmenter()"),
        ):
            if isinstance(value, str) and value != "default":
                raise ValueError(
                    f'`{name}` must be a layer, "default" (a `{default}`) or None (none). '
                    f"Received: {name}={value!r}"
                )
        self.encoder = encoder
        self.projection_head = (
            ProjectionHead() if isinstance(projection_head, str) else projection_head
        )
        self.augmenter = SimCLRAugmenter() if isinstance(augmenter, str) else augmenter
        self.temperature = float(temperature)
        self.contrastive_loss = NTXentLoss(temperature=self.temperature)
        self.contrastive_accuracy = keras.metrics.Mean(name="contrastive_accuracy")
        # Collapse monitor (pretraining/collapse.py): ~1/sqrt(D) and high when healthy, 0 and 1 when collapsed.
        self.projection_std = keras.metrics.Mean(name="projection_std")
        self.projection_rank = keras.metrics.Mean(name="projection_rank")

    def build(self, input_shape):
        # Sub-layers restored by `load_model` arrive already built.
        if self.augmenter is not None and not self.augmenter.built:
            self.augmenter.build(input_shape)
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if self.projection_head is not None and not self.projection_head.built:
            self.projection_head.build(self.encoder.compute_output_shape(input_shape))
        self.built = True

    def compile(
        self,
        optimizer=None,
        loss=None,
        metrics=None,
        loss_weights=None,
        weighted_metrics=None,
        **kwargs,
    ):
        """Configures training; defaults are AdamW (lr 1e-3, wd 0.05) and `NTXentLoss`.

        Args:
            optimizer: optimizer instance or name; None gives AdamW with weight decay excluded
                from biases and batch-norm parameters.
            loss: a loss called as `loss(z1, z2)` on the two views' projections; None gives
                `NTXentLoss(self.temperature)`. A loss given here is saved with the model
                (register it with `keras.saving.register_keras_serializable` to load it).
            metrics: None. The model always reports `contrastive_accuracy`,
                `projection_std` and `projection_rank`; there are no targets for other
                metrics, so any other value is refused.
            loss_weights: None; there is one loss. Any other value is refused.
            weighted_metrics: None; any other value is refused, as for `metrics`.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`, `steps_per_execution`).
        """
        refuse_compile_arguments(
            "SimCLR reports its own metrics (contrastive_accuracy, projection_std, projection_rank) "
            "and its batches have no targets for others; leave metrics and weighted_metrics out.",
            metrics=metrics,
            weighted_metrics=weighted_metrics,
        )
        refuse_compile_arguments(
            "SimCLR has a single loss (pass another one as `loss=`); leave loss_weights out.",
            loss_weights=loss_weights,
        )
        if optimizer is None:
            optimizer = AdamW(learning_rate=1e-3, weight_decay=0.05)
        self.contrastive_loss = NTXentLoss(temperature=self.temperature) if loss is None else loss
        self._compiled_with_loss = loss is not None
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        # The loss is not given to `keras.Model.compile` (it would wrap it as a `y_true, y_pred`
        # loss), so a custom one is written here, for `compile_from_config` to restore.
        config = super().get_compile_config()
        if config and getattr(self, "_compiled_with_loss", False):
            config["loss"] = keras.saving.serialize_keras_object(self.contrastive_loss)
        return config

    def compile_from_config(self, config):
        # Restores the optimizer (and its state, once loaded) when a `.keras` file is loaded.
        compile_from_saved_config(self, config)

    def call(self, images, training=None):
        # Augmentation is part of the task, so it runs in training and in evaluation alike.
        view_1, view_2 = images, images
        if self.augmenter is not None:
            view_1 = self.augmenter(images, training=True)
            view_2 = self.augmenter(images, training=True)
        features = self.encoder(ops.concatenate([view_1, view_2], axis=0), training=training)
        if self.projection_head is None:
            return features
        return self.projection_head(features, training=training)

    def embed(self, images):
        """Pooled encoder features of un-augmented images, in inference mode."""
        return self.encoder(images, training=False)

    def _split(self, projections):
        n = ops.shape(projections)[0] // 2
        return projections[:n], projections[n:]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z1, z2 = self._split(y_pred)
        loss = self.contrastive_loss(z1, z2)  # a Loss: scaled for the replicas already
        if self.losses:
            extra = ops.sum(ops.stack([ops.cast(l, loss.dtype) for l in self.losses]))
            loss = loss + scale_for_replicas(extra)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        z1, z2 = self._split(y_pred)
        logits, labels = nt_xent_logits(z1, z2, self.temperature)
        hits = ops.cast(
            ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32"
        )
        self.contrastive_accuracy.update_state(hits)
        projections = ops.stop_gradient(y_pred)
        self.projection_std.update_state(normalized_std(projections))
        self.projection_rank.update_state(effective_rank(projections))
        return logs_for_reduction(self.get_metrics_result())

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "projection_head": (
                    None
                    if self.projection_head is None
                    else keras.saving.serialize_keras_object(self.projection_head)
                ),
                "augmenter": None
                if self.augmenter is None
                else keras.saving.serialize_keras_object(self.augmenter),
                "temperature": self.temperature,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # None stays None (no head, no augmentation); every file written before `"default"`
        # existed holds the layers themselves.
        return cls(**deserialize_nested(config, ("encoder", "projection_head", "augmenter")))
