"""Box and class heads of `BoxRegressor`: one on pooled features, one on the feature map.

Both map backbone features to `(boxes, class_logits)`: boxes `[N, 4]` normalized
`(ymin, xmin, ymax, xmax)` inside the image, logits `[N, C]`. Called with
`return_size_score=True` they add a third output, `size_score` `[N]`: a score that grows with
the predicted box and does not saturate, which Grad-CAM's `"box"` target explains. Each head
defines it from its own parametrisation, so no caller has to reach into the head's layers.

- `PooledBoxHead` averages the feature map away (or takes a backbone's pooled vector) and
  regresses the box from it, so it cannot say *where* a feature fired.
- `SpatialBoxHead` keeps the map. Every cell proposes a box (its distances to the four sides,
  measured from the cell centre) and a score; the output box is the softmax-weighted mean of
  the cells' boxes (a soft argmax, as in heatmap keypoint regression). It is built from 1x1
  convolutions, so it has the same few parameters at every image size.
"""

import keras
from keras import ops

from ssl_keras.runs.config import HEADS


def boxes_from_center_size(raw):
    """Maps 4 unconstrained outputs `(cy, cx, h, w)` through a sigmoid to a box in [0, 1]."""
    center_size = ops.sigmoid(raw)
    cy, cx, h, w = [center_size[:, i] for i in range(4)]
    boxes = ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
    return ops.clip(boxes, 0.0, 1.0)


class _ClassBranchHead(keras.layers.Layer):
    """What both heads share: the checked arguments, the pooled layers and the config."""

    config_fields = ("num_classes", "hidden_units", "dropout")

    def __init__(self, *, num_classes, hidden_units, dropout, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"`num_classes` must be >= 1. Received: num_classes={num_classes}")
        if int(hidden_units) < 0:
            raise ValueError(f"`hidden_units` must be >= 0. Received: hidden_units={hidden_units}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout}")
        self.num_classes = int(num_classes)
        self.hidden_units = int(hidden_units)
        self.dropout = float(dropout)

    def make_pooled_layers(self, *, box_output=False):
        """Creates pool, hidden, dropout, (the box output,) class output, in that order.

        The order is the seeds' order: each layer draws its initializer's seed when created,
        so a different order would change what a seeded run trains.
        """
        self.pool = keras.layers.GlobalAveragePooling2D(name="head_pool")
        self.hidden = (
            keras.layers.Dense(self.hidden_units, activation="relu", name="head_hidden")
            if self.hidden_units
            else None
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, name="head_dropout")
        if box_output:
            self.box_output = keras.layers.Dense(4, name="box_output")
        self.class_output = keras.layers.Dense(self.num_classes, name="class_output")

    def build_hidden(self, pooled_shape):
        """Builds the hidden layer on `[N, C]` features; returns the shape it gives."""
        if self.hidden is None:
            return pooled_shape
        self.hidden.build(pooled_shape)
        return self.hidden.compute_output_shape(pooled_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4), (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self.config_fields})
        return config


@keras.saving.register_keras_serializable(package="ssl_keras")
class PooledBoxHead(_ClassBranchHead):
    """Box and class from globally average-pooled features.

    The shared hidden layer feeds a box output, read as sigmoid centre and size
    `(cy, cx, h, w)`, and the class logits.

    Args:
        num_classes: int, number of classes.
        hidden_units: int, width of the shared hidden layer (0 for none). Defaults to 256.
        dropout: float, dropout before the outputs. Defaults to 0.2.

    Call arguments:
        features: `[N, C]` pooled features or an `[N, h, w, C]` map (pooled here).
        training: bool, whether dropout is on.
        return_size_score: bool, whether to add `size_score` `[N]`, the raw (pre-sigmoid)
            height + width outputs. Defaults to False.

    Example:

    >>> head = PooledBoxHead(num_classes=20)
    >>> boxes, logits = head(features)  # features [N, C] or [N, h, w, C]
    """

    def __init__(self, *, num_classes, hidden_units=256, dropout=0.2, **kwargs):
        super().__init__(
            num_classes=num_classes, hidden_units=hidden_units, dropout=dropout, **kwargs
        )
        self.make_pooled_layers(box_output=True)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 4:
            shape = (shape[0], shape[-1])
        shape = self.build_hidden(shape)
        self.box_output.build(shape)
        self.class_output.build(shape)
        self.built = True

    def raw_outputs(self, features, training=None):
        """`(box_raw [N, 4], class_logits [N, C])`, the box before its sigmoid."""
        if len(features.shape) == 4:
            features = self.pool(features)
        if self.hidden is not None:
            features = self.hidden(features)
        features = self.dropout_layer(features, training=training)
        return (
            ops.cast(self.box_output(features), "float32"),
            ops.cast(self.class_output(features), "float32"),
        )

    def call(self, features, training=None, return_size_score=False):
        box_raw, logits = self.raw_outputs(features, training=training)
        boxes = boxes_from_center_size(box_raw)
        if return_size_score:
            # The raw height + width: the box's own size saturates in the sigmoid and the clip.
            return boxes, logits, box_raw[:, 2] + box_raw[:, 3]
        return boxes, logits


