import json

import keras
import numpy as np
import pytest
from stand_ins import assert_keeps_leading_dimensions, random_boxes

from ssl_keras.localization.box_iou import box_iou, box_iou_numpy
from ssl_keras.localization.box_losses import BoxLoss
from ssl_keras.localization.box_metrics import (
    BoxMeanIoU,
    ClassAndBoxAccuracy,
    LocalizationAccuracy,
    TopKClassAccuracy,
    format_per_class_table,
    localization_metrics,
    localization_report,
)
from test_case import run_serialization_test


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def result(metric):
    return float(to_numpy(metric.result()))


@pytest.mark.parametrize(
    "box_a, box_b, expected",
    [
        ((0, 0, 0.5, 0.5), (0, 0.25, 0.5, 0.75), 1 / 3),
        ((0.1, 0.2, 0.6, 0.9), (0.1, 0.2, 0.6, 0.9), 1.0),
        ((0, 0, 0.2, 0.2), (0.4, 0.4, 0.6, 0.6), 0.0),
        ((0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), 0.0),  # touching edges
        ((0, 0, 1, 1), (0, 0, 0.5, 0.5), 0.25),
        ((0, 0, 1, 1), (0, 0, 1, 0.6), 0.6),
        # Squares overlapping by half: 0.08 / (0.16 + 0.16 - 0.08).
        ((0, 0, 0.4, 0.4), (0.2, 0, 0.6, 0.4), 1 / 3),
        ((0, 0, 1, 1), (0, 0, 1, 0.5), 0.5),
    ],
)
def test_box_iou_hand_computed(box_a, box_b, expected):
    np.testing.assert_allclose(to_numpy(box_iou([box_a], [box_b])), [expected], atol=1e-6)
    np.testing.assert_allclose(to_numpy(box_iou([box_b], [box_a])), [expected], atol=1e-6)
    np.testing.assert_allclose(box_iou_numpy([box_a], [box_b]), [expected], atol=1e-12)


@pytest.mark.parametrize(
    "box_a, box_b",
    [
        ((0.3, 0.3, 0.3, 0.3), (0.3, 0.3, 0.3, 0.3)),  # identical points: union 0
        ((0.2, 0.2, 0.2, 0.8), (0.2, 0.2, 0.2, 0.8)),  # identical zero-height boxes
        ((0, 0, 1, 1), (0.8, 0.1, 0.2, 0.9)),  # inverted prediction inside the true box
        ((0, 0, 1, 1), (0.9, 0.9, 0.1, 0.1)),
    ],
)
def test_degenerate_boxes_have_iou_zero_without_nan(box_a, box_b):
    assert to_numpy(box_iou([box_a], [box_b]))[0] == 0.0
    assert box_iou_numpy([box_a], [box_b])[0] == 0.0


def test_box_iou_keeps_leading_dimensions():
    assert_keeps_leading_dimensions(box_iou, box_iou_numpy, seed=0, atol=1e-6)


# Four images with IoUs 1, 1/3, 0.6 and 0.25.
TRUE_BOXES = np.array(
    [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], [0, 0, 1, 1], [0, 0, 1, 1]], dtype="float32"
)
PRED_BOXES = np.array(
    [[0, 0, 0.5, 0.5], [0, 0.25, 0.5, 0.75], [0, 0, 1, 0.6], [0, 0, 0.5, 0.5]], dtype="float32"
)
IOUS = np.array([1.0, 1 / 3, 0.6, 0.25])
# Ranks of the true class: 0, 2, 4, and 1 (a tie with class 0, which ranks first).
LABELS = np.array([0, 2, 4, 1], dtype="int32")
LOGITS = np.array(
    [[5, 1, 2, 3, 4], [5, 4, 3, 2, 1], [1, 2, 3, 4, 0], [1, 1, 0, 0, 0]], dtype="float32"
)
Y_TRUE = {"boxes": TRUE_BOXES, "labels": LABELS}
Y_PRED = {"boxes": PRED_BOXES, "class_logits": LOGITS}


