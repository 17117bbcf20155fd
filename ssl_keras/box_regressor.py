"""`BoxRegressor`: a backbone under a box-regression and classification head."""

import keras
from keras import ops

from ssl_keras.box_augmenter import BoxAugmenter
from ssl_keras.box_losses import box_loss
from ssl_keras.box_metrics import BoxMeanIoU, ClassAndBoxAccuracy, LocalizationAccuracy, TopKClassAccuracy


@keras.saving.register_keras_serializable(package="ssl_keras")
class BoxRegressor(keras.Model):
    """Single-object localization: one box and one class per image.

    The head pools the backbone's features and predicts the box as sigmoid centre and size
    (cy, cx, h, w), converted to normalised `(ymin, xmin, ymax, xmax)` ("rel_yxyx") clipped to
    the image, so every prediction is a valid box; and class logits.

    Inputs are float images [N, H, W, 3] in [0, 255]. For training, pass
    `x = {"images": images, "boxes": boxes}` and `y = {"boxes": boxes, "labels": labels}`: the
    box-aware augmenter then flips/jitters images and their boxes together inside the training
    step (on the accelerator), and the transformed boxes travel with the predictions
    (`y_pred["target_boxes"]`) to the loss. Called on a plain image tensor, the model never
    augments. The loss is `box_weight * (GIoU + L1) + class_weight * cross-entropy`.

    Args:
        backbone: a `keras.Model` mapping images in [0, 255] to pooled features [N, C].
        num_classes: int, number of classes.
        augmenter: a `BoxAugmenter` (or None for none). Defaults to `BoxAugmenter()`.
        hidden_units: int, width of the shared hidden layer of the head (0 for none).
            Defaults to 256.
        dropout: float, dropout before the outputs. Defaults to 0.2.
        box_weight: float, weight of the box loss. Defaults to 1.0.
        giou_weight: float, weight of the GIoU term inside the box loss. Defaults to 1.0.
        l1_weight: float, weight of the L1 term inside the box loss. Defaults to 1.0.
        class_weight: float, weight of the classification loss. Defaults to 1.0.

    Example:

    >>> model = BoxRegressor(build_backbone("EfficientNetB1"), num_classes=20)
    >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    >>> model.fit(train_ds, validation_data=val_ds, epochs=10)
    >>> out = model.predict(images)  # {"boxes": [N, 4], "class_logits": [N, 20]}
    """

    def __init__(self, backbone, *, num_classes, augmenter="default", hidden_units=256, dropout=0.2,
                 box_weight=1.0, giou_weight=1.0, l1_weight=1.0, class_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1. Received: num_classes={num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        for name, value in (("box_weight", box_weight), ("class_weight", class_weight),
                            ("giou_weight", giou_weight), ("l1_weight", l1_weight)):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
        # Layers.
        self.backbone = backbone
        self.augmenter = BoxAugmenter() if augmenter == "default" else augmenter
        self.hidden = keras.layers.Dense(hidden_units, activation="relu", name="head_hidden") if hidden_units else None
        self.dropout_layer = keras.layers.Dropout(dropout, name="head_dropout")
        self.box_output = keras.layers.Dense(4, name="box_output")
        self.class_output = keras.layers.Dense(num_classes, name="class_output")
        # Config.
        self.num_classes = int(num_classes)
        self.hidden_units = int(hidden_units)
        self.dropout = float(dropout)
        self.box_weight = float(box_weight)
        self.giou_weight = float(giou_weight)
        self.l1_weight = float(l1_weight)
        self.class_weight = float(class_weight)
        self.box_metrics = [BoxMeanIoU(), LocalizationAccuracy(threshold=0.5), LocalizationAccuracy(threshold=0.7),
                            TopKClassAccuracy(k=1), TopKClassAccuracy(k=3), ClassAndBoxAccuracy(threshold=0.5)]

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["images"]
        if not self.backbone.built:
            self.backbone.build(input_shape)
        shape = self.backbone.compute_output_shape(input_shape)
        if self.hidden is not None and not self.hidden.built:
            self.hidden.build(shape)
        if self.hidden is not None:
            shape = self.hidden.compute_output_shape(shape)
        for layer in (self.box_output, self.class_output):
            if not layer.built:
                layer.build(shape)
        self.built = True

    def compile(self, optimizer="adamw", **kwargs):
        """Compiles; a `BackboneAdamW` optimizer is told which variables are the backbone's."""
        kwargs.pop("loss", None)
        kwargs.pop("metrics", None)
        super().compile(optimizer=optimizer, **kwargs)
        if hasattr(self.optimizer, "set_backbone_variables"):
            self.optimizer.set_backbone_variables(self.backbone.trainable_variables)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @staticmethod
    def boxes_from_center_size(raw):
        """Maps 4 unconstrained outputs to a valid rel_yxyx box inside [0, 1]."""
        center_size = ops.sigmoid(raw)
        cy, cx, h, w = [center_size[:, i] for i in range(4)]
        boxes = ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
        return ops.clip(boxes, 0.0, 1.0)

    def call(self, inputs, training=None):
        target_boxes = None
        if isinstance(inputs, dict):
            images, target_boxes = inputs["images"], inputs.get("boxes")
            if self.augmenter is not None and target_boxes is not None:
                images, target_boxes = self.augmenter(images, target_boxes, training=training)
        else:
            images = inputs
        features = self.backbone(images, training=training)
        if self.hidden is not None:
            features = self.hidden(features)
        features = self.dropout_layer(features, training=training)
        outputs = {
            "boxes": self.boxes_from_center_size(ops.cast(self.box_output(features), "float32")),
            "class_logits": ops.cast(self.class_output(features), "float32"),
        }
        if target_boxes is not None:
            outputs["target_boxes"] = ops.cast(target_boxes, "float32")
        return outputs

    def _targets(self, y, y_pred):
        boxes = y_pred["target_boxes"] if "target_boxes" in y_pred else y["boxes"]
        return {"boxes": ops.cast(boxes, "float32"), "labels": ops.cast(y["labels"], "int32")}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets = self._targets(y, y_pred)
        box = ops.mean(box_loss(targets["boxes"], y_pred["boxes"], giou_weight=self.giou_weight,
                                l1_weight=self.l1_weight))
        cls = ops.mean(keras.losses.sparse_categorical_crossentropy(targets["labels"], y_pred["class_logits"],
                                                                    from_logits=True))
        loss = self.box_weight * box + self.class_weight * cls
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(l, "float32") for l in self.losses]))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        targets = self._targets(y, y_pred)
        predictions = {"boxes": y_pred["boxes"], "class_logits": y_pred["class_logits"]}
        for metric in self.box_metrics:
            metric.update_state(targets, predictions)
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "augmenter": keras.saving.serialize_keras_object(self.augmenter) if self.augmenter is not None else None,
            "num_classes": self.num_classes,
            "hidden_units": self.hidden_units,
            "dropout": self.dropout,
            "box_weight": self.box_weight,
            "giou_weight": self.giou_weight,
            "l1_weight": self.l1_weight,
            "class_weight": self.class_weight,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        if config.get("augmenter") is not None:
            config["augmenter"] = keras.saving.deserialize_keras_object(config["augmenter"])
        return cls(**config)