@keras.saving.register_keras_serializable(package="ssl_keras")
class SpatialBoxHead(_ClassBranchHead):
    """Box by a soft argmax over the feature map's cells; class from the pooled map.

    For each cell `(i, j)` of an `h x w` map, with centre `(c_y, c_x) = ((i + 0.5) / h,
    (j + 0.5) / w)`, a 1x1 convolution reduces the features to `channels` (ReLU); from them a
    score `s_ij` and four reaches `r = sigmoid(raw)` in (0, 1) give the cell's box
    `(c_y (1 - r_t), c_x (1 - r_l), c_y + (1 - c_y) r_b, c_x + (1 - c_x) r_r)`: each side
    goes a fraction of the way from the centre to the image border. The output box is
    `sum_ij softmax(s)_ij * box_ij`. A cell can propose any box that contains its centre, so
    the weights say *where* the object is and the reaches how far it extends; every box lies
    inside the image by construction, so no clipping zeroes the gradient (a clipped head can
    get stuck on the whole image).

    Args:
        num_classes: int, number of classes.
        channels: int, width of the 1x1 reduction. Defaults to 128.
        hidden_units: int, width of the class branch's hidden layer (0 for none). Defaults
            to 256.
        dropout: float, dropout on the feature map and before the class output. Defaults to 0.2.

    Call arguments:
        feature_map: `[N, h, w, C]`.
        training: bool, whether dropout is on.
        return_size_score: bool, whether to add `size_score` `[N]`, the predicted height +
            width. Defaults to False.

    Example:

    >>> head = SpatialBoxHead(num_classes=20)
    >>> boxes, logits = head(feature_map)  # feature_map [N, h, w, C]
    """

    def __init__(self, *, num_classes, channels=128, hidden_units=256, dropout=0.2, **kwargs):
        if int(channels) < 1:
            raise ValueError(f"`channels` must be >= 1. Received: channels={channels}")
        super().__init__(
            num_classes=num_classes, hidden_units=hidden_units, dropout=dropout, **kwargs
        )
        self.channels = int(channels)
        self.map_dropout = keras.layers.Dropout(dropout, name="head_map_dropout")
        self.reduce = keras.layers.Conv2D(channels, 1, activation="relu", name="head_reduce")
        self.cell_scores = keras.layers.Conv2D(1, 1, name="box_cell_scores")
        self.cell_sides = keras.layers.Conv2D(4, 1, name="box_cell_sides")
        self.make_pooled_layers()

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(
                "SpatialBoxHead needs a feature map [N, h, w, C]; the backbone gives pooled features. "
                f"Use `feature_map_backbone(backbone)` or head='pooled'. Received: input_shape={shape}"
            )
        self.reduce.build(shape)
        reduced = self.reduce.compute_output_shape(shape)
        self.cell_scores.build(reduced)
        self.cell_sides.build(reduced)
        self.class_output.build(self.build_hidden((shape[0], shape[-1])))
        self.built = True

    def cell_outputs(self, feature_map, training=None):
        """Per-cell `(weights [N, h*w], boxes [N, h*w, 4])` of the soft argmax."""
        x = self.reduce(self.map_dropout(feature_map, training=training))
        shape = ops.shape(x)
        n, h, w = shape[0], shape[1], shape[2]
        scores = ops.reshape(ops.cast(self.cell_scores(x), "float32"), (n, h * w))
        reach = ops.reshape(ops.sigmoid(ops.cast(self.cell_sides(x), "float32")), (n, h * w, 4))
        ys = (ops.arange(h, dtype="float32") + 0.5) / ops.cast(h, "float32")
        xs = (ops.arange(w, dtype="float32") + 0.5) / ops.cast(w, "float32")
        cy = ops.reshape(ops.repeat(ops.expand_dims(ys, 1), w, axis=1), (1, h * w))
        cx = ops.reshape(ops.repeat(ops.expand_dims(xs, 0), h, axis=0), (1, h * w))
        # Each side reaches a fraction of the way from the centre to the image border, so every
        # cell's box lies inside the image and no clipping cuts its gradient.
        boxes = ops.stack(
            [
                cy * (1.0 - reach[..., 0]),
                cx * (1.0 - reach[..., 1]),
                cy + (1.0 - cy) * reach[..., 2],
                cx + (1.0 - cx) * reach[..., 3],
            ],
            axis=-1,
        )
        return ops.softmax(scores, axis=-1), boxes

    def class_logits(self, feature_map, training=None):
        x = self.pool(feature_map)
        if self.hidden is not None:
            x = self.hidden(x)
        return ops.cast(self.class_output(self.dropout_layer(x, training=training)), "float32")

    def call(self, feature_map, training=None, return_size_score=False):
        weights, boxes = self.cell_outputs(feature_map, training=training)
        # A weighted mean of boxes inside the image is inside the image: nothing to clip.
        box = ops.sum(boxes * ops.expand_dims(weights, -1), axis=1)
        logits = self.class_logits(feature_map, training=training)
        if return_size_score:
            # Nothing clips this head's box, so its own height + width keeps a gradient.
            return box, logits, (box[:, 2] - box[:, 0]) + (box[:, 3] - box[:, 1])
        return box, logits

    config_fields = ("num_classes", "channels", "hidden_units", "dropout")


def make_head(head, *, num_classes, hidden_units=256, dropout=0.2, channels=128):
    """`PooledBoxHead` or `SpatialBoxHead` by name (`HEADS`)."""
    if head == "pooled":
        return PooledBoxHead(
            num_classes=num_classes, hidden_units=hidden_units, dropout=dropout, name="pooled_head"
        )
    if head == "spatial":
        return SpatialBoxHead(
            num_classes=num_classes,
            channels=channels,
            hidden_units=hidden_units,
            dropout=dropout,
            name="spatial_head",
        )
    raise ValueError(f"`head` must be one of {', '.join(HEADS)}. Received: head={head!r}")
