import keras
import numpy as np
import pytest
from stand_ins import assert_runs_on_backend

from ssl_keras.localization.box_augmenter import BoxAugmenter
from test_case import run_model_saving_test, run_serialization_test

requires_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="needs the TensorFlow backend"
)

NO_JITTER = dict(scale_range=(1.0, 1.0), translate_fraction=0.0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def random_images(n=4, height=32, width=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, height, width, 3)).astype("float32")


def random_boxes(rng, n, min_size=0.05):
    size = rng.uniform(min_size, 1.0, (n, 2))
    low = rng.uniform(0.0, 1.0, (n, 2)) * (1.0 - size)
    return np.concatenate([low, low + size], axis=1).astype("float32")


def edge_and_random_boxes(n=200, seed=0):
    rng = np.random.default_rng(seed)
    special = np.array(
        [
            [0.0, 0.0, 1.0, 1.0],  # the whole image
            [0.01, 0.0, 0.99, 0.98],  # nearly the whole image
            [0.0, 0.0, 0.1, 0.1],  # top-left corner
            [0.9, 0.9, 1.0, 1.0],  # bottom-right corner
            [0.0, 0.4, 1.0, 0.5],  # full height, thin
            [0.4, 0.0, 0.45, 1.0],  # full width, thin
            [0.0, 0.0, 0.6, 1.0],  # top edge, full width
            [0.5, 0.5, 0.5, 0.5],  # a point
        ],
        dtype="float32",
    )
    return np.concatenate([special, random_boxes(rng, max(n - len(special), 0))])[:n]


def rectangle_images(boxes, height, width):
    """Black images with a white rectangle covering each box (pixel-aligned boxes)."""
    images = np.zeros((len(boxes), height, width, 3), dtype="float32")
    for image, (y0, x0, y1, x1) in zip(images, boxes):
        image[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)] = 255
    return images


def white_region_box(image, threshold=127.5):
    """Pixel extent `(top, left, bottom, right)` (exclusive ends) of the bright pixels."""
    rows, columns = np.nonzero(image[..., 0] > threshold)
    return np.array([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1])


def unclipped_boxes(boxes, transformation):
    """The box mapping of the layer's docstring, without the final clip to [0, 1]."""
    flip = to_numpy(transformation["flip"])[:, None]
    scale = to_numpy(transformation["scale"])[:, None]
    shift = to_numpy(transformation["translate"])
    xmin = np.where(flip > 0.5, 1.0 - boxes[:, 3:4], boxes[:, 1:2])
    xmax = np.where(flip > 0.5, 1.0 - boxes[:, 1:2], boxes[:, 3:4])
    low = np.concatenate([boxes[:, 0:1], xmin], axis=1)
    high = np.concatenate([boxes[:, 2:3], xmax], axis=1)
    return np.concatenate(
        [scale * (low - 0.5) + 0.5 + shift, scale * (high - 0.5) + 0.5 + shift], axis=1
    )


def test_flip_only_mirrors_image_and_box_exactly():
    images = random_images(3, 24, 40)
    boxes = np.array(
        [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.3], [0.25, 0.7, 0.75, 1.0]], dtype="float32"
    )
    out_images, out_boxes = BoxAugmenter(flip_probability=1.0, **NO_JITTER, seed=0)(images, boxes)
    np.testing.assert_allclose(to_numpy(out_images), images[:, :, ::-1], atol=1e-3)
    expected = np.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], axis=1)
    np.testing.assert_allclose(to_numpy(out_boxes), expected, atol=1e-6)


def test_everything_off_is_identity():
    images = random_images(3)
    boxes = edge_and_random_boxes(3)
    out_images, out_boxes = BoxAugmenter(flip_probability=0.0, **NO_JITTER)(images, boxes)
    np.testing.assert_allclose(to_numpy(out_images), images, atol=1e-3)
    np.testing.assert_allclose(to_numpy(out_boxes), boxes, atol=1e-6)


