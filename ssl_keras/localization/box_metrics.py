"""Single-object localization metrics: Keras metrics and a NumPy evaluation report (IoU: `box_iou.py`).

Boxes are `"rel_yxyx"`: `(ymin, xmin, ymax, xmax)` as fractions of the image height and width.

Two paths compute the same numbers:

- Keras metrics (`BoxMeanIoU`, `LocalizationAccuracy`, `TopKClassAccuracy`,
  `ClassAndBoxAccuracy`), written in `keras.ops`, stateful, for `fit` / `evaluate` logs.
- `localization_report`, plain NumPy (no TensorFlow), for the final evaluation written to disk.

Ranking convention, shared by both paths: the true class is within the top k when fewer than k
classes rank before it, where classes rank by decreasing score and ties go to the lower class
index (a stable sort, as `argmax` does). Ties are therefore never counted in the model's favour:
all-equal logits give top-1 accuracy only for class 0.
"""

import keras
import numpy as np
from keras import ops

from ssl_keras.localization.box_iou import box_iou, box_iou_numpy

# The metric names of `localization_report` and of the default-named Keras metrics.
MEAN_IOU = "mean_iou"
REPORT_IOU_THRESHOLDS = (0.5, 0.7)


def _loc_acc_name(threshold):
    return f"loc_acc@{threshold:g}"


def _cls_loc_acc_name(threshold):
    return f"cls_loc_acc@{threshold:g}"


def _top_k_name(k):
    return f"top{k}"


def _check_threshold(threshold):
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be in [0, 1]. Received: threshold={threshold}")


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1. Received: k={k}")


def _entry(value, key, argument):
    """Picks `value[key]` from a dict, or returns a lone tensor as it is."""
    if isinstance(value, dict):
        if key not in value:
            raise KeyError(
                f"`{argument}` is a dict without a {key!r} entry. "
                f"Received: {argument} keys={sorted(value)}"
            )
        return value[key]
    return value


def _true_boxes(y_true):
    return _entry(y_true, "boxes", "y_true")


def _pred_boxes(y_pred):
    return _entry(y_pred, "boxes", "y_pred")


def _true_labels(y_true):
    labels = ops.cast(_entry(y_true, "labels", "y_true"), "int32")
    return ops.reshape(labels, (-1,))


def _pred_logits(y_pred):
    return ops.cast(_entry(y_pred, "class_logits", "y_pred"), "float32")


def class_rank(labels, scores):
    """Rank of the true class among the scores, 0 for the best, ties to the lower index.

    Args:
        labels: int tensor `[N]`, true class indices.
        scores: float tensor `[N, C]`, class logits or probabilities.

    Returns:
        Int32 tensor `[N]`; the prediction is top-k correct where the rank is `< k`.
    """
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    scores = ops.cast(scores, "float32")
    num_classes = ops.shape(scores)[-1]
    true_score = ops.take_along_axis(scores, labels[:, None], axis=1)
    index = ops.arange(num_classes, dtype="int32")[None, :]
    before = ops.logical_or(
        scores > true_score,
        ops.logical_and(scores == true_score, index < labels[:, None]),
    )
    return ops.sum(ops.cast(before, "int32"), axis=1)


class _MeanOverImages(keras.metrics.Metric):
    """Base class: the (sample-weighted) mean over images of a per-image value.

    `update_state(y_true, y_pred, sample_weight=None)` takes either the target and output dicts
    of the localization task (`y_true = {"boxes", "labels"}`,
    `y_pred = {"boxes", "class_logits"}`), or, for metrics that need a single entry, that
    tensor alone. `sample_weight`, if given, is `[N]` (or `[N, 1]`) per-image weights.
    """

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def per_image_values(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = ops.cast(ops.reshape(self.per_image_values(y_true, y_pred), (-1,)), "float32")
        if sample_weight is None:
            weights = ops.ones_like(values)
        else:
            weights = ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
            weights = ops.broadcast_to(weights, ops.shape(values))
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)