@pytest.mark.parametrize(
    "metric, expected",
    [
        (BoxMeanIoU(), IOUS.mean()),
        (LocalizationAccuracy(0.5), 0.5),
        (LocalizationAccuracy(0.7), 0.25),
        (LocalizationAccuracy(0.3), 0.75),
        (TopKClassAccuracy(1), 0.25),
        (TopKClassAccuracy(2), 0.5),
        (TopKClassAccuracy(3), 0.75),
        (TopKClassAccuracy(5), 1.0),
        (ClassAndBoxAccuracy(0.5), 0.25),
    ],
)
def test_metrics_on_hand_computed_batch(metric, expected):
    metric.update_state(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(result(metric), expected, atol=1e-6)


def test_metric_names():
    names = [m.name for m in localization_metrics()]
    assert names == ["mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5"]
    assert LocalizationAccuracy(0.75).name == "loc_acc@0.75"
    assert TopKClassAccuracy(5).name == "top5"
    assert ClassAndBoxAccuracy(0.7).name == "cls_loc_acc@0.7"


def test_iou_exactly_at_threshold_counts():
    metric = LocalizationAccuracy(0.5)
    metric.update_state([[0, 0, 1, 1]], [[0, 0, 1, 0.5]])
    assert result(metric) == 1.0


def test_class_and_box_needs_both():
    # Image 0: class right, box right; 1: class right, box wrong;
    # 2: class wrong, box right; 3: both wrong.
    y_true = {"boxes": TRUE_BOXES[[0, 1, 2, 3]], "labels": np.array([0, 1, 2, 3])}
    logits = np.eye(5, dtype="float32")[[0, 1, 0, 0]]
    y_pred = {"boxes": PRED_BOXES[[0, 1, 2, 3]], "class_logits": logits}
    metric = ClassAndBoxAccuracy()
    metric.update_state(y_true, y_pred)
    assert result(metric) == 0.25
    top1 = TopKClassAccuracy()
    top1.update_state(y_true, y_pred)
    loc = LocalizationAccuracy()
    loc.update_state(y_true, y_pred)
    assert (result(top1), result(loc)) == (0.5, 0.5)


def test_single_tensors_give_the_same_result_as_dicts():
    pairs = [
        (BoxMeanIoU, TRUE_BOXES, PRED_BOXES),
        (LocalizationAccuracy, TRUE_BOXES, PRED_BOXES),
        (TopKClassAccuracy, LABELS, LOGITS),
    ]
    for cls, y_true, y_pred in pairs:
        from_dicts, from_tensors = cls(), cls()
        from_dicts.update_state(Y_TRUE, Y_PRED)
        from_tensors.update_state(y_true, y_pred)
        assert result(from_tensors) == result(from_dicts)


def test_labels_of_shape_n_by_1_are_accepted():
    metric = TopKClassAccuracy(3)
    metric.update_state(LABELS[:, None], LOGITS)
    assert result(metric) == 0.75


def test_class_and_box_rejects_tensors():
    with pytest.raises(TypeError, match="Received: y_true of type ndarray$"):
        ClassAndBoxAccuracy().update_state(TRUE_BOXES, Y_PRED)


def test_missing_entry_is_named():
    with pytest.raises(KeyError, match=r"Received: y_pred keys=\['boxes'\]"):
        TopKClassAccuracy().update_state(Y_TRUE, {"boxes": PRED_BOXES})


def test_sample_weight():
    metric = BoxMeanIoU()
    metric.update_state(Y_TRUE, Y_PRED, sample_weight=np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(result(metric), 0.8, atol=1e-6)
    metric = TopKClassAccuracy(3)
    metric.update_state(Y_TRUE, Y_PRED, sample_weight=np.array([[0.0], [1.0], [1.0], [2.0]]))
    np.testing.assert_allclose(result(metric), 3 / 4, atol=1e-6)


def random_task(seed, n=64, num_classes=20):
    rng = np.random.default_rng(seed)
    true_boxes = random_boxes(rng, n)
    # Predictions near the truth, so every threshold sees both outcomes.
    pred_boxes = np.clip(true_boxes + rng.normal(0, 0.08, (n, 4)), 0, 1).astype("float32")
    labels = rng.integers(0, num_classes, n).astype("int32")
    logits = rng.normal(0, 1, (n, num_classes)).astype("float32")
    logits[np.arange(n), labels] += rng.uniform(0, 2.5, n).astype("float32")
    return (
        {"boxes": true_boxes, "labels": labels},
        {"boxes": pred_boxes, "class_logits": logits},
    )


def update_all(metrics, y_true, y_pred):
    for metric in metrics:
        metric.update_state(y_true, y_pred)
    return {metric.name: result(metric) for metric in metrics}


def test_accumulation_over_batches_equals_one_batch():
    y_true, y_pred = random_task(1)
    whole = update_all(localization_metrics(), y_true, y_pred)
    metrics = localization_metrics()
    for part in (slice(0, 24), slice(24, None)):
        update_all(
            metrics,
            {k: v[part] for k, v in y_true.items()},
            {k: v[part] for k, v in y_pred.items()},
        )
    for metric in metrics:
        np.testing.assert_allclose(result(metric), whole[metric.name], atol=1e-6)
    # Sanity: the random task is not trivial for any metric.
    assert all(0.0 < value < 1.0 for value in whole.values()), whole


def test_reset_state():
    y_true, y_pred = random_task(2)
    metrics = localization_metrics()
    update_all(metrics, Y_TRUE, Y_PRED)
    for metric in metrics:
        metric.reset_state()
        assert result(metric) == 0.0
    after_reset = update_all(metrics, y_true, y_pred)
    assert after_reset == update_all(localization_metrics(), y_true, y_pred)


@pytest.mark.parametrize("seed", [3, 4])
def test_numpy_report_agrees_with_keras_metrics(seed):
    y_true, y_pred = random_task(seed, n=200)
    keras_values = update_all(localization_metrics(), y_true, y_pred)
    names = [f"class_{i}" for i in range(20)]
    probs = np.exp(y_pred["class_logits"])
    probs /= probs.sum(axis=1, keepdims=True)
    report = localization_report(y_true["boxes"], y_pred["boxes"], y_true["labels"], probs, names)
    assert set(report) == set(keras_values) | {
        "num_test_images",
        "per_class",
        "balanced_top1",
        "classes_predicted",
    }
    for name, value in keras_values.items():
        np.testing.assert_allclose(report[name], value, atol=1e-6, err_msg=name)
    assert report["num_test_images"] == 200


def test_report_on_hand_computed_batch():
    report = localization_report(
        TRUE_BOXES, PRED_BOXES, LABELS, LOGITS, ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    )
    np.testing.assert_allclose(report["mean_iou"], IOUS.mean())
    assert report["loc_acc@0.5"] == 0.5
    assert report["loc_acc@0.7"] == 0.25
    assert report["top1"] == 0.25
    assert report["top3"] == 0.75
    assert report["cls_loc_acc@0.5"] == 0.25
    assert report["num_test_images"] == 4
    # "boat" (label 3) has no image, so it has no entry.
    assert list(report["per_class"]) == ["aeroplane", "bicycle", "bird", "bottle"]


def test_report_per_class_entries():
    # Images 0 and 1 are cats (IoU 1 and 0.25, classified right and wrong), image 2 a dog
    # (IoU 1/3, classified right); no bird.
    report = localization_report(
        true_boxes=TRUE_BOXES[[0, 3, 1]],
        pred_boxes=PRED_BOXES[[0, 3, 1]],
        true_labels=[0, 0, 1],
        class_probs=[[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]],
        class_names=["cat", "dog", "bird"],
    )
    assert list(report["per_class"]) == ["cat", "dog"]
    cat, dog = report["per_class"]["cat"], report["per_class"]["dog"]
    assert cat == {"num_images": 2, "mean_iou": 0.625, "loc_acc@0.5": 0.5, "top1": 0.5}
    assert dog["num_images"] == 1
    np.testing.assert_allclose(dog["mean_iou"], 1 / 3)
    assert (dog["loc_acc@0.5"], dog["top1"]) == (0.0, 1.0)
    assert report["top3"] == 1.0  # only three classes
    json.dumps(report)


def test_format_per_class_table():
    report = localization_report(
        TRUE_BOXES[[0, 3, 1]],
        PRED_BOXES[[0, 3, 1]],
        [0, 0, 1],
        [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]],
        ["cat", "dog", "bird"],
    )
    lines = format_per_class_table(report).strip().split("\n")
    assert lines[0] == "| class | images | mean_iou | loc_acc@0.5 | top1 |"
    assert lines[1] == "|---|---:|---:|---:|---:|"
    assert lines[2] == "| cat | 2 | 0.625 | 0.500 | 0.500 |"
    assert lines[3] == "| dog | 1 | 0.333 | 0.000 | 1.000 |"
    assert lines[4] == "| **all** | 3 | 0.528 | 0.333 | 0.667 |"
    assert len(lines) == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(true_boxes=np.zeros((0, 4))), r"Received: true_boxes of shape \(0, 4\)"),
        (dict(pred_boxes=np.zeros((3, 4))), r"Received: pred_boxes.shape=\(3, 4\)"),
        (dict(true_labels=[0, 1]), r"Received: true_labels.shape=\(2,\)"),
        (dict(true_labels=[0.0, 1.0, 0.0, 1.0]), "Received: true_labels.dtype=float64"),
        (dict(true_labels=[0, 1, 2, 5]), "Received: true_labels min=0, max=5"),
        (dict(class_names=["a", "b"]), r"Received: class_probs.shape=\(4, 5\)"),
    ],
)
def test_report_rejects_bad_inputs(kwargs, message):
    arguments = dict(
        true_boxes=TRUE_BOXES,
        pred_boxes=PRED_BOXES,
        true_labels=LABELS,
        class_probs=LOGITS,
        class_names=list("abcde"),
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message + "$"):
        localization_report(**arguments)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (LocalizationAccuracy, dict(threshold=1.5), "Received: threshold=1.5"),
        (ClassAndBoxAccuracy, dict(threshold=-0.1), "Received: threshold=-0.1"),
        (TopKClassAccuracy, dict(k=0), "Received: k=0"),
        (TopKClassAccuracy, dict(k=2.5), "Received: k=2.5"),
    ],
)
def test_invalid_arguments_are_rejected(cls, kwargs, message):
    with pytest.raises(ValueError, match=message + "$"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "metric",
    [
        BoxMeanIoU(name="iou"),
        LocalizationAccuracy(threshold=0.75, name="loc75"),
        TopKClassAccuracy(k=5),
        ClassAndBoxAccuracy(threshold=0.6),
    ],
)
def test_config_round_trip(metric):
    _, revived = run_serialization_test(metric)
    assert revived.name == metric.name
    for attribute in ("threshold", "k"):
        assert getattr(revived, attribute, None) == getattr(metric, attribute, None)
    metric.update_state(Y_TRUE, Y_PRED)
    revived.update_state(Y_TRUE, Y_PRED)
    assert result(revived) == result(metric)


