"""Tests of the box heads: the soft-argmax box against a NumPy transcription, sizes, config."""

import numpy as np
import pytest

from ssl_keras.backbone import feature_map_backbone, tiny_backbone
from ssl_keras.localization.box_heads import PooledBoxHead, SpatialBoxHead, make_head
from ssl_keras.localization.box_regressor import BoxRegressor
from test_case import run_model_saving_test, run_serialization_test


def numpy_spatial_box(head, feature_map):
    """The documented formula, written out cell by cell."""
    reduce_kernel, reduce_bias = [np.asarray(w) for w in head.reduce.get_weights()]
    score_kernel, score_bias = [np.asarray(w) for w in head.cell_scores.get_weights()]
    side_kernel, side_bias = [np.asarray(w) for w in head.cell_sides.get_weights()]
    n, h, w, _ = feature_map.shape
    out = np.zeros((n, 4))
    for i in range(n):
        scores, boxes = [], []
        for y in range(h):
            for x in range(w):
                r = np.maximum(feature_map[i, y, x] @ reduce_kernel[0, 0] + reduce_bias, 0.0)
                scores.append(r @ score_kernel[0, 0, :, 0] + score_bias[0])
                top, left, bottom, right = 1.0 / (
                    1.0 + np.exp(-(r @ side_kernel[0, 0] + side_bias))
                )
                cy, cx = (y + 0.5) / h, (x + 0.5) / w
                boxes.append(
                    [cy * (1 - top), cx * (1 - left), cy + (1 - cy) * bottom, cx + (1 - cx) * right]
                )
        weights = np.exp(np.asarray(scores) - max(scores))
        weights /= weights.sum()
        out[i] = (weights[:, None] * np.asarray(boxes)).sum(axis=0)
    return out


def test_spatial_box_matches_numpy_formula():
    rng = np.random.default_rng(0)
    feature_map = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    head = SpatialBoxHead(num_classes=3, channels=6, hidden_units=0, dropout=0.0)
    boxes, logits = head(feature_map)
    np.testing.assert_allclose(np.asarray(boxes), numpy_spatial_box(head, feature_map), atol=1e-5)
    assert tuple(logits.shape) == (2, 3)


def test_spatial_box_follows_the_dominant_cell():
    # One cell's score dominates: the box is that cell's own box, so it moves with the cell.
    head = SpatialBoxHead(num_classes=2, channels=1, hidden_units=0, dropout=0.0)
    feature_map = np.zeros((1, 4, 4, 1), "float32")
    feature_map[0, 3, 0, 0] = 1.0  # bottom-left cell, centre (0.875, 0.125)
    head(feature_map)
    head.reduce.set_weights([np.ones((1, 1, 1, 1), "float32"), np.zeros(1, "float32")])
    head.cell_scores.set_weights([np.full((1, 1, 1, 1), 50.0, "float32"), np.zeros(1, "float32")])
    # Reaches 0 (sigmoid(-20)) upwards and leftwards, 1 (sigmoid(20)) down and right.
    head.cell_sides.set_weights(
        [np.zeros((1, 1, 1, 4), "float32"), np.array([-20, -20, 20, 20], "float32")]
    )
    box = np.asarray(head(feature_map)[0])[0]
    np.testing.assert_allclose(box, [0.875, 0.125, 1.0, 1.0], atol=1e-4)


def test_spatial_box_keeps_a_gradient_when_every_cell_reaches_the_borders():
    # The clipped formulation got stuck on the whole image: once every side passed the
    # border, clipping zeroed the gradient. Saturated reaches still leave one here.
    import tensorflow as tf

    head = SpatialBoxHead(num_classes=2, channels=2, hidden_units=0, dropout=0.0)
    feature_map = np.random.default_rng(0).normal(size=(1, 3, 3, 4)).astype("float32")
    head(feature_map)
    kernel, _ = head.cell_sides.get_weights()
    head.cell_sides.set_weights(
        [kernel, np.full(4, 4.0, "float32")]
    )  # every side ~98% of the way out
    with tf.GradientTape() as tape:
        box, _ = head(feature_map)
        area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    grads = tape.gradient(area, head.cell_sides.trainable_variables)
    assert float(np.asarray(box)[0, 2] - np.asarray(box)[0, 0]) > 0.95
    assert all(np.abs(np.asarray(g)).max() > 1e-4 for g in grads)


def test_spatial_head_works_at_any_feature_map_size():
    head = SpatialBoxHead(num_classes=4, channels=8)
    for size in (1, 2, 5, 7):
        boxes, logits = head(
            np.random.default_rng(size).normal(size=(3, size, size, 16)).astype("float32")
        )
        assert tuple(boxes.shape) == (3, 4) and tuple(logits.shape) == (3, 4)
        b = np.asarray(boxes)
        assert np.all((b >= 0) & (b <= 1))


