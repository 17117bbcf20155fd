"""Embedded procedural dataset: coloured shapes on textured backgrounds.

It needs no download and no disk, so every command and test can run offline. Each scene is
a pure function of `(index, seed)`: the same pair always gives the same bytes.

Scenes hold 1 to 3 objects. The first object is the "main" object: it is drawn first, and is
always clearly the largest (its side is 0.40-0.70 of the image, the others' 0.14-0.30), so a
localization task can use "the largest box" as its target. Smaller objects are drawn on top
of it but never cover more than 40% of its box together, and they never hide each other.
"""

import numpy as np
import tensorflow as tf

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "ring", "cross", "stripe-box")
"""Class names; a scene's `labels` index into this tuple."""

MAX_OBJECTS = 3
"""The most objects a scene can hold (the padded size of `synthetic_dataset` targets)."""

_MAIN_SIDE = (0.40, 0.70)
_OTHER_SIDE = (0.14, 0.30)
# log-aspect range per class: round shapes stay nearly round, boxes and triangles stretch.
_LOG_ASPECT = {0: 0.10, 1: 0.10, 2: 0.30, 3: 0.10, 4: 0.10, 5: 0.30}
_MAX_MAIN_COVERED = 0.40
_MAX_OTHER_OVERLAP = 0.15
_PLACEMENT_TRIES = 20
_MIN_CONTRAST = 110.0


