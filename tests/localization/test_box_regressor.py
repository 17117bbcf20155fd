import keras
import numpy as np
import pytest

from ssl_keras.backbone import tiny_backbone
from ssl_keras.localization.box_augmenter import BoxAugmenter
from ssl_keras.localization.box_regressor import BoxRegressor
from ssl_keras.localization.detect import enter_phase, export_detector
from ssl_keras.runs.config import DetectConfig
from ssl_keras.runs.export import load_serving
from test_case import run_model_saving_test, run_serialization_test


def data(n=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    lo = rng.uniform(0.05, 0.4, (n, 2))
    hi = lo + rng.uniform(0.2, 0.5, (n, 2))
    boxes = np.concatenate([lo, np.minimum(hi, 1.0)], axis=1).astype("float32")
    labels = rng.integers(0, 5, n).astype("int32")
    return images, boxes, labels


def model(seed=0, augmenter=None):
    keras.utils.set_random_seed(seed)
    return BoxRegressor(tiny_backbone(width=8), num_classes=5, augmenter=augmenter, hidden_units=16)


def backbone_state(m):
    return [np.array(v) for v in m.backbone.weights]


def test_outputs_are_valid_boxes_and_logits():
    images, _, _ = data()
    out = model()(images, training=False)
    boxes = np.asarray(out["boxes"])
    assert boxes.shape == (16, 4) and np.asarray(out["class_logits"]).shape == (16, 5)
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])


@pytest.mark.large
def test_training_with_box_inputs_learns_and_reports_metrics():
    images, boxes, labels = data(32)
    m = model(augmenter=BoxAugmenter(seed=3))
    m.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = m.fit(
        {"images": images, "boxes": boxes},
        {"boxes": boxes, "labels": labels},
        batch_size=8,
        epochs=6,
        verbose=0,
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5"} <= set(
        history.history
    )


@pytest.mark.large
@pytest.mark.parametrize("mode,changes", [("freeze", False), ("finetune", True)])
def test_freeze_keeps_backbone_weights_and_finetune_changes_them(mode, changes):
    images, boxes, labels = data(16)
    m = model()
    m.build((None, 32, 32, 3))
    config = DetectConfig(mode=mode, learning_rate=1e-2, epochs=1)
    enter_phase(m, config, finetune=mode == "finetune", epochs=1, steps_per_epoch=2)
    before = backbone_state(m)
    head_before = np.array(m.head.box_output.kernel)
    m.fit(images, {"boxes": boxes, "labels": labels}, batch_size=8, epochs=1, verbose=0)
    after = backbone_state(m)
    # Includes the BatchNorm moving statistics: frozen BN runs in inference mode.
    same = all(np.array_equal(a, b) for a, b in zip(before, after))
    assert same != changes
    assert not np.array_equal(head_before, np.array(m.head.box_output.kernel))


@pytest.mark.large
def test_finetune_moves_the_backbone_less_than_the_head_learning_rate():
    # With Adam the first step size of every variable is ~lr, so the backbone's should be ~lr * 0.1.
    images, boxes, labels = data(8)
    m = model()
    m.build((None, 32, 32, 3))
    enter_phase(
        m,
        DetectConfig(learning_rate=1e-2, backbone_lr_multiplier=0.1, weight_decay=0.0),
        finetune=True,
        epochs=1,
        steps_per_epoch=1,
    )
    kernel = m.backbone.get_layer("conv1").kernel
    before_backbone, before_head = np.array(kernel), np.array(m.head.class_output.kernel)
    m.fit(images, {"boxes": boxes, "labels": labels}, batch_size=8, epochs=1, verbose=0)
    backbone_step = np.abs(np.array(kernel) - before_backbone).max()
    head_step = np.abs(np.array(m.head.class_output.kernel) - before_head).max()
    assert backbone_step == pytest.approx(1e-3, rel=0.05)
    assert head_step == pytest.approx(1e-2, rel=0.05)


@pytest.mark.large
def test_keras_round_trip_and_export_equal_inference(tmp_path):
    images, boxes, labels = data(8)
    m = model(augmenter=BoxAugmenter(seed=5, flip_probability=0.3))
    m.compile(optimizer="adam")
    m.fit(
        {"images": images, "boxes": boxes},
        {"boxes": boxes, "labels": labels},
        batch_size=4,
        epochs=1,
        verbose=0,
    )
    restored = run_model_saving_test(m, images, tmp_path, atol=1e-5, rtol=1e-5)
    assert restored.num_classes == 5 and restored.hidden_units == 16
    assert restored.augmenter.get_config()["flip_probability"] == 0.3
    expected = m(images, training=False)
    serve = load_serving(export_detector(m, tmp_path / "savedmodel"))
    served = serve(images)
    np.testing.assert_allclose(np.asarray(served["boxes"]), expected["boxes"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(served["class_probs"]),
        keras.ops.softmax(expected["class_logits"], axis=-1),
        rtol=1e-5,
        atol=1e-5,
    )


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        BoxRegressor(tiny_backbone(), num_classes=0)
    with pytest.raises(ValueError, match="dropout"):
        BoxRegressor(tiny_backbone(), num_classes=3, dropout=1.0)


def test_compile_refuses_loss_weights_and_weighted_metrics_instead_of_dropping_them():
    # compute_loss and compute_metrics are the model's own, so Keras would ignore both.
    m = model()
    with pytest.raises(
        ValueError, match=r"Received: loss_weights=\{'boxes': 2.0\}, weighted_metrics=None"
    ):
        m.compile(loss_weights={"boxes": 2.0})
    with pytest.raises(
        ValueError, match=r"Received: loss_weights=None, weighted_metrics=\['mae'\]"
    ):
        m.compile(weighted_metrics=["mae"])


def test_augmenter_is_default_or_none_and_round_trips():
    default = BoxRegressor(tiny_backbone(width=4), num_classes=3)
    assert isinstance(default.augmenter, BoxAugmenter)
    assert all(isinstance(copy.augmenter, BoxAugmenter) for copy in run_serialization_test(default))
    bare = BoxRegressor(tiny_backbone(width=4), num_classes=3, augmenter=None)
    assert all(copy.augmenter is None for copy in run_serialization_test(bare))
    # With no augmenter, box inputs pass through unchanged even in training.
    images, boxes, _ = data(4)
    out = bare({"images": images, "boxes": boxes}, training=True)
    np.testing.assert_allclose(np.asarray(out["target_boxes"]), boxes)
    with pytest.raises(ValueError, match="Received: augmenter='none'"):
        BoxRegressor(tiny_backbone(width=4), num_classes=3, augmenter="none")


@pytest.mark.parametrize("head", ["pooled", "spatial"])
def test_head_on_backbone_features_is_what_call_returns(head):
    keras.utils.set_random_seed(0)
    m = BoxRegressor(
        tiny_backbone(width=4), num_classes=3, head=head, augmenter=None, hidden_units=8
    )
    images, _, _ = data(4)
    out = m(images, training=False)
    boxes, logits = m.head(m.backbone(images, training=False), training=False)
    np.testing.assert_allclose(np.asarray(boxes), np.asarray(out["boxes"]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(out["class_logits"]), atol=1e-6)
    # The size score Grad-CAM explains comes with the same boxes and logits.
    with_score = m.head(m.backbone(images, training=False), training=False, return_size_score=True)
    np.testing.assert_allclose(np.asarray(with_score[0]), np.asarray(out["boxes"]), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(with_score[1]), np.asarray(out["class_logits"]), atol=1e-6
    )
    assert tuple(with_score[2].shape) == (4,)
