import keras
import numpy as np
import pytest
from stand_ins import assert_runs_on_backend

from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter
from test_case import run_model_saving_test, run_serialization_test

requires_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="needs the TensorFlow backend"
)

# Every operation off, with a full-image square crop: the layer is the identity.
NO_OP = dict(
    crop_area_min=1.0,
    crop_area_max=1.0,
    crop_aspect_range=(1.0, 1.0),
    flip_probability=0.0,
    jitter_probability=0.0,
    grayscale_probability=0.0,
    blur_probability=0.0,
)


def only(**overrides):
    return SimCLRAugmenter(**{**NO_OP, **overrides}, seed=0)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def random_images(n=4, height=32, width=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, height, width, 3)).astype("float32")


def pairwise_mean_abs_diffs(images):
    n = len(images)
    return [np.abs(images[i] - images[j]).mean() for i in range(n) for j in range(i + 1, n)]


def test_identical_images_get_different_views():
    augmenter = SimCLRAugmenter(seed=1)
    images = np.repeat(random_images(1), 6, axis=0)
    first = to_numpy(augmenter(images))
    second = to_numpy(augmenter(images))
    assert min(pairwise_mean_abs_diffs(first)) > 1.0
    assert np.abs(first - second).mean(axis=(1, 2, 3)).min() > 1.0


def test_crop_window_is_drawn_per_image():
    # A single window per batch (keras.layers.RandomCrop) would give equal outputs.
    augmenter = only(crop_area_min=0.2, crop_area_max=0.5, crop_aspect_range=(0.75, 4 / 3))
    images = np.repeat(random_images(1), 6, axis=0)
    assert min(pairwise_mean_abs_diffs(to_numpy(augmenter(images)))) > 1.0


def test_shape_dtype_and_range_are_kept():
    images = random_images(3, 24, 40)
    images[0, 0, 0] = [0.0, 255.0, 255.0]
    outputs = SimCLRAugmenter(seed=2, jitter_strength=2.0)(images)
    assert tuple(outputs.shape) == (3, 24, 40, 3)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"
    outputs = to_numpy(outputs)
    assert outputs.min() >= 0.0 and outputs.max() <= 255.0


def test_single_unbatched_image():
    outputs = SimCLRAugmenter(seed=0)(random_images(1)[0])
    assert tuple(outputs.shape) == (32, 32, 3)


def test_bfloat16_policy_computes_in_float32_and_casts_back():
    outputs = SimCLRAugmenter(seed=0, dtype="mixed_bfloat16")(random_images(2))
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    outputs = to_numpy(keras.ops.cast(outputs, "float32"))
    assert outputs.min() >= 0.0 and outputs.max() <= 255.0


def test_training_false_is_identity():
    images = random_images(2)
    np.testing.assert_array_equal(to_numpy(SimCLRAugmenter()(images, training=False)), images)


def test_everything_off_is_identity():
    images = random_images(3)
    np.testing.assert_allclose(to_numpy(only()(images)), images, atol=1e-3)


def test_flip_only_mirrors_horizontally():
    images = random_images(3)
    np.testing.assert_allclose(
        to_numpy(only(flip_probability=1.0)(images)), images[:, :, ::-1], atol=1e-3
    )


def horizontal_ramps(n, height, width):
    ramp = np.broadcast_to(np.linspace(0.0, 255.0, width, dtype="float32"), (n, height, width))
    return np.repeat(ramp[..., None], 3, axis=-1)


@pytest.mark.parametrize("height, width", [(48, 48), (32, 48)])
def test_small_crop_area_magnifies(height, width):
    # On a horizontal ramp, a crop window of width w divides the slope by width / w.
    images = horizontal_ramps(4, height, width)
    area = 0.16
    outputs = to_numpy(only(crop_area_min=area, crop_area_max=area)(images))
    window_fraction = np.sqrt(area * height * width) / width
    slope_ratio = np.diff(outputs, axis=2).mean() / np.diff(images, axis=2).mean()
    np.testing.assert_allclose(slope_ratio, window_fraction, rtol=0.05)
    # The window lies inside the image, so each output spans that fraction of the ramp.
    spans = outputs.max(axis=(1, 2, 3)) - outputs.min(axis=(1, 2, 3))
    np.testing.assert_allclose(spans, window_fraction * 255.0 * (width - 1) / width, rtol=0.05)