def test_training_false_is_identity():
    images = random_images(2)
    boxes = edge_and_random_boxes(2)
    out_images, out_boxes = BoxAugmenter(seed=0)(images, boxes, training=False)
    np.testing.assert_array_equal(to_numpy(out_images), images)
    np.testing.assert_array_equal(to_numpy(out_boxes), boxes)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=1),
        dict(scale_range=(0.5, 2.0), translate_fraction=0.3, seed=2),
        dict(scale_range=(1.5, 3.0), translate_fraction=0.0, seed=3),  # strong zoom-in
    ],
)
def test_jittered_boxes_stay_fully_inside_the_image(kwargs):
    augmenter = BoxAugmenter(**kwargs)
    boxes = edge_and_random_boxes(200)
    transformation = augmenter.get_random_transformation(keras.ops.convert_to_tensor(boxes))
    # Before the safety clip the mapped boxes must already lie inside [0, 1].
    mapped = unclipped_boxes(boxes, transformation)
    assert mapped.min() >= -1e-5 and mapped.max() <= 1.0 + 1e-5
    out = to_numpy(augmenter.transform_boxes(keras.ops.convert_to_tensor(boxes), transformation))
    np.testing.assert_allclose(out, mapped, atol=1e-5)
    # Zoom is isotropic: both sides scale by the same factor, within the range (or capped
    # below it, but never under 1, for a zoom-in that would cut the box).
    scale = to_numpy(transformation["scale"])
    sizes = boxes[:, 2:] - boxes[:, :2]
    out_sizes = out[:, 2:] - out[:, :2]
    np.testing.assert_allclose(out_sizes, sizes * scale[:, None], atol=1e-5)
    low, high = augmenter.scale_range
    assert np.all(scale <= high + 1e-6)
    assert np.all((scale >= low - 1e-6) | (scale >= 1.0 - 1e-6))
    shift = to_numpy(transformation["translate"])
    assert np.abs(shift).max() <= augmenter.translate_fraction + 1e-6


def test_jitter_covers_the_allowed_range():
    augmenter = BoxAugmenter(flip_probability=0.5, seed=4)
    boxes = np.tile([[0.4, 0.4, 0.6, 0.6]], (400, 1)).astype("float32")  # never constrained
    transformation = augmenter.get_random_transformation(keras.ops.convert_to_tensor(boxes))
    scale = to_numpy(transformation["scale"])
    shift = to_numpy(transformation["translate"])
    flip = to_numpy(transformation["flip"])
    assert 0.8 <= scale.min() < 0.82 and 1.18 < scale.max() <= 1.2
    assert -0.1 <= shift.min() < -0.095 and 0.095 < shift.max() <= 0.1
    assert 0.4 < flip.mean() < 0.6


def test_full_image_box_only_zooms_out():
    augmenter = BoxAugmenter(scale_range=(0.8, 1.2), seed=5)
    boxes = np.tile([[0.0, 0.0, 1.0, 1.0]], (100, 1)).astype("float32")
    transformation = augmenter.get_random_transformation(keras.ops.convert_to_tensor(boxes))
    scale = to_numpy(transformation["scale"])
    assert scale.max() <= 1.0 + 1e-6 and scale.min() < 0.85
    assert np.mean(scale == 1.0) > 0.3  # the zoom-ins are capped at 1


@pytest.mark.parametrize(
    "kwargs, seed",
    [
        (dict(), 6),
        (dict(scale_range=(0.5, 0.5), translate_fraction=0.0), 7),  # zoom out
        (dict(scale_range=(1.6, 1.6), translate_fraction=0.2), 8),  # capped zoom-in
        (dict(scale_range=(0.7, 1.4), translate_fraction=0.25), 9),
    ],
)
def test_pixels_follow_the_box(kwargs, seed):
    height, width = 48, 64
    rng = np.random.default_rng(seed)
    # Pixel-aligned boxes: random ones, plus boxes touching edges and a nearly full one.
    pixel_boxes = np.concatenate(
        [
            [[0, 0, 12, 20], [36, 44, 48, 64], [2, 0, 46, 64]],
            np.sort(rng.integers(0, [height, width], (9, 2, 2)), axis=1)
            .transpose(0, 2, 1)
            .reshape(9, 4),
        ]
    )
    pixel_boxes[:, 2:] = np.maximum(pixel_boxes[:, 2:], pixel_boxes[:, :2] + 4)
    pixel_boxes[:, 2] = np.minimum(pixel_boxes[:, 2], height)
    pixel_boxes[:, 3] = np.minimum(pixel_boxes[:, 3], width)
    pixel_boxes[:, 0] = np.minimum(pixel_boxes[:, 0], pixel_boxes[:, 2] - 4)
    pixel_boxes[:, 1] = np.minimum(pixel_boxes[:, 1], pixel_boxes[:, 3] - 4)
    boxes = (pixel_boxes / [height, width, height, width]).astype("float32")
    images = rectangle_images(boxes, height, width)
    augmenter = BoxAugmenter(**kwargs, fill_value=0.0, seed=seed)
    out_images, out_boxes = augmenter(images, boxes)
    out_images, out_boxes = to_numpy(out_images), to_numpy(out_boxes)
    for image, box in zip(out_images, out_boxes):
        expected = box * [height, width, height, width]
        np.testing.assert_allclose(white_region_box(image), expected, atol=2.0)


