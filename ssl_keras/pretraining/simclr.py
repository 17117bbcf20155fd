"""The SimCLR model: augmenter + encoder + projection head, trained with NT-Xent."""

import keras
from keras import ops

from ssl_keras.pretraining.collapse import effective_rank, normalized_std
from ssl_keras.pretraining.ntxent_loss import NTXentLoss, nt_xent_logits
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
        projection_head: a layer mapping features to projections; defaults to
            `ProjectionHead()` (2 layers to 128-d).
        augmenter: a layer producing one random view per call; defaults to
            `SimCLRAugmenter()`.
        temperature: float > 0, NT-Xent temperature used by the default loss. Defaults to 0.1.

    Example:

    >>> model = SimCLR(encoder=build_backbone("EfficientNetB1"), temperature=0.1)
    >>> model.compile()  # AdamW, NT-Xent
    >>> model.fit(image_batches, epochs=10)
    >>> features = model.embed(images)
    """

    def __init__(self, encoder, *, projection_head=None, augmenter=None, temperature=0.1, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
        self.encoder = encoder
        self.projection_head = projection_head if projection_head is not None else ProjectionHead()
        self.augmenter = augmenter if augmenter is not None else SimCLRAugmenter()
        self.temperature = float(temperature)
        self.contrastive_loss = NTXentLoss(temperature=self.temperature)
        self.contrastive_accuracy = keras.metrics.Mean(name="contrastive_accuracy")
        # Collapse monitor (pretraining/collapse.py): ~1/sqrt(D) and high when healthy, 0 and 1 when collapsed.
        self.projection_std = keras.metrics.Mean(name="projection_std")
        self.projection_rank = keras.metrics.Mean(name="projection_rank")

    def build(self, input_shape):
        # Sub-layers restored by `load_model` arrive already built.
        if not self.augmenter.built:
            self.augmenter.build(input_shape)
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.projection_head.built:
            self.projection_head.build(self.encoder.compute_output_shape(input_shape))
        self.built = True

    def compile(self, optimizer=None, loss=None, **kwargs):
        """Configures training; defaults are AdamW (lr 1e-3, wd 0.05) and `NTXentLoss`.

        Args:
            optimizer: optimizer instance or name; None gives AdamW with weight decay excluded
                from biases and batch-norm parameters.
            loss: a loss called as `loss(z1, z2)`; None gives `NTXentLoss(self.temperature)`.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`, `steps_per_execution`).
        """
        if optimizer is None:
            optimizer = AdamW(learning_rate=1e-3, weight_decay=0.05)
        if loss is not None:
            self.contrastive_loss = loss
        kwargs.pop("metrics", None)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Restores the optimizer (and its state, once loaded) when a `.keras` file is loaded.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, images, training=None):
        # Augmentation is part of the task, so it runs in training and in evaluation alike.
        view_1 = self.augmenter(images, training=True)
        view_2 = self.augmenter(images, training=True)
        features = self.encoder(ops.concatenate([view_1, view_2], axis=0), training=training)
        return self.projection_head(features, training=training)

    def embed(self, images):
        """Pooled encoder features of un-augmented images, in inference mode."""
        return self.encoder(images, training=False)

    def _split(self, projections):
        n = ops.shape(projections)[0] // 2
        return projections[:n], projections[n:]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z1, z2 = self._split(y_pred)
        loss = self.contrastive_loss(z1, z2)
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(l, loss.dtype) for l in self.losses]))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        z1, z2 = self._split(y_pred)
        logits, labels = nt_xent_logits(z1, z2, self.temperature)
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32")
        self.contrastive_accuracy.update_state(hits)
        projections = ops.stop_gradient(y_pred)
        self.projection_std.update_state(normalized_std(projections))
        self.projection_rank.update_state(effective_rank(projections))
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "projection_head": keras.saving.serialize_keras_object(self.projection_head),
            "augmenter": keras.saving.serialize_keras_object(self.augmenter),
            "temperature": self.temperature,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "projection_head", "augmenter"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
