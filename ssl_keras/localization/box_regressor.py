"""`BoxRegressor`: a backbone under a box-regression and classification head."""

import keras
import numpy as np
from keras import ops

from ssl_keras.runs.distribution import logs_for_reduction, replica_mean, scale_for_replicas
from ssl_keras.backbone import feature_map_backbone, is_feature_map_backbone
from ssl_keras.localization.box_augmenter import BoxAugmenter
from ssl_keras.localization.box_heads import HEADS, make_head
from ssl_keras.localization.box_losses import box_loss
from ssl_keras.localization.box_metrics import (
    BoxMeanIoU,
    ClassAndBoxAccuracy,
    LocalizationAccuracy,
    TopKClassAccuracy,
)
from ssl_keras.model_config import (
    compile_from_saved_config,
    deserialize_nested,
    refuse_compile_arguments,
)


@keras.saving.register_keras_serializable(package="ssl_keras")
class BoxRegressor(keras.Model):
    """Single-object localization: one box and one class per image.

    A head (`box_heads.py`) maps the backbone's features to the box, normalised
    `(ymin, xmin, ymax, xmax)` ("rel_yxyx") inside the image, and class logits: `"pooled"`
    regresses the box from globally pooled features, `"spatial"` takes a soft argmax over
    the feature map's cells, so it can use where features fire.

    Inputs are float images [N, H, W, 3] in [0, 255]. For training, pass
    `x = {"images": images, "boxes": boxes}` and `y = {"boxes": boxes, "labels": labels}`: the
    box-aware augmenter then flips/jitters images and their boxes together inside the training
    step (on the accelerator), and the transformed boxes travel with the predictions
    (`y_pred["target_boxes"]`) to the loss. Called on a plain image tensor, the model never
    augments. With a frozen backbone, `x = {"features": backbone_outputs}` trains the head on
    precomputed (cached) features, skipping the backbone and the augmenter.
    The loss is `box_weight * (GIoU + L1) + class_weight * cross-entropy`, the cross-entropy
    weighted per class by `class_weights` when given.

    Args:
        backbone: a functional `keras.Model` mapping images in [0, 255] to pooled features
            [N, C] or a feature map [N, h, w, C]. The spatial head removes a final global
            pooling (`feature_map_backbone`).
        num_classes: int, number of classes.
        head: str, `"pooled"` or `"spatial"`. Defaults to `"pooled"`.
        augmenter: a `BoxAugmenter`, `"default"` for `BoxAugmenter()`, or None for no
            augmentation. Defaults to `"default"`.
        hidden_units: int, width of the head's hidden layer (0 for none). Defaults to 256.
        dropout: float, dropout in the head. Defaults to 0.2.
        spatial_channels: int, width of the spatial head's 1x1 reduction. Defaults to 128.
        box_weight: float, weight of the box loss. Defaults to 1.0.
        giou_weight: float, weight of the GIoU term inside the box loss. Defaults to 1.0.
        l1_weight: float, weight of the L1 term inside the box loss. Defaults to 1.0.
        class_weight: float, weight of the classification loss. Defaults to 1.0.
        class_weights: None or a list of `num_classes` floats, the cross-entropy weight of each
            class (see `balanced_class_weights`). Defaults to None (all 1).

    Attributes:
        backbone: the backbone (with its final pooling removed for the spatial head).
        head: the head layer; `model.head(features, training=False)` maps the backbone's
            output to `(boxes, class_logits)`, the `"boxes"` and `"class_logits"` that
            `call` returns. `return_size_score=True` adds the box-size score that Grad-CAM
            explains (`box_heads.py`).

    Example:

    >>> model = BoxRegressor(build_backbone("EfficientNetB1"), num_classes=20, head="spatial")
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    >>> model.fit(train_ds, validation_data=val_ds, epochs=10)
    >>> out = model.predict(images)  # {"boxes": [N, 4], "class_logits": [N, 20]}
    """

    def __init__(
        self,
        backbone,
        *,
        num_classes,
        head="pooled",
        augmenter="default",
        hidden_units=256,
        dropout=0.2,
        spatial_channels=128,
        box_weight=1.0,
        giou_weight=1.0,
        l1_weight=1.0,
        class_weight=1.0,
        class_weights=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {', '.join(HEADS)}. Received: head={head!r}")
        if isinstance(augmenter, str) and augmenter != "default":
            raise ValueError(
                '`augmenter` must be a layer, "default" (a `BoxAugmenter()`) or None (no augmentation). '
                f"Received: augmenter={augmenter!r}"
            )
        for name, value in (
            ("box_weight", box_weight),
            ("class_weight", class_weight),
            ("giou_weight", giou_weight),
            ("l1_weight", l1_weight),
        ):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if len(class_weights) != int(num_classes) or min(class_weights) < 0:
                raise ValueError(
                    f"`class_weights` must be {int(num_classes)} numbers >= 0 (one per class). "
                    f"Received: class_weights={class_weights}"
                )
        # Layers.
        if head == "spatial" and not is_feature_map_backbone(backbone):
            backbone = feature_map_backbone(backbone)
        self.backbone = backbone
        self.augmenter = BoxAugmenter() if isinstance(augmenter, str) else augmenter
        self.head = make_head(
            head,
            num_classes=num_classes,
            hidden_units=hidden_units,
            dropout=dropout,
            channels=spatial_channels,
        )
        # Config.
        self.head_type = head
        self.num_classes = int(num_classes)
        self.hidden_units = int(hidden_units)
        self.dropout = float(dropout)
        self.spatial_channels = int(spatial_channels)
        self.box_weight = float(box_weight)
        self.giou_weight = float(giou_weight)
        self.l1_weight = float(l1_weight)
        self.class_weight = float(class_weight)
        self.class_weights = class_weights
        self.box_metrics = [
            BoxMeanIoU(),
            LocalizationAccuracy(threshold=0.5),
            LocalizationAccuracy(threshold=0.7),
            TopKClassAccuracy(k=1),
            TopKClassAccuracy(k=3),
            ClassAndBoxAccuracy(threshold=0.5),
        ]

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            if "features" in input_shape:
                if not self.head.built:
                    self.head.build(input_shape["features"])
                self.built = True
                return
            input_shape = input_shape["images"]
        if not self.backbone.built:
            self.backbone.build(input_shape)
        if not self.head.built:
            self.head.build(self.backbone.compute_output_shape(input_shape))
        self.built = True

    def compile(
        self,
        optimizer="adamw",
        loss=None,
        metrics=None,
        loss_weights=None,
        weighted_metrics=None,
        **kwargs,
    ):
        """Compiles; a `BackboneAdamW` optimizer is told which variables are the backbone's.

        Args:
            optimizer: optimizer instance or name. Defaults to `"adamw"`.
            loss: None. The loss (GIoU + L1 + cross-entropy, weighted by the constructor's
                arguments) is part of the model; any other value is refused.
            metrics: None. The model always reports its box metrics (mean IoU, LocAcc@0.5/0.7,
                top-1/3, cls+loc); any other value is refused.
            loss_weights: None; the constructor's `box_weight`, `class_weight`, `giou_weight`,
                `l1_weight` and `class_weights` weigh the loss. Any other value is refused.
            weighted_metrics: None; any other value is refused, as for `metrics`.
            **kwargs: passed to `keras.Model.compile`.
        """
        refuse_compile_arguments(
            "BoxRegressor computes its own loss (box_weight * (GIoU + L1) + class_weight * "
            "cross-entropy) and box metrics; set the weights in the constructor and leave "
            "loss and metrics out.",
            loss=loss,
            metrics=metrics,
        )
        refuse_compile_arguments(
            "BoxRegressor weighs its loss with its constructor's box_weight, class_weight, "
            "giou_weight, l1_weight and class_weights, and reports its own box metrics; leave "
            "loss_weights and weighted_metrics out.",
            loss_weights=loss_weights,
            weighted_metrics=weighted_metrics,
        )
        super().compile(optimizer=optimizer, **kwargs)
        if hasattr(self.optimizer, "set_backbone_variables"):
            self.optimizer.set_backbone_variables(self.backbone.trainable_variables)

    def compile_from_config(self, config):
        compile_from_saved_config(
            self, config, keys=("optimizer", "jit_compile", "steps_per_execution")
        )

    def call(self, inputs, training=None):
        target_boxes = None
        if isinstance(inputs, dict):
            target_boxes = inputs.get("boxes")
            if "features" in inputs:
                features = inputs["features"]
            else:
                images = inputs["images"]
                if self.augmenter is not None and target_boxes is not None:
                    images, target_boxes = self.augmenter(images, target_boxes, training=training)
                features = self.backbone(images, training=training)
        else:
            features = self.backbone(inputs, training=training)
        boxes, logits = self.head(features, training=training)
        outputs = {"boxes": ops.cast(boxes, "float32"), "class_logits": ops.cast(logits, "float32")}
        if target_boxes is not None:
            outputs["target_boxes"] = ops.cast(target_boxes, "float32")
        return outputs

    def _targets(self, y, y_pred):
        boxes = y_pred["target_boxes"] if "target_boxes" in y_pred else y["boxes"]
        return {"boxes": ops.cast(boxes, "float32"), "labels": ops.cast(y["labels"], "int32")}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets = self._targets(y, y_pred)
        # Means over the global batch: under a strategy, this replica's share (distribution.py).
        box = replica_mean(
            box_loss(
                targets["boxes"],
                y_pred["boxes"],
                giou_weight=self.giou_weight,
                l1_weight=self.l1_weight,
            )
        )
        cross_entropy = keras.losses.sparse_categorical_crossentropy(
            targets["labels"], y_pred["class_logits"], from_logits=True
        )
        if self.class_weights is not None:
            cross_entropy = cross_entropy * ops.take(
                ops.convert_to_tensor(self.class_weights, "float32"), targets["labels"]
            )
        cls = replica_mean(cross_entropy)
        loss = self.box_weight * box + self.class_weight * cls
        if self.losses:
            extra = ops.sum(ops.stack([ops.cast(l, "float32") for l in self.losses]))
            loss = loss + scale_for_replicas(extra)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        targets = self._targets(y, y_pred)
        predictions = {"boxes": y_pred["boxes"], "class_logits": y_pred["class_logits"]}
        for metric in self.box_metrics:
            metric.update_state(targets, predictions)
        return logs_for_reduction(self.get_metrics_result())

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "augmenter": keras.saving.serialize_keras_object(self.augmenter)
                if self.augmenter is not None
                else None,
                "num_classes": self.num_classes,
                "head": self.head_type,
                "hidden_units": self.hidden_units,
                "dropout": self.dropout,
                "spatial_channels": self.spatial_channels,
                "box_weight": self.box_weight,
                "giou_weight": self.giou_weight,
                "l1_weight": self.l1_weight,
                "class_weight": self.class_weight,
                "class_weights": self.class_weights,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_nested(config, ("backbone", "augmenter")))


def balanced_class_weights(labels, num_classes):
    """Per-class cross-entropy weights `N / (K * n_c)` over the K classes present ("balanced").

    Every class present then carries the same total weight, and the mean weight over the
    training images is 1, so the loss keeps its scale. Absent classes get weight 0.

    Args:
        labels: int array-like `[N]`, training class indices.
        num_classes: int, C.

    Returns:
        list of C floats.
    """
    labels = np.asarray(labels, dtype="int64").reshape(-1)
    counts = np.bincount(labels, minlength=int(num_classes))[: int(num_classes)].astype("float64")
    present = counts > 0
    weights = np.zeros(int(num_classes))
    weights[present] = len(labels) / (present.sum() * counts[present])
    return [float(w) for w in weights]
