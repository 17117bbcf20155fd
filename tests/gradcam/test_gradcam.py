import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from ssl_keras.backbone import make_backbone, tiny_backbone
from ssl_keras.localization.box_regressor import BoxRegressor
from ssl_keras.gradcam.gradcam import (
    GradCAM,
    GradCAMError,
    feature_geometry,
    feature_layer_candidates,
    gradcam,
    gradcam_grid,
    heatmap_to_original,
    overlay,
    run_gradcam,
)

COLORS = np.array([[255, 40, 40], [40, 255, 40], [40, 40, 255]], "float32")


def one_square_images(n, *, size=48, seed=0):
    """Black images with one coloured square at a random place; the class is its colour."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), "float32")
    boxes = np.zeros((n, 4), "float32")
    labels = rng.integers(0, len(COLORS), n).astype("int32")
    for i in range(n):
        side = int(rng.integers(10, 15))
        y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        images[i, y0 : y0 + side, x0 : x0 + side] = COLORS[labels[i]]
        boxes[i] = np.array([y0, x0, y0 + side, x0 + side]) / size
    return images, boxes, labels


def plain_backbone(width=8):
    """tiny_backbone without batch norm: a black background then gives exactly zero features."""
    inputs = keras.Input((None, None, 3), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i, channels in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(
            channels,
            3,
            strides=2,
            padding="same",
            use_bias=False,
            activation="relu",
            name=f"conv{i}",
        )(x)
    return keras.Model(
        inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name="plain_backbone"
    )


def box_mass_ratio(heatmaps, boxes):
    """Per image: share of the heatmap inside the box divided by the box's share of the image."""
    size = heatmaps.shape[1]
    ratios = []
    for heatmap, box in zip(heatmaps, boxes):
        y0, x0, y1, x1 = np.round(box * size).astype(int)
        inside = heatmap[y0:y1, x0:x1].sum() / max(float(heatmap.sum()), 1e-12)
        ratios.append(inside / ((y1 - y0) * (x1 - x0) / size**2))
    return np.asarray(ratios)


def small_regressor(backbone, num_classes=3, hidden_units=16):
    keras.utils.set_random_seed(0)
    return BoxRegressor(
        backbone, num_classes=num_classes, augmenter=None, hidden_units=hidden_units, dropout=0.0
    )


def test_heatmaps_have_image_shape_and_lie_in_unit_range():
    model = small_regressor(tiny_backbone(width=4))
    images = np.random.default_rng(0).uniform(0, 255, (3, 40, 56, 3)).astype("float32")
    heatmaps = gradcam(model, images)
    assert heatmaps.shape == (3, 40, 56) and heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    for heatmap in heatmaps:  # each non-empty map is scaled to a maximum of exactly 1
        assert heatmap.max() == 0.0 or np.isclose(heatmap.max(), 1.0, atol=1e-3)
    assert gradcam(model, images, target="box", upsample=False).shape == (3, 5, 7)
    # A black image gives no positive evidence: the map stays zero, not NaN.
    result = GradCAM(model).explain(np.zeros((1, 32, 32, 3), "float32"), class_index=0)
    assert np.isfinite(result["heatmaps"]).all()


