"""The SimCLR augmentation pipeline as one backend-neutral, per-image-random Keras layer."""

import math

import keras
from keras import ops

from ssl_keras.resampling import interpolation_matrix, transposed_matmul

# Images are float in [0, 255] throughout ssl_keras.
_MAX_VALUE = 255.0

# torchvision's RandomResizedCrop draws up to 10 windows and keeps the first that fits.
_CROP_ATTEMPTS = 10

# ITU-R BT.601 luma weights, as in `tf.image.rgb_to_grayscale` and torchvision.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# RGB -> YIQ. The hue of a colour is its angle in the (I, Q) chroma plane.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.596, -0.274, -0.322),
    (0.211, -0.523, 0.312),
)


def _matmul_3x3(a, b):
    return tuple(
        tuple(sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)) for i in range(3)
    )


def _inverse_3x3(m):
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    adjugate = (
        (e * i - f * h, c * h - b * i, b * f - c * e),
        (f * g - d * i, a * i - c * g, c * d - a * f),
        (d * h - e * g, b * g - a * h, a * e - b * d),
    )
    return tuple(tuple(v / det for v in row) for row in adjugate)


def _conjugate_by_yiq(m):
    return _matmul_3x3(_inverse_3x3(_RGB_TO_YIQ), _matmul_3x3(m, _RGB_TO_YIQ))


