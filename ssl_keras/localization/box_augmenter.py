"""Box-aware augmentation for single-object localization: flip and zoom/translate jitter."""

import keras
from keras import ops

from ssl_keras.resampling import interpolation_matrix, transposed_matmul

# Images are float in [0, 255] throughout ssl_keras.
_MAX_VALUE = 255.0


def _check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1]. Received: {name}={value}")


def _check_scale_range(scale_range):
    try:
        low, high = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(
            "`scale_range` must be a pair of numbers (min, max). "
            f"Received: scale_range={scale_range}"
        ) from None
    if not 0.0 < low <= high:
        raise ValueError(
            f"`scale_range` must satisfy 0 < min <= max. Received: scale_range={scale_range}"
        )
    return (low, high)


@keras.saving.register_keras_serializable(package="ssl_keras")
class BoxAugmenter(keras.layers.Layer):
    """Randomly flips, zooms and shifts images together with their one target box.

    For every image of the batch, independently:

    1. Horizontal flip with probability `flip_probability`; the box becomes
       `(ymin, 1 - xmax, ymax, 1 - xmin)`.
    2. Zoom about the image centre by a factor `s` drawn uniformly in
       `scale_range` (`s > 1` enlarges the content), then a shift by `(dy, dx)`
       fractions of the image size, each drawn uniformly in
       `[-translate_fraction, translate_fraction]`. A normalised point `p` moves
       to `s * (p - 0.5) + 0.5 + d` on each axis.

    The box must stay fully visible, so the draw is constrained per image:
    a zoom-in factor is lowered to the largest one for which some allowed shift
    keeps the box inside the image (the cap is never below 1, so zoom-outs are
    untouched), then each shift is drawn uniformly in the part of
    `[-translate_fraction, translate_fraction]` that keeps the box inside
    `[0, 1]`. The returned box is the true box mapped by the same affine map
    (clipped to `[0, 1]` against rounding), so it is exact, not re-estimated
    from pixels.

    The image is resampled bilinearly, as `keras.ops.image.affine_transform`
    does with the `[N, 8]` transforms of `get_affine_transforms`, but with one
    interpolation matrix per axis (the map is separable), which, unlike the
    TensorFlow kernel of `affine_transform`, compiles with XLA. Areas that come
    from outside the input are filled with the constant `fill_value`, a neutral
    gray by default: a reflected or repeated border could copy the object
    outside its box and so contradict the target.

    Uses `keras.ops` and `keras.random` only, with per-image randomness from a
    seeded `SeedGenerator`, so it runs on every backend and inside a compiled
    training step. With `training=False` it returns its inputs unchanged. Use
    `flip_probability=0`, `scale_range=(1, 1)` and `translate_fraction=0` to
    switch parts off.

    Computation is in float32. The layer does not autocast its inputs, so boxes
    keep float32 precision under a mixed-precision policy: images are returned
    in their input float dtype (the compute dtype for integer images), boxes in
    float32.

    Args:
        flip_probability: float in `[0, 1]`, probability of a horizontal flip.
            Defaults to `0.5`.
        scale_range: pair of floats `(min, max)`, `0 < min <= max`, range of the
            zoom factor. Defaults to `(0.8, 1.2)`.
        translate_fraction: float in `[0, 1]`, largest shift on each axis as a
            fraction of the image size. Defaults to `0.1`.
        fill_value: float in `[0, 255]`, pixel value of the areas filled from
            outside the image. Defaults to `114.0` (gray near the ImageNet mean,
            the value YOLOv5 letterboxes with).
        seed: int or `None`, seed of the layer's random number generator.
            Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        images: float tensor `[N, H, W, C]` (or one image `[H, W, C]`),
            channels last, values in `[0, 255]`.
        boxes: float tensor `[N, 4]` (or `[4]`), one box per image,
            `(ymin, xmin, ymax, xmax)` as fractions of the image height and
            width, inside `[0, 1]`. Coordinates outside `[0, 1]` are clipped
            into it first.
        training: bool, whether to augment. Defaults to `True`.

    Returns:
        A tuple `(images, boxes)` with the shapes of the inputs.

    Example:

    ```python
    augmenter = BoxAugmenter(seed=0)
    images = np.random.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    boxes = np.tile([[0.2, 0.3, 0.7, 0.9]], (8, 1)).astype("float32")
    images, boxes = augmenter(images, boxes)
    ```
    """

    def __init__(
        self,
        *,
        flip_probability=0.5,
        scale_range=(0.8, 1.2),
        translate_fraction=0.1,
        fill_value=114.0,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        _check_probability("flip_probability", flip_probability)
        scale_range = _check_scale_range(scale_range)
        if not 0.0 <= translate_fraction <= 1.0:
            raise ValueError(
                "`translate_fraction` must be in [0, 1]. "
                f"Received: translate_fraction={translate_fraction}"
            )
        if not 0.0 <= fill_value <= _MAX_VALUE:
            raise ValueError(f"`fill_value` must be in [0, 255]. Received: fill_value={fill_value}")
        self.flip_probability = float(flip_probability)
        self.scale_range = scale_range
        self.translate_fraction = float(translate_fraction)
        self.fill_value = float(fill_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # No weights to create: a model that never calls the layer at inference is still built.
        self.built = True

    def call(self, images, boxes, training=True):
        if not training:
            return images, boxes
        images = ops.convert_to_tensor(images)
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
            boxes = ops.expand_dims(boxes, 0)
        input_dtype = keras.backend.standardize_dtype(images.dtype)
        output_dtype = (
            input_dtype if keras.backend.is_float_dtype(input_dtype) else self.compute_dtype
        )
        images = ops.cast(images, "float32")
        boxes = ops.clip(ops.cast(boxes, "float32"), 0.0, 1.0)
        transformation = self.get_random_transformation(boxes)
        images, boxes = self.apply_transformation(images, boxes, transformation)
        images = ops.cast(images, output_dtype)
        if unbatched:
            images = ops.squeeze(images, 0)
            boxes = ops.squeeze(boxes, 0)
        return images, boxes

    def get_random_transformation(self, boxes):
        """Draws the flip, zoom and shift of every image, constrained by its box.

        Args:
            boxes: float32 tensor `[N, 4]`, boxes `(ymin, xmin, ymax, xmax)` in
                `[0, 1]`.

        Returns:
            A dict of float32 tensors: `"flip"` `[N]` in `{0, 1}`, `"scale"`
            `[N]` zoom factors and `"translate"` `[N, 2]` shifts `(dy, dx)` as
            fractions of the image size.
        """
        seed = self.seed_generator
        batch_size = ops.shape(boxes)[0]
        flip = ops.cast(
            keras.random.uniform((batch_size,), seed=seed) < self.flip_probability, "float32"
        )
        # The constraints apply to the box as it is after the flip.
        low, high = _flip_box_coordinates(boxes, flip)
        scale = keras.random.uniform((batch_size,), *self.scale_range, seed=seed)
        scale = ops.minimum(scale, self._largest_scale(low, high))
        # Shift bounds that keep s * (p - 0.5) + 0.5 + d inside [0, 1] for both box edges.
        lowest = -(scale[:, None] * (low - 0.5) + 0.5)
        highest = 0.5 - scale[:, None] * (high - 0.5)
        lowest = ops.maximum(lowest, -self.translate_fraction)
        highest = ops.maximum(ops.minimum(highest, self.translate_fraction), lowest)
        u = keras.random.uniform((batch_size, 2), seed=seed)
        translate = lowest + u * (highest - lowest)
        return {"flip": flip, "scale": scale, "translate": translate}

    def _largest_scale(self, low, high):
        """[N] zoom caps: the box fits the image and an allowed shift keeps it inside.

        On each axis: `s * (high - low) <= 1`, and each edge's distance from the
        centre, scaled by `s`, is at most `0.5 + translate_fraction`. Each cap is >= 1 for a
        box inside the image.
        """
        reach = 0.5 + self.translate_fraction
        caps = [
            _safe_ratio(1.0, high - low),
            _safe_ratio(reach, 0.5 - low),
            _safe_ratio(reach, high - 0.5),
        ]
        cap = caps[0]
        for c in caps[1:]:
            cap = ops.minimum(cap, c)
        return ops.min(cap, axis=1)

    def apply_transformation(self, images, boxes, transformation):
        """Applies a transformation drawn by `get_random_transformation`.

        Args:
            images: float32 tensor `[N, H, W, C]`, values in `[0, 255]`.
            boxes: float32 tensor `[N, 4]`, the boxes the transformation was
                drawn for.
            transformation: dict returned by `get_random_transformation`.

        Returns:
            A tuple `(images, boxes)`: float32 `[N, H, W, C]` and `[N, 4]`.
        """
        return (
            self.transform_images(images, transformation),
            self.transform_boxes(boxes, transformation),
        )

    def transform_boxes(self, boxes, transformation):
        """Maps `[N, 4]` boxes through the flip, zoom and shift; returns `[N, 4]` in `[0, 1]`."""
        low, high = _flip_box_coordinates(boxes, transformation["flip"])
        scale = transformation["scale"][:, None]
        shift = transformation["translate"]
        low = scale * (low - 0.5) + 0.5 + shift
        high = scale * (high - 0.5) + 0.5 + shift
        boxes = ops.concatenate([low, high], axis=1)
        return ops.clip(boxes, 0.0, 1.0)

    def get_affine_transforms(self, transformation, height, width):
        """The transformation as `[N, 8]` rows for `keras.ops.image.affine_transform`.

        Each row `[a0, a1, a2, b0, b1, b2, 0, 0]` maps an output pixel index
        `(x, y)` (pixel centres at integers) to the input point
        `(a0 x + a2, b1 y + b2)`; `a1 = b0 = 0` since flip, zoom and shift act
        on each axis separately.

        Args:
            transformation: dict returned by `get_random_transformation`.
            height: int or scalar tensor, image height in pixels.
            width: int or scalar tensor, image width in pixels.

        Returns:
            Float32 tensor `[N, 8]`.
        """
        a0, a2 = _source_map(transformation, 1, width, flip=transformation["flip"])
        b1, b2 = _source_map(transformation, 0, height)
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, zeros, a2, zeros, b1, b2, zeros, zeros], axis=1)

    def transform_images(self, images, transformation):
        """Resamples `[N, H, W, C]` images through the flip, zoom and shift.

        Equivalent to `keras.ops.image.affine_transform(images,
        self.get_affine_transforms(...), "bilinear", "constant", fill_value)`,
        but computed as one interpolation matrix per axis and image,
        `out = Ry @ image @ Rx^T`, because the TensorFlow kernel of
        `affine_transform` cannot be compiled with XLA and the map is separable.
        """
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        resample_y, inside_y = _affine_interpolation(
            *_source_map(transformation, 0, height), height
        )
        resample_x, inside_x = _affine_interpolation(
            *_source_map(transformation, 1, width, flip=transformation["flip"]), width
        )
        outputs = transposed_matmul(resample_x, transposed_matmul(resample_y, images))
        # Bilinear weight that falls outside the input goes to the constant fill value.
        inside = inside_y[:, :, None, None] * inside_x[:, None, :, None]
        outputs = outputs + (1.0 - inside) * self.fill_value
        return ops.clip(outputs, 0.0, _MAX_VALUE)

    def compute_output_shape(self, images_shape, boxes_shape):
        return images_shape, boxes_shape

    def compute_output_spec(self, images, boxes, training=True):
        images_dtype = keras.backend.standardize_dtype(images.dtype)
        if not keras.backend.is_float_dtype(images_dtype):
            images_dtype = self.compute_dtype
        return (
            keras.KerasTensor(images.shape, dtype=images_dtype),
            keras.KerasTensor(boxes.shape, dtype="float32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "flip_probability": self.flip_probability,
                "scale_range": list(self.scale_range),
                "translate_fraction": self.translate_fraction,
                "fill_value": self.fill_value,
                "seed": self.seed,
            }
        )
        return config