def test_matches_the_closed_form_for_a_linear_head():
    # With no hidden layer, logit_c = sum_k W[k, c] * mean_ij A_k + b_c, so alpha_k = W[k, c] / (h w)
    # and Grad-CAM is ReLU(sum_k W[k, c] A_k) up to a positive scale; the box target uses
    # the height and width columns of the box head.
    backbone = tiny_backbone(width=4)
    model = small_regressor(backbone, hidden_units=0)
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model(images)
    feature_map = keras.ops.convert_to_numpy(
        keras.Model(backbone.input, backbone.get_layer("relu2").output)(images, training=False)
    )
    logits = keras.ops.convert_to_numpy(model(images, training=False)["class_logits"])

    def normalized(maps):
        maps = np.maximum(maps, 0.0)
        peak = maps.max(axis=(1, 2), keepdims=True)
        return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0)

    class_kernel = keras.ops.convert_to_numpy(model.head.class_output.kernel)
    predicted = logits.argmax(-1)
    expected = normalized(np.einsum("nhwk,kn->nhw", feature_map, class_kernel[:, predicted]))
    result = GradCAM(model, layer_name="relu2").explain(images, upsample=False)
    np.testing.assert_array_equal(result["class_index"], predicted)
    np.testing.assert_allclose(result["heatmaps"], expected, atol=1e-5)

    expected = normalized(np.einsum("nhwk,k->nhw", feature_map, class_kernel[:, 2]))
    np.testing.assert_allclose(
        gradcam(model, images, class_index=2, upsample=False), expected, atol=1e-5
    )

    box_kernel = keras.ops.convert_to_numpy(model.head.box_output.kernel)
    expected = normalized(
        np.einsum("nhwk,k->nhw", feature_map, box_kernel[:, 2] + box_kernel[:, 3])
    )
    np.testing.assert_allclose(
        gradcam(model, images, target="box", upsample=False), expected, atol=1e-5
    )
    backbone.trainable = False  # a frozen backbone (no watched variables) gives the same maps
    np.testing.assert_allclose(
        gradcam(model, images, target="box", upsample=False), expected, atol=1e-5
    )


def test_spatial_head_box_target_is_the_gradient_of_the_predicted_size():
    # The spatial head's box evidence is the predicted height + width; Grad-CAM weights each
    # channel of the map by the mean gradient of it. Recomputed here on the head alone.
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = BoxRegressor(
        tiny_backbone(width=4),
        num_classes=3,
        head="spatial",
        augmenter=None,
        dropout=0.0,
        spatial_channels=4,
        hidden_units=8,
    )
    images = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model(images)
    result = GradCAM(model).explain(images, target="box", upsample=False)
    feature_map = tf.constant(
        np.asarray(model.backbone(images))
    )  # [2, 4, 4, 16], the automatic layer
    with tf.GradientTape() as tape:
        tape.watch(feature_map)
        boxes, _ = model.head(feature_map, training=False)
        evidence = tf.reduce_sum((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]))
    grads = tape.gradient(evidence, feature_map).numpy()
    cam = np.maximum(np.einsum("nhwc,nc->nhw", feature_map.numpy(), grads.mean(axis=(1, 2))), 0.0)
    expected = cam / cam.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(result["heatmaps"], expected, atol=1e-5)
    np.testing.assert_allclose(result["boxes"], np.asarray(model(images)["boxes"]), atol=1e-6)


@pytest.mark.large
def test_heatmap_of_a_trained_model_falls_on_the_object():
    # Trained for ~50 steps to tell the square's colour; the square's place varies, so only a
    # correctly computed and aligned map can follow it (flipping the maps drops the ratio to ~0.5).
    # The backbone has no batch norm: with BN a black background gets constant non-zero features,
    # and Grad-CAM of a model trained this briefly then often rests on the background ("no red
    # here" evidence), a property of Grad-CAM rather than of this code.
    images, boxes, labels = one_square_images(512, seed=0)
    model = small_regressor(plain_backbone(), hidden_units=32)
    model.box_weight = 0.0
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(
        images, {"boxes": boxes, "labels": labels}, batch_size=32, epochs=3, verbose=0
    )
    assert history.history["top1"][-1] > 0.9

    test_images, test_boxes, test_labels = one_square_images(48, seed=1)
    result = GradCAM(model).explain(test_images)
    assert result["layer"] == "conv2"
    assert (result["class_index"] == test_labels).mean() > 0.9
    ratio = box_mass_ratio(result["heatmaps"], test_boxes)
    assert ratio.mean() > 3.0, ratio
    assert box_mass_ratio(result["heatmaps"][:, ::-1, ::-1], test_boxes).mean() < 1.5
    # Placing cells at their receptive-field centres beats a plain resize (3.5 px up-left here).
    plain = GradCAM(model).explain(test_images, align=False)["heatmaps"]
    assert ratio.mean() > box_mass_ratio(plain, test_boxes).mean() + 0.5