@keras.saving.register_keras_serializable(package="ssl_keras")
class BoxMeanIoU(_MeanOverImages):
    """Mean IoU between the predicted and the true box of each image.

    Unlike `keras.metrics.MeanIoU` (a segmentation metric over class confusion matrices), this
    averages the box IoU over images.

    Args:
        name: string. Defaults to `"mean_iou"`.
        dtype: dtype of the result. Defaults to `None`.

    Call arguments (`update_state`):
        y_true: dict with `"boxes"` `[N, 4]`, or the `[N, 4]` box tensor itself.
        y_pred: dict with `"boxes"` `[N, 4]`, or the `[N, 4]` box tensor itself.
        sample_weight: optional per-image weights `[N]`.

    Example:

    >>> metric = BoxMeanIoU()
    >>> metric.update_state({"boxes": [[0, 0, 1, 1]]}, {"boxes": [[0, 0, 0.5, 0.5]]})
    >>> float(metric.result())
    0.25
    """

    def __init__(self, name=MEAN_IOU, dtype=None):
        super().__init__(name=name, dtype=dtype)

    def per_image_values(self, y_true, y_pred):
        return box_iou(_true_boxes(y_true), _pred_boxes(y_pred))


@keras.saving.register_keras_serializable(package="ssl_keras")
class LocalizationAccuracy(_MeanOverImages):
    """Fraction of images whose predicted box has IoU >= `threshold` with the true box.

    Args:
        threshold: float in `[0, 1]`, the IoU an image needs to count as localized.
            Defaults to `0.5` (the PASCAL VOC criterion).
        name: string. Defaults to `"loc_acc@{threshold}"`, e.g. `"loc_acc@0.5"`.
        dtype: dtype of the result. Defaults to `None`.

    Call arguments (`update_state`): as `BoxMeanIoU`.
    """

    def __init__(self, threshold=0.5, name=None, dtype=None):
        _check_threshold(threshold)
        threshold = float(threshold)
        super().__init__(name=name or _loc_acc_name(threshold), dtype=dtype)
        self.threshold = threshold

    def per_image_values(self, y_true, y_pred):
        return box_iou(_true_boxes(y_true), _pred_boxes(y_pred)) >= self.threshold

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold})
        return config


@keras.saving.register_keras_serializable(package="ssl_keras")
class TopKClassAccuracy(_MeanOverImages):
    """Fraction of images whose true class is among the `k` highest class scores.

    Ties rank the lower class index first (see the module docstring), so top-1 is
    `argmax(class_logits) == label`.

    Args:
        k: int >= 1. Defaults to `1`.
        name: string. Defaults to `"top{k}"`, e.g. `"top1"`, `"top3"`.
        dtype: dtype of the result. Defaults to `None`.

    Call arguments (`update_state`):
        y_true: dict with `"labels"` (int `[N]`), or the label tensor itself.
        y_pred: dict with `"class_logits"` `[N, C]`, or the logit tensor itself (probabilities
            give the same result).
        sample_weight: optional per-image weights `[N]`.
    """

    def __init__(self, k=1, name=None, dtype=None):
        _check_k(k)
        k = int(k)
        super().__init__(name=name or _top_k_name(k), dtype=dtype)
        self.k = k

    def per_image_values(self, y_true, y_pred):
        return class_rank(_true_labels(y_true), _pred_logits(y_pred)) < self.k

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k})
        return config


@keras.saving.register_keras_serializable(package="ssl_keras")
class ClassAndBoxAccuracy(_MeanOverImages):
    """Fraction of images with both the top-1 class right and box IoU >= `threshold`.

    Needs both outputs, so `y_true` and `y_pred` must be dicts.

    Args:
        threshold: float in `[0, 1]`. Defaults to `0.5`.
        name: string. Defaults to `"cls_loc_acc@{threshold}"`, e.g. `"cls_loc_acc@0.5"`.
        dtype: dtype of the result. Defaults to `None`.

    Call arguments (`update_state`):
        y_true: dict with `"boxes"` `[N, 4]` and `"labels"` `[N]`.
        y_pred: dict with `"boxes"` `[N, 4]` and `"class_logits"` `[N, C]`.
        sample_weight: optional per-image weights `[N]`.
    """

    def __init__(self, threshold=0.5, name=None, dtype=None):
        _check_threshold(threshold)
        threshold = float(threshold)
        super().__init__(name=name or _cls_loc_acc_name(threshold), dtype=dtype)
        self.threshold = threshold

    def per_image_values(self, y_true, y_pred):
        for value, argument in ((y_true, "y_true"), (y_pred, "y_pred")):
            if not isinstance(value, dict):
                raise TypeError(
                    f"ClassAndBoxAccuracy needs boxes and classes: `{argument}` must be a dict. "
                    f"Received: {argument} of type {type(value).__name__}"
                )
        localized = box_iou(_true_boxes(y_true), _pred_boxes(y_pred)) >= self.threshold
        classified = class_rank(_true_labels(y_true), _pred_logits(y_pred)) < 1
        return ops.logical_and(localized, classified)

    def get_config(self):
        config = super().get_config()
        config.update({"threshold": self.threshold})
        return config