def test_fill_value_fills_the_border_of_a_zoom_out():
    images = np.full((2, 32, 32, 3), 255.0, dtype="float32")
    boxes = np.tile([[0.4, 0.4, 0.6, 0.6]], (2, 1)).astype("float32")
    augmenter = BoxAugmenter(
        flip_probability=0.0, scale_range=(0.5, 0.5), translate_fraction=0.0, fill_value=30.0
    )
    out_images, out_boxes = augmenter(images, boxes)
    out_images = to_numpy(out_images)
    np.testing.assert_allclose(out_images[:, :7], 30.0, atol=1e-3)
    np.testing.assert_allclose(out_images[:, 9:23, 9:23], 255.0, atol=1e-3)
    np.testing.assert_allclose(to_numpy(out_boxes), [[0.45, 0.45, 0.55, 0.55]] * 2, atol=1e-6)


def test_matches_keras_affine_transform():
    augmenter = BoxAugmenter(scale_range=(0.6, 1.5), translate_fraction=0.3, seed=10)
    images = random_images(6, 24, 40)
    boxes = edge_and_random_boxes(6, seed=10)
    transformation = augmenter.get_random_transformation(keras.ops.convert_to_tensor(boxes))
    expected = keras.ops.image.affine_transform(
        images,
        augmenter.get_affine_transforms(transformation, 24, 40),
        interpolation="bilinear",
        fill_mode="constant",
        fill_value=augmenter.fill_value,
        data_format="channels_last",
    )
    actual = augmenter.transform_images(keras.ops.convert_to_tensor(images), transformation)
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), atol=1e-3)


def test_randomness_is_per_image_and_per_call():
    augmenter = BoxAugmenter(seed=11)
    images = np.repeat(random_images(1), 6, axis=0)
    boxes = np.tile([[0.3, 0.2, 0.6, 0.7]], (6, 1)).astype("float32")
    first_images, first_boxes = (to_numpy(x) for x in augmenter(images, boxes))
    second_images, second_boxes = (to_numpy(x) for x in augmenter(images, boxes))
    assert len({tuple(np.round(b, 5)) for b in first_boxes}) == 6
    assert np.abs(first_boxes - second_boxes).max(axis=1).min() > 1e-4
    assert np.abs(first_images[0] - first_images[1]).mean() > 1.0


def test_same_seed_gives_same_result():
    images = random_images(3)
    boxes = edge_and_random_boxes(3)
    first = [to_numpy(x) for x in BoxAugmenter(seed=12)(images, boxes)]
    second = [to_numpy(x) for x in BoxAugmenter(seed=12)(images, boxes)]
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_single_unbatched_image():
    images = rectangle_images(np.array([[0.25, 0.25, 0.75, 0.5]]), 32, 32)
    out_image, out_box = BoxAugmenter(flip_probability=1.0, **NO_JITTER)(
        images[0], np.array([0.25, 0.25, 0.75, 0.5], dtype="float32")
    )
    assert tuple(out_image.shape) == (32, 32, 3) and tuple(out_box.shape) == (4,)
    np.testing.assert_allclose(to_numpy(out_box), [0.25, 0.5, 0.75, 0.75], atol=1e-6)
    np.testing.assert_allclose(to_numpy(out_image), images[0, :, ::-1], atol=1e-3)


def test_mixed_precision_keeps_float32_boxes():
    images = random_images(2)
    boxes = np.array([[0.1234567, 0.2345678, 0.3456789, 0.4567891]] * 2, dtype="float32")
    augmenter = BoxAugmenter(flip_probability=0.0, **NO_JITTER, dtype="mixed_bfloat16")
    out_images, out_boxes = augmenter(keras.ops.cast(images, "bfloat16"), boxes)
    assert keras.backend.standardize_dtype(out_images.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(out_boxes.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(out_boxes), boxes, atol=1e-7)


def test_symbolic_call():
    out_images, out_boxes = BoxAugmenter()(keras.Input((None, None, 3)), keras.Input((4,)))
    assert tuple(out_images.shape) == (None, None, None, 3)
    assert tuple(out_boxes.shape) == (None, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(flip_probability=1.5), "Received: flip_probability=1.5"),
        (dict(scale_range=(1.2, 0.8)), r"Received: scale_range=\(1.2, 0.8\)"),
        (dict(scale_range=(0.0, 1.0)), r"Received: scale_range=\(0.0, 1.0\)"),
        (dict(scale_range=1.1), "Received: scale_range=1.1"),
        (dict(translate_fraction=-0.1), "Received: translate_fraction=-0.1"),
        (dict(translate_fraction=1.5), "Received: translate_fraction=1.5"),
        (dict(fill_value=300.0), "Received: fill_value=300.0"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message + "$"):
        BoxAugmenter(**kwargs)


NON_DEFAULT = dict(
    flip_probability=0.3,
    scale_range=(0.6, 1.4),
    translate_fraction=0.2,
    fill_value=0.0,
    seed=13,
)


def test_config_round_trip():
    _, revived = run_serialization_test(
        BoxAugmenter(**NON_DEFAULT, name="box_augment"), settings=NON_DEFAULT
    )
    assert revived.scale_range == (0.6, 1.4)


def test_keras_file_save_and_load(tmp_path):
    image_input = keras.Input((16, 16, 3))
    box_input = keras.Input((4,))
    images, boxes = BoxAugmenter(**NON_DEFAULT)(image_input, box_input)
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(images))
    outputs = keras.layers.Concatenate()([features, boxes])
    model = keras.Model([image_input, box_input], outputs)
    inputs = [random_images(2, 16, 16), edge_and_random_boxes(2)]
    loaded = run_model_saving_test(model, inputs, tmp_path, atol=1e-5, rtol=1e-7)
    (augmenter,) = [layer for layer in loaded.layers if isinstance(layer, BoxAugmenter)]
    assert augmenter.get_config()["scale_range"] == [0.6, 1.4]


