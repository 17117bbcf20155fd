"""Supervised pretraining: the same backbone trained as a softmax classifier on labelled photos.

It stands in for ImageNet weights when those cannot be downloaded: trained on the *same* photos
as SimCLR, with their labels, it is the paper's "supervised vs self-supervised" comparison made
honest offline.
"""

import keras
from keras import ops

from ssl_keras.model_config import (
    compile_from_saved_config,
    deserialize_nested,
    refuse_compile_arguments,
)
from ssl_keras.optimizers import AdamW
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter
from ssl_keras.runs.distribution import logs_for_reduction


def supervised_augmenter(seed=None):
    """The standard supervised ImageNet augmentation: random resized crop and horizontal flip.

    No colour jitter, grayscale or blur: those make SimCLR's pretext task hard, but a classifier
    does not need them (Chen et al., 2020, appendix B.9).
    """
    return SimCLRAugmenter(
        jitter_probability=0.0, grayscale_probability=0.0, blur_probability=0.0, seed=seed
    )


@keras.saving.register_keras_serializable(package="ssl_keras")
class SupervisedPretrainer(keras.Model):
    """An encoder under a linear softmax classifier, trained on labelled images.

    `fit` takes `(images, labels)` batches: float images [N, H, W, 3] in [0, 255] and integer
    class ids [N]. Each training step augments the images inside the model (random resized
    crop and flip by default), and minimises the softmax cross-entropy (with optional label
    smoothing). Calling the model returns class logits; augmentation runs only in training.

    The classifier is thrown away after pretraining; `model.encoder` is what transfers, as with
    `SimCLR`.

    Args:
        encoder: a `keras.Model` mapping images in [0, 255] to pooled features [N, C].
        num_classes: int >= 2, the number of classes.
        augmenter: a layer drawing one random view per call, or None for no augmentation.
            Defaults to `"default"`: `supervised_augmenter()`.
        label_smoothing: float in [0, 1). Defaults to 0.1 (EfficientNet's ImageNet recipe).

    Example:

    >>> model = SupervisedPretrainer(build_backbone("EfficientNetB1"), num_classes=10)
    >>> model.compile()  # AdamW, cross-entropy
    >>> model.fit(labelled_batches, epochs=10)
    >>> features = model.encoder(images, training=False)
    """

    def __init__(self, encoder, *, num_classes, augmenter="default", label_smoothing=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"`num_classes` must be >= 2. Received: num_classes={num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing}"
            )
        if isinstance(augmenter, str) and augmenter != "default":
            raise ValueError(
                '`augmenter` must be a layer, "default" (`supervised_augmenter()`) or None (no '
                f"augmentation). Received: augmenter={augmenter!r}"
            )
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.augmenter = supervised_augmenter() if isinstance(augmenter, str) else augmenter
        self.label_smoothing = float(label_smoothing)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.classification_loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=self.label_smoothing
        )

    def build(self, input_shape):
        if self.augmenter is not None and not self.augmenter.built:
            self.augmenter.build(input_shape)
        if not self.encoder.built:
            self.encoder.build(input_shape)
        if not self.classifier.built:
            self.classifier.build(self.encoder.compute_output_shape(input_shape))
        self.built = True

    def compile(self, optimizer=None, loss=None, metrics=None, loss_weights=None, **kwargs):
        """Configures training; defaults are AdamW (lr 1e-3, wd 0.05) and cross-entropy.

        Args:
            optimizer: optimizer instance or name; None gives AdamW with weight decay excluded
                from biases and batch-norm parameters.
            loss: None (softmax cross-entropy with this model's label smoothing). Any other
                value is refused: the loss is part of the model.
            metrics: None; the model always reports `accuracy`. Any other value is refused.
            loss_weights: None; there is one loss. Any other value is refused.
            **kwargs: passed to `keras.Model.compile`.
        """
        refuse_compile_arguments(
            "SupervisedPretrainer computes its own loss (cross-entropy) and metric (accuracy); "
            "compile it without them.",
            loss=loss,
            metrics=metrics,
        )
        refuse_compile_arguments(
            "SupervisedPretrainer has a single loss (cross-entropy); leave loss_weights out.",
            loss_weights=loss_weights,
        )
        if optimizer is None:
            optimizer = AdamW(learning_rate=1e-3, weight_decay=0.05)
        super().compile(
            optimizer=optimizer,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            **kwargs,
        )

    def compile_from_config(self, config):
        # weighted_metrics are honoured (Keras's own compute_metrics runs them), so they are restored too.
        compile_from_saved_config(
            self,
            config,
            keys=("optimizer", "jit_compile", "steps_per_execution", "weighted_metrics"),
        )

    def call(self, images, training=None):
        if training and self.augmenter is not None:
            images = self.augmenter(images, training=True)
        return self.classifier(self.encoder(images, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), self.num_classes)
        loss = self.classification_loss(
            targets, ops.cast(y_pred, "float32"), sample_weight=sample_weight
        )
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(l, loss.dtype) for l in self.losses]))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Shaped so that a multi-worker step can combine them (runs/distribution.py).
        return logs_for_reduction(super().compute_metrics(x, y, y_pred, sample_weight))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes,
                "augmenter": keras.saving.serialize_keras_object(self.augmenter),
                "label_smoothing": self.label_smoothing,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # A config without an augmenter entry means none (not the default).
        config = {"augmenter": None, **config}
        return cls(**deserialize_nested(config, ("encoder", "augmenter")))