# The two compiled-model tests: 5 classes, named a to e, and 6 random features an item.
CLASS_NAMES = list("abcde")


def features_and_task(seed, n):
    """`(features, y_true)`: `n` items' features, and their targets from `random_task`."""
    y_true, _ = random_task(seed, n=n, num_classes=len(CLASS_NAMES))
    return np.random.default_rng(seed).normal(size=(n, 6)).astype("float32"), y_true


def predicted_report(model, features, y_true):
    """`(pred, report)`: `model`'s predictions and their `localization_report` against `y_true`."""
    pred = model.predict(features, batch_size=8, verbose=0)
    report = localization_report(
        y_true["boxes"], pred["boxes"], y_true["labels"], pred["class_logits"], CLASS_NAMES
    )
    return pred, report


def tiny_two_output_model(num_classes):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {
        "boxes": keras.layers.Dense(4, activation="sigmoid", name="boxes")(hidden),
        "class_logits": keras.layers.Dense(num_classes, name="class_logits")(hidden),
    }
    return keras.Model(inputs, outputs)


@pytest.mark.large
def test_usable_in_compile_with_one_list_per_output():
    features, y_true = features_and_task(5, 32)
    model = tiny_two_output_model(len(CLASS_NAMES))
    model.compile(
        optimizer="adam",
        loss={
            "boxes": BoxLoss(l1_weight=2.0),
            "class_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        metrics={
            "boxes": [BoxMeanIoU(), LocalizationAccuracy(0.3)],
            "class_logits": [TopKClassAccuracy(1), TopKClassAccuracy(3)],
        },
    )
    y = {"boxes": y_true["boxes"], "class_logits": y_true["labels"]}
    history = model.fit(features, y, batch_size=8, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(v)) for v in history.history.values())
    logs = model.evaluate(features, y, batch_size=8, verbose=0, return_dict=True)
    pred, report = predicted_report(model, features, y_true)
    iou = box_iou_numpy(y_true["boxes"], pred["boxes"])

    def log(name):
        (key,) = [k for k in logs if k.endswith(name)]
        return logs[key]

    np.testing.assert_allclose(log("mean_iou"), report["mean_iou"], atol=1e-5)
    np.testing.assert_allclose(log("loc_acc@0.3"), (iou >= 0.3).mean(), atol=1e-5)
    np.testing.assert_allclose(log("top1"), report["top1"], atol=1e-5)
    np.testing.assert_allclose(log("top3"), report["top3"], atol=1e-5)


