"""Separable resampling of image batches by matrix products, shared by the augmenters and Grad-CAM.

A separable operator (a resize, a blur, a crop-and-zoom) is one matrix per image and axis; two
`transposed_matmul` calls apply it to rows and columns. Matrix products in `keras.ops` keep the
augmenters backend-neutral (no `tf.image`). `interpolation_matrix` builds the bilinear ones from
the source position of each output pixel, whatever map (crop window, affine zoom, receptive
field) gave those positions.
"""

import keras
from keras import ops

FILL_MODES = ("nearest", "constant")
"""How `interpolation_matrix` treats source positions outside the input."""


def interpolation_matrix(positions, size, *, fill_mode="nearest"):
    """`[..., M, size]` linear-interpolation weights of `size` input pixels at `M` source positions.

    Input pixel `j` has its centre at `j`; row `m` weights pixel `j` by
    `max(0, 1 - |positions[..., m] - j|)`, i.e. `1 - frac` and `frac` on the two pixels around
    the position. Keras ops only, so it runs on every backend and inside `tf.data` and
    `tf.function` (`size` may be a scalar tensor).

    Args:
        positions: float tensor or array `[..., M]`, the source position of each output pixel in
            input pixel units. Its float dtype is kept (float32 if not a float).
        size: int or scalar int tensor, the number of input pixels.
        fill_mode: `"nearest"`: positions are clamped to `[0, size - 1]`, so every row sums to 1
            and the border pixel is repeated outside. `"constant"`: weight that would fall
            outside the input is dropped, so a row sums to the share of the position inside
            the input (0 a pixel or more outside); the caller adds the fill value times the
            rest. Defaults to `"nearest"`.

    Returns:
        A tensor `[..., M, size]` of the dtype of `positions`.

    Example:

    >>> # Upsampling 2 pixels to 4 with half-pixel centres, as `tf.image.resize`:
    >>> positions = (np.arange(4) + 0.5) * 2 / 4 - 0.5
    >>> keras.ops.convert_to_numpy(interpolation_matrix(positions, 2))
    array([[1.  , 0.  ],
           [0.75, 0.25],
           [0.25, 0.75],
           [0.  , 1.  ]])
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(
            f"`fill_mode` must be one of {FILL_MODES}. Received: fill_mode={fill_mode!r}"
        )
    positions = ops.convert_to_tensor(positions)
    dtype = keras.backend.standardize_dtype(positions.dtype)
    if not keras.backend.is_float_dtype(dtype):
        dtype = "float32"
        positions = ops.cast(positions, dtype)
    if fill_mode == "nearest":
        positions = ops.clip(positions, 0.0, ops.cast(size, dtype) - 1.0)
    pixels = ops.arange(size, dtype=dtype)
    return ops.relu(1.0 - ops.abs(positions[..., :, None] - pixels))


def transposed_matmul(matrices, images):
    """Applies [N, A, A] matrices along axis 1 of [N, A, B, C] images; returns [N, B, A, C].

    Two calls apply a separable operator to both spatial axes and restore the layout.
    """
    shape = ops.shape(images)
    batch, rows, columns, channels = shape[0], shape[1], shape[2], shape[3]
    x = ops.matmul(matrices, ops.reshape(images, (batch, rows, -1)))
    x = ops.reshape(x, (batch, rows, columns, channels))
    return ops.transpose(x, (0, 2, 1, 3))
