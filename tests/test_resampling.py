"""`interpolation_matrix` against the three builders it replaced (issue 13), and in graph mode.

The `_old_*` functions are verbatim copies of the matrices the SimCLR augmenter, the box
augmenter and Grad-CAM built before they shared `interpolation_matrix`: each caller's own
parameterisation of the source positions must give back exactly its old matrix.
"""

import keras
import numpy as np
import pytest
from keras import ops

from ssl_keras.gradcam import gradcam
from ssl_keras.localization import box_augmenter
from ssl_keras.pretraining import simclr_augmenter
from ssl_keras.resampling import interpolation_matrix

TRIALS = 200
ATOL = 1e-6

requires_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="needs the TensorFlow backend"
)


def _old_simclr_bilinear_matrix(start, length, size):
    """ssl_keras/pretraining/simclr_augmenter.py `_bilinear_matrix`, before issue 13."""
    size_f = ops.cast(size, "float32")
    position = ops.arange(size, dtype="float32")
    scale = length / size_f
    source = start[:, None] + (position[None, :] + 0.5) * scale[:, None] - 0.5
    source = ops.clip(source, 0.0, size_f - 1.0)
    return ops.relu(1.0 - ops.abs(source[:, :, None] - position[None, None, :]))


def _old_box_interpolation_matrix(slope, offset, size):
    """ssl_keras/localization/box_augmenter.py `_interpolation_matrix`, before issue 13."""
    position = ops.arange(size, dtype="float32")
    source = slope[:, None] * position[None, :] + offset[:, None]
    weights = ops.relu(1.0 - ops.abs(source[:, :, None] - position[None, None, :]))
    return weights, ops.sum(weights, axis=2)


def _old_gradcam_interpolation_matrix(positions, size_in):
    """ssl_keras/gradcam/gradcam.py `_interpolation_matrix` (NumPy), before issue 13."""
    positions = np.clip(np.asarray(positions, "float64"), 0.0, size_in - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = positions - low
    matrix = np.zeros((len(positions), size_in))
    rows = np.arange(len(positions))
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _simclr_windows(rng, size, n):
    """Crop windows as the augmenter draws them, plus some reaching past the border."""
    length = rng.uniform(0.05, 1.3, n) * size
    start = rng.uniform(-0.2, 1.0, n) * size
    # Exact corner cases: the full window (identity), a window flush with the far border.
    start[:2], length[:2] = [0.0, size - length[1]], [size, length[1]]
    return start.astype("float32"), length.astype("float32")


def test_simclr_parameterisation_gives_the_old_crop_matrix():
    rng = np.random.default_rng(0)
    for _ in range(TRIALS):
        size, n = int(rng.integers(1, 48)), int(rng.integers(2, 5))
        start, length = _simclr_windows(rng, size, n)
        old = _numpy(
            _old_simclr_bilinear_matrix(
                ops.convert_to_tensor(start), ops.convert_to_tensor(length), size
            )
        )
        pixels = np.arange(size, dtype="float32")
        positions = (
            start[:, None] + (pixels[None, :] + 0.5) * (length / np.float32(size))[:, None] - 0.5
        )
        np.testing.assert_allclose(
            _numpy(interpolation_matrix(positions, size, fill_mode="nearest")),
            old,
            rtol=0,
            atol=ATOL,
        )
        # What the augmenter itself now builds.
        new = simclr_augmenter._bilinear_matrix(
            ops.convert_to_tensor(start), ops.convert_to_tensor(length), size
        )
        np.testing.assert_allclose(_numpy(new), old, rtol=0, atol=ATOL)


def test_box_parameterisation_gives_the_old_matrix_and_inside_weight():
    rng = np.random.default_rng(1)
    for _ in range(TRIALS):
        size, n = int(rng.integers(1, 48)), int(rng.integers(2, 5))
        # Zoom in and out, flipped or not, shifted up to past the border; then exact integers.
        slope = (rng.uniform(0.4, 2.5, n) * rng.choice([-1.0, 1.0], n)).astype("float32")
        offset = rng.uniform(-1.5 * size, 2.5 * size, n).astype("float32")
        slope[0], offset[0] = 1.0, 0.0
        slope[1], offset[1] = -1.0, size - 1.0
        old_weights, old_inside = map(
            _numpy,
            _old_box_interpolation_matrix(
                ops.convert_to_tensor(slope), ops.convert_to_tensor(offset), size
            ),
        )
        positions = slope[:, None] * np.arange(size, dtype="float32")[None, :] + offset[:, None]
        weights = _numpy(interpolation_matrix(positions, size, fill_mode="constant"))
        np.testing.assert_allclose(weights, old_weights, rtol=0, atol=ATOL)
        np.testing.assert_allclose(weights.sum(axis=2), old_inside, rtol=0, atol=ATOL)
        # What the augmenter itself now builds.
        new_weights, new_inside = box_augmenter._affine_interpolation(
            ops.convert_to_tensor(slope), ops.convert_to_tensor(offset), size
        )
        np.testing.assert_allclose(_numpy(new_weights), old_weights, rtol=0, atol=ATOL)
        np.testing.assert_allclose(_numpy(new_inside), old_inside, rtol=0, atol=ATOL)


def test_gradcam_parameterisations_give_the_old_upsampling_matrix():
    rng = np.random.default_rng(2)
    for _ in range(TRIALS):
        n_in, n_out = int(rng.integers(1, 12)), int(rng.integers(1, 80))
        pixels = np.arange(n_out, dtype="float64")
        stride, cell_offset = float(rng.integers(1, 33)), float(rng.uniform(-4.0, 32.0))
        for positions in [
            (pixels + 0.5) * n_in / n_out - 0.5,  # no geometry: a plain half-pixel resize
            (pixels - cell_offset) / stride,  # receptive-field centres
            rng.uniform(-3.0, n_in + 3.0, n_out),  # anything, past both borders
            np.round(rng.uniform(-2.0, n_in + 2.0, n_out)),
        ]:  # integers, on and past the border
            new = _numpy(interpolation_matrix(positions, n_in, fill_mode="nearest"))
            np.testing.assert_allclose(
                new, _old_gradcam_interpolation_matrix(positions, n_in), rtol=0, atol=ATOL
            )


def test_gradcam_upsampling_is_unchanged():
    rng = np.random.default_rng(3)

    def old_upsample(maps, image_hw, geometry):
        matrices = []
        for axis, (n_out, n_in) in enumerate(zip(image_hw, maps.shape[1:])):
            pixels = np.arange(n_out, dtype="float64")
            if geometry is None:
                positions = (pixels + 0.5) * n_in / n_out - 0.5
            else:
                positions = (pixels - geometry["offset"][axis]) / geometry["stride"][axis]
            matrices.append(_old_gradcam_interpolation_matrix(positions, n_in))
        return np.einsum("Yh,nhw,Xw->nYX", matrices[0], maps, matrices[1]).astype("float32")

    for geometry in [
        None,
        {"stride": (16, 16), "offset": (15.0, 15.0)},
        {"stride": (8, 4), "offset": (3.5, -2.0)},
    ]:
        maps = rng.uniform(0.0, 1.0, (2, 3, 5)).astype("float32")
        np.testing.assert_allclose(
            gradcam._upsample(maps, (37, 29), geometry),
            old_upsample(maps, (37, 29), geometry),
            rtol=0,
            atol=ATOL,
        )


def test_half_pixel_upsampling_weights_and_fill_modes():
    positions = (np.arange(4) + 0.5) * 2 / 4 - 0.5
    np.testing.assert_allclose(
        _numpy(interpolation_matrix(positions, 2)),
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]],
    )
    outside = np.array([-1.5, -0.25, 1.25, 3.0], "float32")
    # "nearest" repeats the border pixel; "constant" keeps only the weight inside the image.
    np.testing.assert_allclose(
        _numpy(interpolation_matrix(outside, 2, fill_mode="nearest")),
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
    )
    np.testing.assert_allclose(
        _numpy(interpolation_matrix(outside, 2, fill_mode="constant")),
        [[0.0, 0.0], [0.75, 0.0], [0.0, 0.75], [0.0, 0.0]],
    )