class DictMetricsModel(keras.Model):
    """Feeds the full target and output dicts to the metrics, as the detect model does."""

    def __init__(self, num_classes):
        super().__init__()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.box_head = keras.layers.Dense(4, activation="sigmoid")
        self.class_head = keras.layers.Dense(num_classes)
        self.box_loss = BoxLoss()
        self.localization_metrics = localization_metrics()

    def call(self, inputs):
        hidden = self.hidden(inputs)
        return {"boxes": self.box_head(hidden), "class_logits": self.class_head(hidden)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        classification = keras.losses.sparse_categorical_crossentropy(
            y["labels"], y_pred["class_logits"], from_logits=True
        )
        return self.box_loss(y["boxes"], y_pred["boxes"]) + keras.ops.mean(classification)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for metric in self.localization_metrics:
            metric.update_state(y, y_pred, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    @property
    def metrics(self):
        return super().metrics + self.localization_metrics


@pytest.mark.large
def test_usable_from_compute_metrics_with_full_dicts():
    features, y_true = features_and_task(6, 24)
    model = DictMetricsModel(len(CLASS_NAMES))
    model.compile(optimizer="adam")
    model.fit(features, y_true, batch_size=8, epochs=1, verbose=0)
    logs = model.evaluate(features, y_true, batch_size=8, verbose=0, return_dict=True)
    _, report = predicted_report(model, features, y_true)
    for name in ["mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5"]:
        np.testing.assert_allclose(logs[name], report[name], atol=1e-5, err_msg=name)