@pytest.mark.large
@requires_tensorflow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_with_dynamic_shapes(jit_compile):
    import tensorflow as tf

    augmenter = BoxAugmenter(seed=14)
    augment = tf.function(
        lambda images, boxes: augmenter(images, boxes),
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
        ],
        jit_compile=jit_compile,
        autograph=False,
    )
    for n, height, width in [(3, 32, 32), (5, 24, 40)]:
        boxes = edge_and_random_boxes(n, seed=n)
        images = rectangle_images(boxes, height, width)
        out_images, out_boxes = (x.numpy() for x in augment(images, boxes))
        assert out_images.shape == images.shape and out_boxes.shape == boxes.shape
        assert out_boxes.min() >= 0.0 and out_boxes.max() <= 1.0
        assert np.abs(out_boxes - boxes).max() > 0.01


class AugmentedBoxRegressor(keras.Model):
    """Augments images and target boxes inside the training step only."""

    def __init__(self):
        super().__init__()
        self.augmenter = BoxAugmenter(seed=15)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(4, activation="sigmoid")
        self.seen_boxes = keras.Variable(np.zeros((4, 4)), trainable=False, dtype="float32")

    def call(self, images, training=False):
        return self.dense(self.pool(images / 255.0))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training:
            # Re-run the forward pass on the augmented pair, as the detect model does.
            x, y = self.augmenter(x, y, training=True)
            self.seen_boxes.assign(y)
            y_pred = self(x, training=True)
        return keras.ops.mean(keras.ops.abs(y - y_pred))


@pytest.mark.large
@pytest.mark.parametrize("jit_compile", [False, True])
def test_inside_compiled_fit(jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("torch has no XLA compilation")
    boxes = edge_and_random_boxes(4, seed=16)
    images = rectangle_images(boxes, 16, 16)
    model = AugmentedBoxRegressor()
    model.compile(optimizer="adam", jit_compile=jit_compile)
    history = model.fit(images, boxes, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    seen = to_numpy(model.seen_boxes)
    assert np.abs(seen - boxes).max() > 0.01  # the targets were augmented
    assert seen.min() >= 0.0 and seen.max() <= 1.0
    np.testing.assert_allclose(
        model.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


_OTHER_BACKEND_SCRIPT = """
    import numpy as np
    from ssl_keras.localization.box_augmenter import BoxAugmenter

    height, width = 32, 48
    boxes = np.array([[0.25, 0.125, 0.75, 0.5]] * 4, dtype="float32")
    images = np.zeros((4, height, width, 3), dtype="float32")
    images[:, 8:24, 6:24] = 255.0
    augmenter = BoxAugmenter(scale_range=(0.7, 1.3), translate_fraction=0.2, fill_value=0.0,
                             seed=0)
    out_images, out_boxes = augmenter(images, boxes)
    out_images = keras.ops.convert_to_numpy(out_images)
    out_boxes = keras.ops.convert_to_numpy(out_boxes)
    assert out_images.shape == images.shape and out_boxes.shape == boxes.shape
    assert np.abs(out_boxes[0] - out_boxes[1]).max() > 1e-4
    for image, box in zip(out_images, out_boxes):
        rows, columns = np.nonzero(image[..., 0] > 127.5)
        found = np.array([rows.min(), columns.min(), rows.max() + 1, columns.max() + 1])
        assert np.abs(found - box * [height, width, height, width]).max() <= 2.0, (found, box)
    """


@pytest.mark.large
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends(backend):
    assert_runs_on_backend(backend, _OTHER_BACKEND_SCRIPT)