def receptive_field_centres(feature_model, image_hw):
    """Centre of each cell's gradient support in the image, for cells whose support stays inside."""
    import tensorflow as tf

    images = tf.convert_to_tensor(
        np.random.default_rng(0).uniform(0, 255, (1, *image_hw, 3)).astype("float32")
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        feature_map = feature_model(images, training=False)[0]
        cells = {
            (i, j): tf.reduce_sum(feature_map[0, i, j])
            for i in range(feature_map.shape[1])
            for j in range(feature_map.shape[2])
        }
    centres = {}
    for cell, score in cells.items():
        support = np.abs(tape.gradient(score, images)[0].numpy()).sum(-1) > 0
        rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
        if (
            rows[0] > 0
            and cols[0] > 0
            and rows[-1] < image_hw[0] - 1
            and cols[-1] < image_hw[1] - 1
        ):
            centres[cell] = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2)
    return centres


@pytest.mark.parametrize("image_hw", [(48, 48), (50, 37)])
def test_feature_geometry_matches_the_receptive_fields(image_hw):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.ZeroPadding2D(((0, 1), (2, 1)))(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid")(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Conv2D(4, 3, padding="valid", dilation_rate=2)(x)
    x = keras.layers.DepthwiseConv2D(4, strides=2, padding="same")(x)
    x = keras.layers.Activation("relu", name="last")(x)
    inner = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="odd_paddings")
    for backbone in (tiny_backbone(width=4), inner):
        cam = GradCAM(small_regressor(backbone))
        geometry = feature_geometry(cam.feature_model.outputs[0], image_hw)
        centres = receptive_field_centres(cam.feature_model, image_hw)
        assert len(centres) >= 2
        for (i, j), centre in centres.items():
            expected = (
                geometry["stride"][0] * i + geometry["offset"][0],
                geometry["stride"][1] * j + geometry["offset"][1],
            )
            assert centre == pytest.approx(expected), (backbone.name, (i, j))
    geometry = feature_geometry(
        GradCAM(small_regressor(tiny_backbone(width=4))).feature_model.outputs[0], (48, 48)
    )
    assert geometry == {"stride": (8, 8), "offset": (7.0, 7.0), "size": (6, 6)}


def test_nested_and_wrapped_backbones_give_the_same_maps():
    inner = tiny_backbone(width=4)
    inputs = keras.Input((None, None, 3))
    wrapped = keras.Model(
        inputs, inner(keras.layers.Rescaling(1.0, name="identity")(inputs)), name="wrapper"
    )
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model = small_regressor(inner)
    model(images)
    wrapped_model = BoxRegressor(
        wrapped, num_classes=3, augmenter=None, hidden_units=16, dropout=0.0
    )
    wrapped_model(images)
    for a, b in zip(
        (wrapped_model.head.hidden, wrapped_model.head.class_output, wrapped_model.head.box_output),
        (model.head.hidden, model.head.class_output, model.head.box_output),
    ):
        a.set_weights(b.get_weights())
    cam = GradCAM(wrapped_model)
    assert cam.layer_name == "tiny_backbone/relu2"
    np.testing.assert_allclose(cam(images), gradcam(model, images), atol=1e-5)
    assert GradCAM(wrapped_model, layer_name="relu1").layer_name == "tiny_backbone/relu1"


@pytest.mark.large
def test_efficientnet_backbone_uses_top_activation():
    backbone = make_backbone("EfficientNetB0")
    assert feature_layer_candidates(backbone)[-1] == "top_activation"
    model = small_regressor(backbone, num_classes=4)
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    result = GradCAM(model).explain(images)
    assert result["layer"] == "top_activation"
    # Five TF-padded stride-2 stages: cell i is centred on pixel 32 i + 31.
    assert result["geometry"] == {"stride": (32, 32), "offset": (31.0, 31.0), "size": (2, 2)}
    assert result["heatmaps"].shape == (2, 64, 64)
    assert (
        np.isfinite(result["heatmaps"]).all()
        and 0.0 <= result["heatmaps"].min() <= result["heatmaps"].max() <= 1.0
    )