def test_spatial_head_refuses_pooled_features():
    with pytest.raises(ValueError, match="feature map"):
        SpatialBoxHead(num_classes=2)(np.zeros((2, 8), "float32"))


def test_pooled_head_takes_vectors_and_maps_alike():
    head = PooledBoxHead(num_classes=3, hidden_units=4, dropout=0.0)
    feature_map = np.random.default_rng(1).normal(size=(2, 3, 3, 5)).astype("float32")
    from_map = head(feature_map)
    from_vector = head(feature_map.mean(axis=(1, 2)))
    for a, b in zip(from_map, from_vector):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("name", ["pooled", "spatial"])
def test_head_config_round_trip(name):
    head = make_head(name, num_classes=5, hidden_units=7, dropout=0.3, channels=9)
    run_serialization_test(head)
    with pytest.raises(ValueError, match="head"):
        make_head("dense", num_classes=5)


def call(model, images):
    return model(images)


def test_spatial_regressor_strips_pooling_and_round_trips(tmp_path):
    backbone = tiny_backbone(width=4)
    model = BoxRegressor(
        backbone, num_classes=3, head="spatial", augmenter=None, spatial_channels=5, hidden_units=8
    )
    assert len(model.backbone.outputs[0].shape) == 4
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    loaded = run_model_saving_test(model, images, tmp_path, call=call, atol=1e-6, rtol=1e-7)
    assert loaded.head_type == "spatial" and loaded.get_config()["spatial_channels"] == 5
    # A spatial model is not tied to the image size it was built with.
    assert tuple(loaded(np.zeros((1, 64, 48, 3), "float32"))["boxes"].shape) == (1, 4)


def test_cached_features_give_the_same_outputs_as_images():
    backbone = feature_map_backbone(tiny_backbone(width=4))
    model = BoxRegressor(backbone, num_classes=3, head="spatial", augmenter=None)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    from_images = model(images)
    from_features = model({"features": backbone(images)})
    np.testing.assert_allclose(
        np.asarray(from_images["boxes"]), np.asarray(from_features["boxes"]), atol=1e-6
    )


def test_class_weights_weight_the_cross_entropy():
    backbone = tiny_backbone(width=4)
    weights = [0.5, 2.0, 1.0]
    model = BoxRegressor(
        backbone, num_classes=3, augmenter=None, box_weight=0.0, class_weights=weights
    )
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 1, 2])
    y_pred = model(images)
    loss = float(
        model.compute_loss(
            y={"boxes": np.zeros((4, 4), "float32"), "labels": labels}, y_pred=y_pred
        )
    )
    logits = np.asarray(y_pred["class_logits"], "float64")
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = np.mean([-weights[c] * log_probs[i, c] for i, c in enumerate(labels)])
    assert loss == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        BoxRegressor(backbone, num_classes=3, class_weights=[1.0, 1.0])


def test_balanced_class_weights():
    from ssl_keras.localization.box_regressor import balanced_class_weights

    # 4 images of class 0, 1 of class 2, none of class 1: N / (K n_c) with K = 2 classes present.
    weights = balanced_class_weights([0, 0, 0, 0, 2], 3)
    np.testing.assert_allclose(weights, [5 / 8, 0.0, 5 / 2])
    assert np.mean([weights[c] for c in [0, 0, 0, 0, 2]]) == pytest.approx(1.0)


def test_compile_refuses_a_loss_or_metrics():
    model = BoxRegressor(tiny_backbone(width=4), num_classes=3, augmenter=None)
    with pytest.raises(ValueError, match="its own loss"):
        model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="Received: loss=None, metrics=\\['mae'\\]"):
        model.compile(metrics=["mae"])


def test_size_score_is_the_raw_size_of_the_pooled_head_and_the_box_size_of_the_spatial_head():
    features = np.random.default_rng(1).normal(size=(3, 2, 2, 6)).astype("float32")
    pooled = PooledBoxHead(num_classes=4, hidden_units=5, dropout=0.0)
    boxes, logits, score = pooled(features, return_size_score=True)
    box_raw, raw_logits = pooled.raw_outputs(features)
    # Pre-sigmoid height + width: it does not saturate as the box reaches the image's size.
    np.testing.assert_allclose(
        np.asarray(score), np.asarray(box_raw[:, 2] + box_raw[:, 3]), atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(logits), np.asarray(raw_logits), atol=1e-6)
    np.testing.assert_allclose(np.asarray(boxes), np.asarray(pooled(features)[0]), atol=1e-6)
    spatial = SpatialBoxHead(num_classes=4, channels=3, hidden_units=0, dropout=0.0)
    boxes, _, score = (np.asarray(t) for t in spatial(features, return_size_score=True))
    np.testing.assert_allclose(
        score, (boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]), atol=1e-6
    )