def test_keeps_the_float_dtype_and_makes_integers_float32():
    assert (
        keras.backend.standardize_dtype(interpolation_matrix(np.zeros(3, "float32"), 4).dtype)
        == "float32"
    )
    assert (
        keras.backend.standardize_dtype(interpolation_matrix(np.zeros(3, "int32"), 4).dtype)
        == "float32"
    )


def test_unknown_fill_mode_is_refused():
    with pytest.raises(ValueError, match="fill_mode.*Received: fill_mode='reflect'"):
        interpolation_matrix(np.zeros(3, "float32"), 4, fill_mode="reflect")


@requires_tensorflow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_graph_mode_with_a_dynamic_size(jit_compile):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)], jit_compile=jit_compile)
    def build(positions):
        # A size read from a shape, as the augmenters do: unknown when traced, known to XLA.
        size = tf.shape(positions)[1] + 2
        return (
            interpolation_matrix(positions, size, fill_mode="nearest"),
            interpolation_matrix(positions, size, fill_mode="constant"),
        )

    positions = np.random.default_rng(4).uniform(-2.0, 9.0, (3, 5)).astype("float32")
    nearest, constant = build(positions)
    np.testing.assert_allclose(
        nearest.numpy(), _numpy(interpolation_matrix(positions, 7)), rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        constant.numpy(),
        _numpy(interpolation_matrix(positions, 7, fill_mode="constant")),
        rtol=0,
        atol=ATOL,
    )


@requires_tensorflow
def test_inside_tf_data_map():
    import tensorflow as tf

    positions = np.random.default_rng(5).uniform(-2.0, 9.0, (4, 6)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(positions).map(
        lambda p: interpolation_matrix(p, tf.shape(p)[0])
    )
    built = np.stack([m.numpy() for m in dataset])
    np.testing.assert_allclose(built, _numpy(interpolation_matrix(positions, 6)), rtol=0, atol=ATOL)