def test_unknown_layer_lists_the_candidates():
    model = small_regressor(tiny_backbone(width=4))
    with pytest.raises(GradCAMError, match="relu2") as error:
        GradCAM(model, layer_name="nope")
    assert "nope" in str(error.value) and "conv0" in str(error.value)
    with pytest.raises(ValueError, match="pool"):  # the pooled output is not a feature map
        GradCAM(model, layer_name="pool")
    with pytest.raises(GradCAMError, match="target"):
        gradcam(model, np.zeros((1, 32, 32, 3), "float32"), target="boxes")
    with pytest.raises(GradCAMError, match="class_index"):
        gradcam(model, np.zeros((1, 32, 32, 3), "float32"), class_index=7)


def test_overlay_and_heatmap_mapping():
    image = np.full((20, 30, 3), 100, "uint8")
    heatmap = np.zeros((10, 10), "float32")
    heatmap[:, 5:] = 1.0
    out = overlay(image, heatmap, alpha=0.5)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    # jet: 0 is dark blue, 1 is dark red.
    assert out[10, 2, 2] > out[10, 2, 0] and out[10, 28, 0] > out[10, 28, 2]
    np.testing.assert_array_equal(overlay(image, heatmap, alpha=0.0), image)
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heatmap, alpha=1.5)
    # letterbox: a 16-pixel-high band in a 32 x 32 input is a 20 x 40 image's whole frame.
    letterboxed = np.zeros((32, 32), "float32")
    letterboxed[8:24] = 1.0
    back = heatmap_to_original(letterboxed, (20, 40), 32, "letterbox")
    assert back.shape == (20, 40) and back.min() > 0.99


def test_grid_has_one_tile_per_cell_and_is_saved(tmp_path):
    tile = np.zeros((16, 16, 3), "uint8")
    path = tmp_path / "grid.png"
    grid = gradcam_grid(
        [[tile, tile, tile], [tile, tile, tile]],
        titles=[["a", "b", "c"], ["d", "e", "f"]],
        column_titles=["image", "m0", "m1"],
        path=str(path),
        tile_inches=1.0,
        dpi=50,
    )
    assert grid.dtype == np.uint8 and grid.shape[1] == 150 and grid.shape[0] > 100
    assert np.asarray(Image.open(path)).shape == grid.shape
    with pytest.raises(ValueError, match="titles"):
        gradcam_grid([[tile, tile]], titles=[["a"]])


def _fake_run(run_dir, model, *, image_size, resize):
    os.makedirs(run_dir)
    model.save(os.path.join(run_dir, "model.keras"))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(
            {
                "options": {"image_size": image_size, "resize": resize},
                "resolved": {"class_names": ["red", "green", "blue"]},
            },
            f,
        )


@pytest.mark.large
def test_run_gradcam_writes_overlays_and_grid_and_never_overwrites(tmp_path):
    images = np.random.default_rng(4).uniform(0, 255, (2, 24, 40, 3)).astype("uint8")
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"photo{i}.png"))
        Image.fromarray(image).save(paths[-1])
    model = small_regressor(tiny_backbone(width=4))
    model(np.zeros((1, 32, 32, 3), "float32"))
    _fake_run(tmp_path / "run_a", model, image_size=32, resize="stretch")
    _fake_run(tmp_path / "run_b", model, image_size=48, resize="letterbox")
    out = tmp_path / "cams"
    result = run_gradcam([tmp_path / "run_a", tmp_path / "run_b"], paths, out)
    names = sorted(os.listdir(out))
    assert names == [
        "gradcam_grid.png",
        "gradcam_photo0_0.png",
        "gradcam_photo0_1.png",
        "gradcam_photo1_0.png",
        "gradcam_photo1_1.png",
    ]
    assert np.asarray(Image.open(out / "gradcam_photo1_1.png")).shape == (
        24,
        40,
        3,
    )  # original frame
    assert result["layers"] == ["relu2", "relu2"]
    assert {row["class"] for row in result["overlays"]} <= {"red", "green", "blue"}
    with pytest.raises(FileExistsError, match="gradcam_photo0_0.png"):
        run_gradcam([tmp_path / "run_a"], paths, out)
    with pytest.raises(FileNotFoundError, match="is missing"):
        run_gradcam([tmp_path / "nothing"], paths, tmp_path / "other")