def localization_metrics():
    """The Keras metrics matching the headline numbers of `localization_report`.

    Returns:
        A list: `BoxMeanIoU()`, `LocalizationAccuracy(0.5)`, `LocalizationAccuracy(0.7)`,
        `TopKClassAccuracy(1)`, `TopKClassAccuracy(3)`, `ClassAndBoxAccuracy(0.5)`, each fed
        with the full `y_true` / `y_pred` dicts.
    """
    return [
        BoxMeanIoU(),
        *(LocalizationAccuracy(t) for t in REPORT_IOU_THRESHOLDS),
        TopKClassAccuracy(1),
        TopKClassAccuracy(3),
        ClassAndBoxAccuracy(0.5),
    ]


# ---------------------------------------------------------------------------------------------
# NumPy evaluation path (no TensorFlow, no Keras backend).


def class_rank_numpy(labels, scores):
    """NumPy twin of `class_rank`."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype="float64")
    true_score = np.take_along_axis(scores, labels[:, None], axis=1)
    index = np.arange(scores.shape[1])[None, :]
    before = (scores > true_score) | ((scores == true_score) & (index < labels[:, None]))
    return before.sum(axis=1)


def balanced_top1(labels, correct):
    """Mean over the classes present of each class's top-1 (mean recall); 1/K for one class of K.

    Args:
        labels: int array `[N]`, true class indices.
        correct: bool array `[N]`, whether each image's top-1 class is right.

    Returns:
        float.
    """
    labels = np.asarray(labels).reshape(-1)
    correct = np.asarray(correct, dtype="float64").reshape(-1)
    return float(np.mean([correct[labels == c].mean() for c in np.unique(labels)]))


def localization_report(true_boxes, pred_boxes, true_labels, class_probs, class_names):
    """Evaluates single-object localization predictions with NumPy only.

    Gives the same numbers as the Keras metrics of this module (up to float32 rounding of the
    IoU near a threshold).

    Args:
        true_boxes: array `[N, 4]`, true boxes `(ymin, xmin, ymax, xmax)` in `[0, 1]`.
        pred_boxes: array `[N, 4]`, predicted boxes in the same format.
        true_labels: int array `[N]`, true class indices in `[0, C)`.
        class_probs: array `[N, C]`, class probabilities or logits (only their order matters).
        class_names: sequence of `C` class names.

    Returns:
        A JSON-serialisable dict with the keys `"mean_iou"`, `"loc_acc@0.5"`, `"loc_acc@0.7"`,
        `"top1"`, `"top3"`, `"cls_loc_acc@0.5"` (floats in `[0, 1]`), `"num_test_images"` (int)
        `"per_class"`: a dict, in `class_names` order and only for classes with at least one
        image, mapping the class name to `{"num_images", "mean_iou", "loc_acc@0.5", "top1"}`;
        `"balanced_top1"`, the mean of the per-class top-1 (1/K for a model that always
        predicts one of K classes present); and `"classes_predicted"`, how many distinct
        classes the top-1 predictions use.

    Example:

    >>> report = localization_report(
    ...     [[0, 0, 1, 1]], [[0, 0, 0.5, 0.5]], [1], [[0.2, 0.8]], ["cat", "dog"]
    ... )
    >>> report["mean_iou"], report["top1"], report["per_class"]["dog"]["num_images"]
    (0.25, 1.0, 1)
    """
    true_boxes = np.asarray(true_boxes, dtype="float64")
    pred_boxes = np.asarray(pred_boxes, dtype="float64")
    true_labels = np.asarray(true_labels)
    class_probs = np.asarray(class_probs, dtype="float64")
    class_names = [str(name) for name in class_names]
    _check_report_inputs(true_boxes, pred_boxes, true_labels, class_probs, class_names)
    true_labels = true_labels.reshape(-1).astype("int64")

    iou = box_iou_numpy(true_boxes, pred_boxes)
    rank = class_rank_numpy(true_labels, class_probs)
    top1 = rank < 1
    loc = {t: iou >= t for t in REPORT_IOU_THRESHOLDS}
    report = {
        MEAN_IOU: float(iou.mean()),
        **{_loc_acc_name(t): float(loc[t].mean()) for t in REPORT_IOU_THRESHOLDS},
        _top_k_name(1): float(top1.mean()),
        _top_k_name(3): float((rank < 3).mean()),
        _cls_loc_acc_name(0.5): float((top1 & loc[0.5]).mean()),
        "num_test_images": int(len(iou)),
    }
    per_class = {}
    for index, name in enumerate(class_names):
        mask = true_labels == index
        if not mask.any():
            continue
        per_class[name] = {
            "num_images": int(mask.sum()),
            MEAN_IOU: float(iou[mask].mean()),
            _loc_acc_name(0.5): float(loc[0.5][mask].mean()),
            _top_k_name(1): float(top1[mask].mean()),
        }
    report["per_class"] = per_class
    report["balanced_top1"] = balanced_top1(true_labels, top1)
    report["classes_predicted"] = int(len(np.unique(np.argmax(class_probs, axis=-1))))
    return report


def _check_report_inputs(true_boxes, pred_boxes, true_labels, class_probs, class_names):
    n = len(true_boxes)
    if n == 0:
        raise ValueError("Cannot evaluate zero images. Received: true_boxes of shape (0, 4)")
    for name, boxes in (("true_boxes", true_boxes), ("pred_boxes", pred_boxes)):
        if boxes.ndim != 2 or boxes.shape != (n, 4):
            raise ValueError(
                f"`{name}` must have shape [N, 4] with N = len(true_boxes) = {n}. "
                f"Received: {name}.shape={boxes.shape}"
            )
    if true_labels.reshape(-1).shape != (n,):
        raise ValueError(
            f"`true_labels` must have shape [N] with N = {n}. "
            f"Received: true_labels.shape={true_labels.shape}"
        )
    if not np.issubdtype(true_labels.dtype, np.integer):
        raise ValueError(
            f"`true_labels` must be integer class indices. "
            f"Received: true_labels.dtype={true_labels.dtype}"
        )
    num_classes = len(class_names)
    if class_probs.shape != (n, num_classes):
        raise ValueError(
            f"`class_probs` must have shape [N, C] = [{n}, {num_classes}] (C = len(class_names)). "
            f"Received: class_probs.shape={class_probs.shape}"
        )
    labels = true_labels.reshape(-1)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"`true_labels` must lie in [0, {num_classes}). "
            f"Received: true_labels min={labels.min()}, max={labels.max()}"
        )


def format_per_class_table(report):
    """Formats the per-class part of a `localization_report` as a Markdown table.

    Args:
        report: dict returned by `localization_report`.

    Returns:
        A string: a header, one row per class (in report order) and a final `**all**` row with
        the overall numbers, values with 3 decimals, ending with a newline.
    """
    columns = (MEAN_IOU, _loc_acc_name(0.5), _top_k_name(1))
    lines = [
        "| class | images | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]

    def row(name, num_images, values):
        cells = [name, str(num_images), *(f"{values[c]:.3f}" for c in columns)]
        return "| " + " | ".join(cells) + " |"

    for name, entry in report["per_class"].items():
        lines.append(row(name, entry["num_images"], entry))
    lines.append(row("**all**", report["num_test_images"], report))
    return "\n".join(lines) + "\n"