def _draw_background(rng, image_size):
    """Draws the background: a two-colour linear gradient, soft stripes and pixel noise.

    Drawn first from `rng`, so a fresh `default_rng((seed, index))` reproduces the background
    of `make_synthetic_scene(index, seed=seed)` (the tests rely on that).
    """
    size = image_size
    colors = rng.uniform(0.0, 255.0, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    stripe_angle = rng.uniform(0.0, np.pi)
    stripe_period = rng.uniform(0.08, 0.35) * size
    stripe_amplitude = rng.uniform(0.0, 25.0)
    noise_sigma = rng.uniform(3.0, 12.0)

    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    # Gradient and stripes are linear in (y, x), so both are built from 1-D vectors:
    # sin(a + b) = sin a cos b + cos a sin b avoids a sine per pixel.
    ty = coords * np.sin(angle)
    tx = coords * np.cos(angle)
    t = ty[:, None] + tx[None, :]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    frequency = 2.0 * np.pi * size / stripe_period
    py = (coords * (frequency * np.sin(stripe_angle)))[:, None]
    px = (coords * (frequency * np.cos(stripe_angle)))[None, :]
    shade = np.sin(py) * np.cos(px) + np.cos(py) * np.sin(px)
    shade *= stripe_amplitude
    # One gray noise plane shared by the channels: a third of the cost of colour noise.
    shade += rng.standard_normal((size, size), dtype=np.float32) * noise_sigma
    background = t[..., None] * (colors[1] - colors[0])
    background += shade[..., None] + colors[0]
    return background.astype(np.float32)


def _shape_mask(label, height, width):
    """Boolean [height, width] mask of class `label` filling its box."""
    v = (np.arange(height, dtype=np.float32) + 0.5) / height * 2.0 - 1.0
    u = (np.arange(width, dtype=np.float32) + 0.5) / width * 2.0 - 1.0
    yy = v[:, None]
    xx = u[None, :]
    name = SYNTHETIC_CLASSES[label]
    if name == "circle":
        return xx**2 + yy**2 <= 1.0
    if name == "triangle":
        # Apex at the top centre, base along the bottom edge.
        return np.abs(xx) <= (yy + 1.0) / 2.0 + 1.0 / width
    if name == "ring":
        radius2 = xx**2 + yy**2
        return (radius2 <= 1.0) & (radius2 >= 0.5**2)
    if name == "cross":
        return (np.abs(xx) <= 0.3) | (np.abs(yy) <= 0.3)
    # square and stripe-box fill their box.
    return np.ones((height, width), dtype=bool)


def _contrasting_color(rng, reference):
    """A random colour at least `_MIN_CONTRAST` (L2) away from `reference`."""
    for _ in range(8):
        color = rng.uniform(0.0, 255.0, size=3).astype(np.float32)
        if np.linalg.norm(color - reference) >= _MIN_CONTRAST:
            return color
    return np.where(reference > 127.5, 25.0, 230.0).astype(np.float32)


def _texture(rng, label, color, height, width):
    """Fill colours [height, width, 3] for one object."""
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if SYNTHETIC_CLASSES[label] == "stripe-box":
        # Bold stripes of two contrasting colours are what defines this class.
        second = _contrasting_color(rng, color)
        orientation = rng.integers(0, 3)
        period = rng.uniform(4.0, 10.0)
        phase = np.broadcast_to((ys, xs, ys + xs)[orientation], (height, width))
        on = (np.floor(phase / (period / 2.0)) % 2).astype(bool)
        return np.where(on[..., None], color, second).astype(np.float32)
    style = rng.integers(0, 3)
    fill = np.broadcast_to(color, (height, width, 3)).astype(np.float32)
    if style == 1:  # shaded: a linear light ramp across the object.
        strength = rng.uniform(20.0, 45.0)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        ramp = (ys / max(height, 1)) * np.sin(angle) + (xs / max(width, 1)) * np.cos(angle)
        fill = fill + (ramp - 0.5)[..., None] * strength
    elif style == 2:  # speckled: strong pixel noise.
        sigma = rng.uniform(8.0, 18.0)
        fill = fill + rng.standard_normal((height, width), dtype=np.float32)[..., None] * sigma
    return fill


def _intersection(a, b):
    """Intersection area of pixel boxes (y0, x0, y1, x1)."""
    dy = min(a[2], b[2]) - max(a[0], b[0])
    dx = min(a[3], b[3]) - max(a[1], b[1])
    return max(dy, 0) * max(dx, 0)


def _area(box):
    return (box[2] - box[0]) * (box[3] - box[1])


def _fits(candidate, placed):
    """Whether `candidate` keeps the main object visible and hides no other object."""
    if not placed:
        return True
    main = placed[0]
    covered = sum(_intersection(box, main) for box in placed[1:] + [candidate])
    if covered > _MAX_MAIN_COVERED * _area(main):
        return False
    for box in placed[1:]:
        smaller = min(_area(box), _area(candidate))
        if _intersection(box, candidate) > _MAX_OTHER_OVERLAP * smaller:
            return False
    return True


def make_synthetic_scene(index, *, image_size=128, seed=0):
    """Draws one synthetic scene.

    Args:
        index: int >= 0, which scene of the sequence to draw.
        image_size: int, height and width of the square image in pixels. Defaults to 128.
        seed: int >= 0, selects the sequence. Defaults to 0.

    Returns:
        A tuple `(image, boxes, labels)`: `image` uint8 `[image_size, image_size, 3]`;
        `boxes` float32 `[K, 4]` as normalized `(ymin, xmin, ymax, xmax)`, tight around each
        shape, with `boxes[0]` the main (largest) object; `labels` int32 `[K]` indices into
        `SYNTHETIC_CLASSES`; `1 <= K <= MAX_OBJECTS`.

    Example:

    >>> image, boxes, labels = make_synthetic_scene(7, image_size=64)
    >>> image.shape, image.dtype
    ((64, 64, 3), dtype('uint8'))
    """
    if index < 0 or seed < 0:
        raise ValueError(f"`index` and `seed` must be >= 0. Received: index={index}, seed={seed}")
    if image_size < 16:
        raise ValueError(f"`image_size` must be >= 16. Received: image_size={image_size}")
    size = int(image_size)
    rng = np.random.default_rng((seed, index))
    canvas = _draw_background(rng, size)

    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    placed, boxes, labels = [], [], []
    for i in range(num_objects):
        label = int(rng.integers(0, len(SYNTHETIC_CLASSES)))
        low, high = _MAIN_SIDE if i == 0 else _OTHER_SIDE
        side = rng.uniform(low, high) * size
        log_aspect = rng.uniform(-_LOG_ASPECT[label], _LOG_ASPECT[label])
        height = int(np.clip(round(side * np.exp(log_aspect)), 4, size))
        width = int(np.clip(round(side * np.exp(-log_aspect)), 4, size))
        box = None
        for _ in range(_PLACEMENT_TRIES):
            y0 = int(rng.integers(0, size - height + 1))
            x0 = int(rng.integers(0, size - width + 1))
            candidate = (y0, x0, y0 + height, x0 + width)
            if _fits(candidate, placed):
                box = candidate
                break
        if box is None:
            continue  # No room left for this distractor: the scene keeps fewer objects.
        y0, x0, y1, x1 = box
        region = canvas[y0:y1, x0:x1]
        background_mean = region.mean(axis=(0, 1))
        color = _contrasting_color(rng, background_mean)
        mask = _shape_mask(label, height, width)
        fill = _texture(rng, label, color, height, width)
        region[mask] = fill[mask]
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        placed.append(box)
        boxes.append((y0 + rows[0], x0 + cols[0], y0 + rows[-1] + 1, x0 + cols[-1] + 1))
        labels.append(label)

    image = np.clip(canvas, 0.0, 255.0).round().astype(np.uint8)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(size)
    return image, boxes, np.asarray(labels, dtype=np.int32)


def make_synthetic_arrays(*, num_images=512, image_size=128, seed=0):
    """Draws scenes `0 .. num_images - 1` into padded NumPy arrays.

    Args:
        num_images: int > 0, how many scenes. Defaults to 512.
        image_size: int, side of the square images. Defaults to 128.
        seed: int >= 0, selects the sequence. Defaults to 0.

    Returns:
        A dict with `"image"` uint8 `[N, S, S, 3]`, `"boxes"` float32
        `[N, MAX_OBJECTS, 4]` (zero padded), `"labels"` int32 `[N, MAX_OBJECTS]` (padded
        with -1) and `"num_objects"` int32 `[N]`.
    """
    if num_images <= 0:
        raise ValueError(f"`num_images` must be > 0. Received: num_images={num_images}")
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    boxes = np.zeros((num_images, MAX_OBJECTS, 4), dtype=np.float32)
    labels = np.full((num_images, MAX_OBJECTS), -1, dtype=np.int32)
    counts = np.zeros((num_images,), dtype=np.int32)
    for index in range(num_images):
        image, scene_boxes, scene_labels = make_synthetic_scene(
            index, image_size=image_size, seed=seed
        )
        k = len(scene_labels)
        images[index] = image
        boxes[index, :k] = scene_boxes
        labels[index, :k] = scene_labels
        counts[index] = k
    return {"image": images, "boxes": boxes, "labels": labels, "num_objects": counts}


def synthetic_dataset(*, num_images=512, image_size=128, seed=0, with_targets=False):
    """An unbatched tf.data dataset of synthetic scenes, drawn up front with NumPy.

    Args:
        num_images: int > 0, how many scenes. Defaults to 512.
        image_size: int, side of the square images. Defaults to 128.
        seed: int >= 0, selects the sequence. Defaults to 0.
        with_targets: bool, whether to yield the boxes and labels too. Defaults to False.

    Returns:
        A `tf.data.Dataset` in scene order. Without targets each element is a float32 image
        `[S, S, 3]` in [0, 255]. With targets each element is a dict: `"image"` as above,
        `"boxes"` float32 `[MAX_OBJECTS, 4]` normalized `(ymin, xmin, ymax, xmax)`,
        `"labels"` int32 `[MAX_OBJECTS]` and `"num_objects"` int32; only the first
        `num_objects` rows of boxes and labels are real, the rest are padding (labels -1).

    Example:

    >>> ds = synthetic_dataset(num_images=8, image_size=32)
    >>> next(iter(ds)).shape
    TensorShape([32, 32, 3])
    """
    arrays = make_synthetic_arrays(num_images=num_images, image_size=image_size, seed=seed)
    # Stored as uint8 (4x smaller in the graph) and cast per element.
    if not with_targets:
        dataset = tf.data.Dataset.from_tensor_slices(arrays["image"])
        return dataset.map(lambda image: tf.cast(image, tf.float32))

    def to_float(element):
        return {**element, "image": tf.cast(element["image"], tf.float32)}

    return tf.data.Dataset.from_tensor_slices(arrays).map(to_float)