def _flip_box_coordinates(boxes, flip):
    """Splits boxes into `[N, 2]` low `(ymin, xmin)` and high `(ymax, xmax)` corners, flipped."""
    flip = flip[:, None]
    xmin = boxes[:, 1:2]
    xmax = boxes[:, 3:4]
    xmin, xmax = (
        flip * (1.0 - xmax) + (1.0 - flip) * xmin,
        flip * (1.0 - xmin) + (1.0 - flip) * xmax,
    )
    low = ops.concatenate([boxes[:, 0:1], xmin], axis=1)
    high = ops.concatenate([boxes[:, 2:3], xmax], axis=1)
    return low, high


def _source_map(transformation, axis, size, flip=None):
    """`[N]` slope and offset mapping output pixel indices to input ones along `axis`.

    In normalised coordinates `p = (index + 0.5) / size`, output point `q` comes from input
    point `p = sign * (q - 0.5 - d) / s + 0.5`, with `sign = -1` for a flip.
    """
    size = ops.cast(size, "float32")
    slope = 1.0 / transformation["scale"]
    if flip is not None:
        slope = slope * (1.0 - 2.0 * flip)
    shift = transformation["translate"][:, axis]
    offset = slope * (0.5 - 0.5 * size - shift * size) + 0.5 * size - 0.5
    return slope, offset


def _affine_interpolation(slope, offset, size):
    """`[N, size, size]` bilinear weights of the input pixels for each output pixel.

    Also returns `[N, size]`, the total weight inside the image (1 unless the source point lies
    less than a pixel inside or outside the border).
    """
    position = ops.arange(size, dtype="float32")
    source = slope[:, None] * position[None, :] + offset[:, None]
    # Not clamped: the weight that falls outside goes to the fill value (see `transform_images`).
    weights = interpolation_matrix(source, size, fill_mode="constant")
    return weights, ops.sum(weights, axis=2)


def _safe_ratio(numerator, denominator):
    """`numerator / denominator`, +inf-like (1e9) where the denominator is <= 0."""
    positive = denominator > 0.0
    return ops.where(positive, numerator / ops.where(positive, denominator, 1.0), 1e9)