def test_crop_falls_back_to_central_window():
    # A square window covering the whole of a 24 x 40 image never fits: the
    # fallback is the central 24 x 24 square.
    images = horizontal_ramps(3, 24, 40)
    outputs = to_numpy(only()(images))
    slope_ratio = np.diff(outputs, axis=2).mean() / np.diff(images, axis=2).mean()
    np.testing.assert_allclose(slope_ratio, 24 / 40, rtol=0.02)
    np.testing.assert_allclose(outputs.mean(axis=(1, 2, 3)), 127.5, atol=0.5)


def test_grayscale_only_gives_equal_channels():
    images = random_images(3)
    outputs = to_numpy(only(grayscale_probability=1.0)(images))
    np.testing.assert_allclose(outputs[..., 0], outputs[..., 1], atol=1e-3)
    np.testing.assert_allclose(outputs[..., 0], outputs[..., 2], atol=1e-3)
    luma = images @ np.array([0.299, 0.587, 0.114], dtype="float32")
    np.testing.assert_allclose(outputs[..., 0], luma, atol=1e-2)


def test_jitter_changes_colours_but_keeps_gray_images_gray():
    jitter = only(jitter_probability=1.0)
    colour = random_images(4)
    assert np.abs(to_numpy(jitter(colour)) - colour).mean(axis=(1, 2, 3)).min() > 1.0
    gray = np.repeat(random_images(4)[..., :1], 3, axis=-1)
    outputs = to_numpy(jitter(gray))
    assert np.abs(outputs - gray).mean() > 1.0
    np.testing.assert_allclose(outputs[..., 0], outputs[..., 1], atol=1e-2)
    np.testing.assert_allclose(outputs[..., 0], outputs[..., 2], atol=1e-2)


def test_jitter_with_zero_strength_is_identity():
    images = random_images(3)
    outputs = to_numpy(only(jitter_probability=1.0, jitter_strength=0.0)(images))
    np.testing.assert_allclose(outputs, images, atol=1e-2)


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_blur_only_removes_high_frequencies_and_keeps_borders(height, width):
    blur = only(blur_probability=1.0, blur_sigma_range=(1.0, 2.0))
    checkerboard = np.indices((height, width)).sum(axis=0) % 2 * 255.0
    images = np.repeat(checkerboard[None, :, :, None], 3, axis=-1).astype("float32")
    images = np.repeat(images, 2, axis=0)
    assert to_numpy(blur(images)).var() < 0.1 * images.var()
    # Renormalised kernels do not darken the borders of a flat image.
    flat = np.full((2, height, width, 3), 200.0, dtype="float32")
    np.testing.assert_allclose(to_numpy(blur(flat)), flat, atol=1e-2)


def test_same_seed_gives_same_views():
    images = random_images(3)
    first = to_numpy(SimCLRAugmenter(seed=7)(images))
    second = to_numpy(SimCLRAugmenter(seed=7)(images))
    np.testing.assert_allclose(first, second, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_area_min=0.0), "Received: crop_area_min=0.0, crop_area_max=1.0"),
        (
            dict(crop_area_min=0.5, crop_area_max=0.4),
            "Received: crop_area_min=0.5, crop_area_max=0.4",
        ),
        (dict(crop_area_max=1.5), "Received: crop_area_min=0.08, crop_area_max=1.5"),
        (dict(crop_aspect_range=(2.0, 1.0)), r"Received: crop_aspect_range=\(2.0, 1.0\)"),
        (dict(flip_probability=1.5), "Received: flip_probability=1.5"),
        (dict(jitter_probability=-0.1), "Received: jitter_probability=-0.1"),
        (dict(jitter_strength=-1.0), "Received: jitter_strength=-1.0"),
        (dict(grayscale_probability=2.0), "Received: grayscale_probability=2.0"),
        (dict(blur_probability=1.1), "Received: blur_probability=1.1"),
        (dict(blur_sigma_range=(0.0, 2.0)), r"Received: blur_sigma_range=\(0.0, 2.0\)"),
        (dict(blur_sigma_range=3.0), "Received: blur_sigma_range=3.0"),
        (dict(blur_kernel_fraction=-0.1), "Received: blur_kernel_fraction=-0.1"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message + "$"):
        SimCLRAugmenter(**kwargs)


