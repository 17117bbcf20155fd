"""Intersection over union of paired boxes: in `keras.ops` for metrics and losses, in NumPy for reports.

Boxes are `"rel_yxyx"`: `(ymin, xmin, ymax, xmax)` as fractions of the image height and width.
"""

import numpy as np
from keras import ops


def box_iou(boxes_a, boxes_b):
    """Intersection over union of paired boxes, elementwise.

    Box `i` of `boxes_a` is compared with box `i` of `boxes_b` (not all pairs). A degenerate box
    (zero area, or `min > max` on an axis) has area 0, so its IoU is 0; two degenerate boxes
    give 0, never NaN. Computed in float32.

    Args:
        boxes_a: tensor `[..., 4]`, boxes `(ymin, xmin, ymax, xmax)`.
        boxes_b: tensor `[..., 4]`, boxes in the same format, same shape.

    Returns:
        Float32 tensor `[...]` of IoUs in `[0, 1]`.

    Example:

    >>> float(box_iou([[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.25, 0.5, 0.75]])[0])  # 1/3
    0.3333...
    """
    intersection, union = intersection_and_union(boxes_a, boxes_b)
    # The maximum keeps the division (and its gradient) finite where the union is 0.
    return ops.where(union > 0.0, intersection / ops.maximum(union, 1e-12), 0.0)


def intersection_and_union(boxes_a, boxes_b):
    """`(intersection, union)` areas of paired boxes, float32; shared by `box_iou` and the GIoU loss."""
    boxes_a = ops.cast(boxes_a, "float32")
    boxes_b = ops.cast(boxes_b, "float32")
    inter_h = ops.relu(
        ops.minimum(boxes_a[..., 2], boxes_b[..., 2])
        - ops.maximum(boxes_a[..., 0], boxes_b[..., 0])
    )
    inter_w = ops.relu(
        ops.minimum(boxes_a[..., 3], boxes_b[..., 3])
        - ops.maximum(boxes_a[..., 1], boxes_b[..., 1])
    )
    intersection = inter_h * inter_w
    union = box_area(boxes_a) + box_area(boxes_b) - intersection
    return intersection, union


def box_area(boxes):
    """Area of `[..., 4]` boxes; a degenerate box (`min > max` on an axis) has area 0."""
    return ops.relu(boxes[..., 2] - boxes[..., 0]) * ops.relu(boxes[..., 3] - boxes[..., 1])


def box_iou_numpy(boxes_a, boxes_b):
    """NumPy twin of `box_iou` (float64), for evaluation without a Keras backend."""
    a = np.asarray(boxes_a, dtype="float64")
    b = np.asarray(boxes_b, dtype="float64")
    inter_h = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    intersection = inter_h * inter_w

    def area(boxes):
        return np.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * np.maximum(
            boxes[..., 3] - boxes[..., 1], 0.0
        )

    union = area(a) + area(b) - intersection
    return np.where(union > 0.0, intersection / np.maximum(union, 1e-12), 0.0)