# A hue rotation by t is the RGB matrix _HUE_FIXED + cos(t) _HUE_COS + sin(t) _HUE_SIN:
# YIQ^-1 @ [[1, 0, 0], [0, cos t, -sin t], [0, sin t, cos t]] @ YIQ, split by term.
_HUE_FIXED = _conjugate_by_yiq(((1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
_HUE_COS = _conjugate_by_yiq(((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
_HUE_SIN = _conjugate_by_yiq(((0.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)))


def _check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1]. Received: {name}={value}")


def _check_range(name, value):
    """Checks that `value` is an ordered pair of positive floats and returns it as a tuple."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a pair of numbers (min, max). Received: {name}={value}"
        ) from None
    if not 0.0 < low <= high:
        raise ValueError(f"`{name}` must satisfy 0 < min <= max. Received: {name}={value}")
    return (low, high)


@keras.saving.register_keras_serializable(package="ssl_keras")
class SimCLRAugmenter(keras.layers.Layer):
    """Draws one random SimCLR view of every image in a batch.

    Applies, in this order and with randomness drawn independently for every
    image of the batch:

    1. Random resized crop: a window covering a uniform fraction in
       `[crop_area_min, crop_area_max]` of the image, with a log-uniform aspect
       ratio (width / height) in `crop_aspect_range`, resized back to the input
       size with bilinear interpolation. As in torchvision, up to 10 windows are
       drawn and the first that fits inside the image is kept; if none fits, the
       largest central window with an allowed aspect ratio is used. Window
       corners and sizes are continuous (sub-pixel), not rounded to pixels.
    2. Horizontal flip with probability `flip_probability`.
    3. Colour jitter with probability `jitter_probability`: brightness,
       contrast and saturation scaled by factors drawn uniformly in
       `[max(0, 1 - 0.8 * s), 1 + 0.8 * s]`, and hue rotated by an angle
       drawn uniformly in `±0.2 * s` of a full turn, where
       `s = jitter_strength`. The four operations run in this fixed order (the
       paper randomises their order) and each clips to `[0, 255]`. Contrast
       blends every channel with its mean over the image, as
       `tf.image.adjust_contrast` does; saturation blends with the grayscale
       image, as torchvision does; hue is a rotation of the chroma plane in
       YIQ space, an approximation of a shift of the HSV hue.
    4. Grayscale with probability `grayscale_probability`, keeping 3 channels.
    5. Gaussian blur with probability `blur_probability`, with a standard
       deviation in pixels drawn uniformly in `blur_sigma_range`. The kernel
       spans `int(blur_kernel_fraction * side)` pixels, rounded up to an odd
       size, as in the SimCLR reference code; it is renormalised at the
       borders, so edges are not darkened. Images smaller than 20 pixels get a
       kernel of size 1 at the default fraction, i.e. no blur.

    The crop, the flip and the blur are expressed as per-image interpolation
    and Gaussian matrices applied to both image axes with batched matrix
    products, so the layer uses `keras.ops` and `keras.random` only, runs on
    every backend, accepts a dynamic batch size (and image size) and compiles
    with XLA.

    Call the layer once per view: SimCLR calls it twice on the same batch to
    get two independently augmented views. With `training=False` it returns
    its input unchanged. On the TensorFlow backend it is safe to use inside
    `tf.data` (e.g. in `dataset.map`); on other backends, call it in the model.

    The computation runs in float32. As for any Keras layer, float inputs
    are first cast to the layer's compute dtype (float32 unless a dtype
    policy such as `"mixed_bfloat16"` is set); a float16 or bfloat16 compute
    dtype is cast to float32 inside the layer and back on output.

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), Appendix A.

    Args:
        crop_area_min: float, smallest fraction of the image area covered by
            the crop window. Defaults to `0.08`.
        crop_area_max: float, largest fraction of the image area covered by
            the crop window. Defaults to `1.0`.
        crop_aspect_range: pair of floats, range of the crop window's aspect
            ratio (width / height), sampled log-uniformly. Defaults to
            `(3 / 4, 4 / 3)`.
        flip_probability: float, probability of a horizontal flip.
            Defaults to `0.5`.
        jitter_probability: float, probability of colour jitter.
            Defaults to `0.8`.
        jitter_strength: float, the colour jitter strength `s` of the paper.
            Defaults to `1.0`.
        grayscale_probability: float, probability of converting to grayscale.
            Defaults to `0.2`.
        blur_probability: float, probability of a Gaussian blur.
            Defaults to `0.5`.
        blur_sigma_range: pair of floats, range of the blur's standard
            deviation in pixels. Defaults to `(0.1, 2.0)`.
        blur_kernel_fraction: float, size of the blur kernel as a fraction of
            the image side. Defaults to `0.1`.
        seed: int or `None`, seed of the layer's random number generator.
            Defaults to `None`.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        images: float tensor of shape `[N, H, W, 3]` (or a single image
            `[H, W, 3]`), channels last, with values in `[0, 255]`.
        training: bool, whether to augment. With `False` the images are
            returned unchanged. Defaults to `True`.

    Returns:
        A tensor of the same shape as `images`, in the layer's compute dtype,
        with values in `[0, 255]`.

    Example:

    ```python
    augmenter = SimCLRAugmenter(seed=42)
    images = np.random.uniform(0, 255, size=(8, 96, 96, 3)).astype("float32")
    view_1 = augmenter(images)
    view_2 = augmenter(images)  # an independent second view
    print(view_1.shape)  # (8, 96, 96, 3)
    ```
    """

    def __init__(
        self,
        *,
        crop_area_min=0.08,
        crop_area_max=1.0,
        crop_aspect_range=(3 / 4, 4 / 3),
        flip_probability=0.5,
        jitter_probability=0.8,
        jitter_strength=1.0,
        grayscale_probability=0.2,
        blur_probability=0.5,
        blur_sigma_range=(0.1, 2.0),
        blur_kernel_fraction=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 < crop_area_min <= crop_area_max <= 1.0:
            raise ValueError(
                "The crop area fractions must satisfy "
                "0 < crop_area_min <= crop_area_max <= 1. "
                f"Received: crop_area_min={crop_area_min}, crop_area_max={crop_area_max}"
            )
        crop_aspect_range = _check_range("crop_aspect_range", crop_aspect_range)
        _check_probability("flip_probability", flip_probability)
        _check_probability("jitter_probability", jitter_probability)
        if not jitter_strength >= 0.0:
            raise ValueError(
                f"`jitter_strength` must be >= 0. Received: jitter_strength={jitter_strength}"
            )
        _check_probability("grayscale_probability", grayscale_probability)
        _check_probability("blur_probability", blur_probability)
        blur_sigma_range = _check_range("blur_sigma_range", blur_sigma_range)
        if not 0.0 <= blur_kernel_fraction <= 1.0:
            raise ValueError(
                "`blur_kernel_fraction` must be in [0, 1]. "
                f"Received: blur_kernel_fraction={blur_kernel_fraction}"
            )

        self.crop_area_min = float(crop_area_min)
        self.crop_area_max = float(crop_area_max)
        self.crop_aspect_range = crop_aspect_range
        self.flip_probability = float(flip_probability)
        self.jitter_probability = float(jitter_probability)
        self.jitter_strength = float(jitter_strength)
        self.grayscale_probability = float(grayscale_probability)
        self.blur_probability = float(blur_probability)
        self.blur_sigma_range = blur_sigma_range
        self.blur_kernel_fraction = float(blur_kernel_fraction)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.expand_dims(images, 0)
        input_dtype = keras.backend.standardize_dtype(images.dtype)
        output_dtype = (
            input_dtype if keras.backend.is_float_dtype(input_dtype) else self.compute_dtype
        )
        images = ops.cast(images, "float32")
        shape = ops.shape(images)
        transformation = self.get_random_transformation(shape[0], shape[1], shape[2])
        outputs = self.apply_transformation(images, transformation)
        outputs = ops.cast(outputs, output_dtype)
        if unbatched:
            outputs = ops.squeeze(outputs, 0)
        return outputs

    def get_random_transformation(self, batch_size, height, width):
        """Draws the random parameters of one view for every image of a batch.

        Args:
            batch_size: int or scalar int tensor, number of images.
            height: int or scalar int tensor, image height in pixels.
            width: int or scalar int tensor, image width in pixels.

        Returns:
            A dict of float32 tensors, each with a leading batch dimension:
            `"crop_boxes"` `[N, 4]` as `(top, left, height, width)` in pixels;
            `"flip"` `[N]` in `{0, 1}`; `"brightness"`, `"contrast"`,
            `"saturation"` `[N]` multiplicative factors (1 when the image is
            not jittered); `"hue"` `[N]` rotation angles in radians;
            `"grayscale"` `[N]` in `{0, 1}`; `"blur"` `[N]` in `{0, 1}`;
            `"blur_sigma"` `[N]` standard deviations in pixels.
        """
        seed = self.seed_generator
        height = ops.cast(height, "float32")
        width = ops.cast(width, "float32")

        def uniform(shape, minval=0.0, maxval=1.0):
            return keras.random.uniform(shape, minval=minval, maxval=maxval, seed=seed)

        def bernoulli(probability):
            return ops.cast(uniform((batch_size,)) < probability, "float32")

        crop_boxes = self._random_crop_boxes(uniform, batch_size, height, width)

        flip = bernoulli(self.flip_probability)

        # Colour jitter. Images that are not jittered get neutral parameters.
        jitter = bernoulli(self.jitter_probability)
        strength = 0.8 * self.jitter_strength
        factor_low = max(0.0, 1.0 - strength)
        factor_high = 1.0 + strength

        def factor():
            return 1.0 + jitter * (uniform((batch_size,), factor_low, factor_high) - 1.0)

        brightness = factor()
        contrast = factor()
        saturation = factor()
        max_angle = 0.2 * self.jitter_strength * 2.0 * math.pi
        hue = jitter * uniform((batch_size,), -max_angle, max_angle)

        grayscale = bernoulli(self.grayscale_probability)
        blur = bernoulli(self.blur_probability)
        blur_sigma = uniform((batch_size,), *self.blur_sigma_range)
        return {
            "crop_boxes": crop_boxes,
            "flip": flip,
            "brightness": brightness,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
            "grayscale": grayscale,
            "blur": blur,
            "blur_sigma": blur_sigma,
        }

    def _random_crop_boxes(self, uniform, batch_size, height, width):
        """The random resized crops `[N, 4]` `(top, left, height, width)`, vectorised over the torchvision retry loop.

        `uniform(shape, minval, maxval)` draws from the augmenter's seed generator; the draws
        are made in a fixed order (areas, aspects, offsets), part of the augmenter's stream.
        """
        candidates = (batch_size, _CROP_ATTEMPTS)
        area = uniform(candidates, self.crop_area_min, self.crop_area_max) * height * width
        log_low, log_high = (math.log(r) for r in self.crop_aspect_range)
        aspect = ops.exp(uniform(candidates, log_low, log_high))
        crop_w = ops.sqrt(area * aspect)
        crop_h = ops.sqrt(area / aspect)
        fits = ops.logical_and(crop_w <= width, crop_h <= height)
        first_fit = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=1), 1)
        crop_w = ops.squeeze(ops.take_along_axis(crop_w, first_fit, axis=1), 1)
        crop_h = ops.squeeze(ops.take_along_axis(crop_h, first_fit, axis=1), 1)
        # Fallback: the largest central window whose aspect ratio is in range.
        aspect_low, aspect_high = self.crop_aspect_range
        image_aspect = width / height
        fallback_w = ops.where(image_aspect > aspect_high, height * aspect_high, width)
        fallback_h = ops.where(image_aspect < aspect_low, width / aspect_low, height)
        any_fit = ops.any(fits, axis=1)
        crop_w = ops.where(any_fit, crop_w, fallback_w)
        crop_h = ops.where(any_fit, crop_h, fallback_h)
        offsets = uniform((batch_size, 2))
        top = ops.where(any_fit, offsets[:, 0], 0.5) * (height - crop_h)
        left = ops.where(any_fit, offsets[:, 1], 0.5) * (width - crop_w)
        return ops.stack([top, left, crop_h, crop_w], axis=1)

    def apply_transformation(self, images, transformation):
        """Applies a transformation drawn by `get_random_transformation`.

        Args:
            images: float32 tensor `[N, H, W, 3]` with values in `[0, 255]`.
            transformation: dict of tensors returned by
                `get_random_transformation(N, H, W)`.

        Returns:
            A float32 tensor `[N, H, W, 3]` with values in `[0, 255]`.
        """
        t = transformation
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        boxes = t["crop_boxes"]

        # Crop and flip: out = Ry @ image @ Rx^T, per image and channel.
        resize_y = _bilinear_matrix(boxes[:, 0], boxes[:, 2], height)
        resize_x = _bilinear_matrix(boxes[:, 1], boxes[:, 3], width)
        flip = ops.reshape(t["flip"], (-1, 1, 1))
        resize_x = flip * ops.flip(resize_x, axis=1) + (1.0 - flip) * resize_x
        x = transposed_matmul(resize_x, transposed_matmul(resize_y, images))

        x = self._color_jitter(x, t)
        gray = ops.reshape(t["grayscale"], (-1, 1, 1, 1))
        x = x + gray * (_grayscale(x) - x)

        blur_y = self._blur_matrix(t["blur_sigma"], t["blur"], height)
        blur_x = self._blur_matrix(t["blur_sigma"], t["blur"], width)
        x = transposed_matmul(blur_x, transposed_matmul(blur_y, x))
        return ops.clip(x, 0.0, _MAX_VALUE)

    def _color_jitter(self, x, t):
        def per_image(v):
            return ops.reshape(v, (-1, 1, 1, 1))

        x = ops.clip(x * per_image(t["brightness"]), 0.0, _MAX_VALUE)
        contrast = per_image(t["contrast"])
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        x = ops.clip(contrast * x + (1.0 - contrast) * mean, 0.0, _MAX_VALUE)
        saturation = per_image(t["saturation"])
        x = ops.clip(saturation * x + (1.0 - saturation) * _grayscale(x), 0.0, _MAX_VALUE)
        # [N, A, B, 3] @ [N, 1, 3, 3] applies each image's RGB matrix to its pixels.
        hue = ops.transpose(_hue_rotation_matrix(t["hue"]), (0, 2, 1))
        x = ops.matmul(x, ops.expand_dims(hue, 1))
        return ops.clip(x, 0.0, _MAX_VALUE)

    def _blur_matrix(self, sigma, apply, size):
        """Per-image truncated 1-D Gaussian as a row-normalised [N, size, size] matrix."""
        size_f = ops.cast(size, "float32")
        radius = ops.floor(ops.floor(self.blur_kernel_fraction * size_f) / 2.0)
        position = ops.arange(size, dtype="float32")
        distance = position[:, None] - position[None, :]
        # Images that are not blurred get sigma -> 0, i.e. the identity matrix.
        sigma = ops.where(apply > 0.5, sigma, 1e-3)
        weights = ops.exp(-ops.square(distance)[None] / (2.0 * ops.square(sigma)[:, None, None]))
        weights = weights * ops.cast(ops.abs(distance) <= radius, "float32")[None]
        return weights / ops.sum(weights, axis=2, keepdims=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "crop_area_min": self.crop_area_min,
                "crop_area_max": self.crop_area_max,
                "crop_aspect_range": list(self.crop_aspect_range),
                "flip_probability": self.flip_probability,
                "jitter_probability": self.jitter_probability,
                "jitter_strength": self.jitter_strength,
                "grayscale_probability": self.grayscale_probability,
                "blur_probability": self.blur_probability,
                "blur_sigma_range": list(self.blur_sigma_range),
                "blur_kernel_fraction": self.blur_kernel_fraction,
                "seed": self.seed,
            }
        )
        return config


def _bilinear_matrix(start, length, size):
    """[N, size, size] matrices that resample the window [start, start + length) to `size` pixels.

    Row i holds the bilinear weights of output pixel i over the input pixels, with
    half-pixel centres, so a full window (start 0, length size) gives the identity.
    """
    size_f = ops.cast(size, "float32")
    position = ops.arange(size, dtype="float32")
    scale = length / size_f
    source = start[:, None] + (position[None, :] + 0.5) * scale[:, None] - 0.5
    # Clamped: a window reaching the border repeats the border pixel.
    return interpolation_matrix(source, size, fill_mode="nearest")


def _grayscale(images):
    weights = ops.convert_to_tensor([[w] for w in _LUMA_WEIGHTS], dtype="float32")
    return ops.matmul(images, weights)


def _hue_rotation_matrix(angle):
    """[N, 3, 3] RGB matrices rotating the chroma (I, Q) plane of YIQ by `angle` radians."""
    angle = angle[:, None, None]
    return (
        ops.convert_to_tensor(_HUE_FIXED, dtype="float32")
        + ops.cos(angle) * ops.convert_to_tensor(_HUE_COS, dtype="float32")
        + ops.sin(angle) * ops.convert_to_tensor(_HUE_SIN, dtype="float32")
    )
