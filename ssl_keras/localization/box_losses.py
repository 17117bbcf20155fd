"""Box regression losses: generalized IoU (GIoU) and GIoU + L1, in `keras.ops`.

Boxes are `"rel_yxyx"`: `(ymin, xmin, ymax, xmax)` as fractions of the image size. keras-cv has
a GIoU loss, but importing keras-cv imports TensorFlow; these run on every backend.
"""

import keras
from keras import ops

from ssl_keras.localization.box_iou import box_area, intersection_and_union


def _check_weight(name, value):
    if not value >= 0.0:
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value}")


def _safe_divide(numerator, denominator):
    """`numerator / denominator`, 0 where the denominator is 0, with finite gradients."""
    positive = denominator > 0.0
    return ops.where(positive, numerator / ops.where(positive, denominator, 1.0), 0.0)


def giou_loss(y_true, y_pred):
    """Generalized IoU loss of paired boxes, `1 - GIoU`, per box.

    Formula:

    ```
    GIoU = IoU - (C - U) / C
    loss = 1 - GIoU             # in [0, 2]
    ```

    where `U` is the area of the union of the two boxes and `C` the area of the smallest box
    enclosing both. Unlike `1 - IoU`, the loss still has a gradient when the boxes do not
    overlap.

    Degenerate boxes (zero area, or `min > max` on an axis, as an unconstrained regressor may
    output) count as having area 0: the loss stays finite, in `[1, 2]`, with finite gradients.
    The gradient then acts through the enclosing box only, and vanishes for an inverted box
    lying inside the true box (the L1 term of `box_loss` still pulls it), so prefer an output
    parametrisation that keeps `min <= max` (e.g. centre/size, or sorted coordinates).

    References:
        - [Rezatofighi et al., 2019](https://arxiv.org/abs/1902.09630)

    Args:
        y_true: tensor `[..., 4]`, true boxes `(ymin, xmin, ymax, xmax)`.
        y_pred: tensor `[..., 4]`, predicted boxes in the same format.

    Returns:
        Float32 tensor `[...]`, one loss per box.

    Example:

    >>> float(giou_loss([[0, 0, 0.2, 0.2]], [[0.4, 0.4, 0.6, 0.6]])[0])  # 1 + 0.28 / 0.36
    1.7777...
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    intersection, union = intersection_and_union(y_true, y_pred)
    iou = _safe_divide(intersection, union)
    enclosing = ops.concatenate(
        [
            ops.minimum(y_true[..., :2], y_pred[..., :2]),
            ops.maximum(y_true[..., 2:], y_pred[..., 2:]),
        ],
        axis=-1,
    )
    enclosing_area = box_area(enclosing)
    giou = iou - _safe_divide(enclosing_area - union, enclosing_area)
    return 1.0 - giou


def box_loss(y_true, y_pred, giou_weight=1.0, l1_weight=1.0):
    """Weighted sum of the GIoU loss and the L1 distance of paired boxes, per box.

    Formula:

    ```
    loss = giou_weight * (1 - GIoU) + l1_weight * sum over the 4 coordinates of |true - pred|
    ```

    The L1 term sums the 4 coordinates, as DETR does, so DETR's weights
    (`giou_weight=2, l1_weight=5`) carry over.

    References:
        - [Carion et al., 2020](https://arxiv.org/abs/2005.12872), Section 3.1.

    Args:
        y_true: tensor `[..., 4]`, true boxes `(ymin, xmin, ymax, xmax)`.
        y_pred: tensor `[..., 4]`, predicted boxes in the same format.
        giou_weight: float >= 0. Defaults to `1.0`.
        l1_weight: float >= 0. Defaults to `1.0`.

    Returns:
        Float32 tensor `[...]`, one loss per box.
    """
    _check_weight("giou_weight", giou_weight)
    _check_weight("l1_weight", l1_weight)
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    l1 = ops.sum(ops.abs(y_true - y_pred), axis=-1)
    return giou_weight * giou_loss(y_true, y_pred) + l1_weight * l1


@keras.saving.register_keras_serializable(package="ssl_keras")
class BoxLoss(keras.losses.Loss):
    """GIoU + L1 box regression loss as a `keras.losses.Loss`.

    Called as `loss(y_true, y_pred, sample_weight=None)` with boxes `[N, 4]` in `"rel_yxyx"`;
    see `box_loss` for the formula. Reduced to the mean over boxes by default.

    Args:
        giou_weight: float >= 0, weight of the `1 - GIoU` term. Defaults to `1.0`.
        l1_weight: float >= 0, weight of the L1 term (summed over the 4 coordinates).
            Defaults to `1.0`.
        reduction: Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: string. Defaults to `"box_loss"`.

    Example:

    >>> loss = BoxLoss(giou_weight=2.0, l1_weight=5.0)
    >>> value = loss(true_boxes, pred_boxes)
    """

    def __init__(
        self,
        giou_weight=1.0,
        l1_weight=1.0,
        reduction="sum_over_batch_size",
        name="box_loss",
        dtype=None,
    ):
        _check_weight("giou_weight", giou_weight)
        _check_weight("l1_weight", l1_weight)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.giou_weight = float(giou_weight)
        self.l1_weight = float(l1_weight)

    def call(self, y_true, y_pred):
        return box_loss(y_true, y_pred, giou_weight=self.giou_weight, l1_weight=self.l1_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"giou_weight": self.giou_weight, "l1_weight": self.l1_weight})
        return config