NON_DEFAULT = dict(
    crop_area_min=0.2,
    crop_area_max=0.9,
    crop_aspect_range=(0.5, 2.0),
    flip_probability=0.3,
    jitter_probability=0.6,
    jitter_strength=0.5,
    grayscale_probability=0.1,
    blur_probability=0.7,
    blur_sigma_range=(0.5, 1.5),
    blur_kernel_fraction=0.2,
    seed=11,
)


def test_config_round_trip():
    run_serialization_test(SimCLRAugmenter(**NON_DEFAULT, name="augment"), settings=NON_DEFAULT)


def test_keras_file_save_and_load(tmp_path):
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(2, 3)(SimCLRAugmenter(**NON_DEFAULT)(inputs))
    model = keras.Model(inputs, outputs)
    loaded = run_model_saving_test(model, random_images(2, 16, 16), tmp_path, atol=1e-5, rtol=1e-7)
    assert isinstance(loaded.layers[1], SimCLRAugmenter)
    assert loaded.layers[1].get_config() == model.layers[1].get_config()


def test_symbolic_call_keeps_shape():
    outputs = SimCLRAugmenter()(keras.Input((None, None, 3)))
    assert tuple(outputs.shape) == (None, None, None, 3)


@requires_tensorflow
def test_tf_data_map():
    import tensorflow as tf

    augmenter = SimCLRAugmenter(seed=3)
    images = np.repeat(random_images(1), 8, axis=0)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4).map(augmenter)
    first_epoch = np.concatenate([batch.numpy() for batch in dataset])
    second_epoch = np.concatenate([batch.numpy() for batch in dataset])
    assert first_epoch.shape == images.shape
    assert first_epoch.min() >= 0.0 and first_epoch.max() <= 255.0
    assert min(pairwise_mean_abs_diffs(first_epoch)) > 1.0
    assert np.abs(first_epoch - second_epoch).mean() > 1.0


@pytest.mark.large
@requires_tensorflow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_with_dynamic_shapes(jit_compile):
    import tensorflow as tf

    augmenter = SimCLRAugmenter(seed=4)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    augment = tf.function(augmenter, input_signature=[spec], jit_compile=jit_compile)
    for shape in [(2, 32, 32, 3), (5, 24, 40, 3)]:
        images = np.repeat(random_images(1, *shape[1:3]), shape[0], axis=0)
        outputs = augment(images).numpy()
        assert outputs.shape == shape
        assert outputs.min() >= 0.0 and outputs.max() <= 255.0
        assert min(pairwise_mean_abs_diffs(outputs)) > 1.0


class AugmentedRegressor(keras.Model):
    """Regresses the mean of an augmented view; the augmenter is active only in training."""

    def __init__(self):
        super().__init__()
        self.augmenter = SimCLRAugmenter(seed=5)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(1)

    def call(self, images, training=False):
        views = self.augmenter(images, training=training)
        return self.dense(self.pool(views / 255.0))


@pytest.mark.large
@pytest.mark.parametrize("jit_compile", [False, True])
def test_inside_compiled_fit(jit_compile):
    images = random_images(8, 16, 16)
    model = AugmentedRegressor()
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    history = model.fit(images, np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Inference skips the augmenter, so predictions are deterministic.
    np.testing.assert_allclose(
        model.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


_OTHER_BACKEND_SCRIPT = """
    import numpy as np
    from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

    images = np.repeat(np.random.uniform(0, 255, (1, 32, 32, 3)).astype("float32"), 4, axis=0)
    outputs = keras.ops.convert_to_numpy(SimCLRAugmenter(seed=0)(images))
    assert outputs.shape == images.shape, outputs.shape
    assert outputs.min() >= 0.0 and outputs.max() <= 255.0
    assert np.abs(outputs[0] - outputs[1]).mean() > 1.0
    """


@pytest.mark.large
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends(backend):
    assert_runs_on_backend(backend, _OTHER_BACKEND_SCRIPT)
