"""Single-object localization data for `ssl-keras detect`: one box and one class per image.

Each image's target is its largest non-difficult object: the largest VOC pixel area
`(xmax - xmin + 1) * (ymax - ymin + 1)` on the original integer coordinates, the first in the
annotation on ties. Images with no non-difficult object are left out and counted. The box is
normalized `(ymin, xmin, ymax, xmax)`; its class is the classification target.

Sources: `voc:PATH` (a VOCdevkit year folder), `tfds:voc/2007`, `tfds:voc/2012` and
`synthetic[:N]`. VOC folders and TFDS both give TFDS `voc` features (see `voc.py`), so target
selection and resizing run the same code (`select_target_tf`, `resize_example`) for both.

Frames. The datasets yield boxes in the frame of the resized `S x S` image. Metrics (IoU) are
computed in the normalized frame of the original image: map predictions back with
`boxes_to_original`. IoU is invariant under `stretch` (a per-axis scaling of both boxes) but
not under `letterbox` (the padding shifts both boxes), so mapping back matters there.
"""

import dataclasses
import functools
import math
import os
import typing

import numpy as np
import tensorflow as tf

from ssl_keras.data import epoch_stream
from ssl_keras.data import source_spec
from ssl_keras.data import synthetic
from ssl_keras.data import voc
from ssl_keras.data.source_spec import SourceError

NO_TARGET = "no non-difficult object"
"""The `skipped` reason of images whose objects are all marked difficult (or that have none)."""

NO_TARGET_LEFT = "no target left after dropping boxes"
"""The `skipped` reason of images with no non-difficult object once their bad boxes (see
`voc.DROP_REASONS`) were dropped."""

OVERLAP_DROPPED = "also listed in val or test, dropped from train"
"""The train `skipped` reason of ids shared with an evaluation split (`drop_split_overlap`)."""

RESIZE_POLICIES = ("stretch", "letterbox")
"""`stretch` resizes to `S x S` ignoring the aspect ratio; `letterbox` keeps it and pads."""

LETTERBOX_FILL = 114.0
"""Padding value of `letterbox`: mid gray, close to the ImageNet mean (124, 116, 104), so the
padding is near zero after the backbone's input normalization (black would be -2 sigma)."""

SPLITS = ("train", "val", "test")
SYNTHETIC_SPLIT = (0.70, 0.15)
"""Fractions of a synthetic set used for train and val; test takes the rest."""

SPEC_FORMS = "voc:PATH (a VOCdevkit year folder), tfds:voc/2007, tfds:voc/2012 or synthetic[:N]"

# TFDS splits per detect split. VOC2012's test set has no annotations, so its train set is
# split 90/10 (TFDS slicing is deterministic) and its validation set serves as test.
_TFDS_SPLITS = {
    "voc/2007": {"train": "train", "val": "validation", "test": "test"},
    "voc/2012": {"train": "train[:90%]", "val": "train[90%:]", "test": "validation"},
}
_TFDS_SHUFFLE_BUFFER = 1024


@dataclasses.dataclass(frozen=True)
class LocalizationData:
    """Batched train/val/test datasets for single-object localization.

    Each element is `(image, {"boxes": boxes, "labels": labels})`: `image` float32
    `[B, S, S, 3]` in [0, 255]; `boxes` float32 `[B, 4]` normalized `(ymin, xmin, ymax,
    xmax)` in the resized image's frame; `labels` int32 `[B]` indices into `class_names`. The
    last batch may be short. `train` is reshuffled each iteration; `val` and `test` keep the
    order of `image_ids`.

    Only the splits named by `load_localization_data(..., splits=...)` are read. A split not
    read has None as its dataset and no key in the per-split dicts (`num_images`, `skipped`,
    `image_ids`, `original_hw`, `targets`, `repaired`); without "train" there is no label
    subset: `train_ids` is empty, `train_pool_size` is 0 and `train_stream` is None.

    Attributes:
        train: `tf.data.Dataset`, the training split (only `train_ids`); None if not read.
        val: `tf.data.Dataset`, the validation split; None if not read.
        test: `tf.data.Dataset`, the test split; None if not read.
        class_names: tuple of str.
        num_images: dict split -> int, images per pass.
        skipped: dict split -> dict reason -> count of what was left out: images (missing,
            undecodable or malformed files, `NO_TARGET`, `NO_TARGET_LEFT`) and bad boxes
            (`voc.DROP_REASONS`, whose names say "box"); reasons with no count are absent.
        train_ids: sorted list of str, the image ids used for training; empty if train was
            not read.
        image_ids: dict split -> list of str ids; for val and test in dataset order, for train
            sorted (the dataset is shuffled).
        original_hw: dict split -> int array `[N, 2]`, original `(height, width)` per image,
            aligned with `image_ids`; pass to `boxes_to_original`.
        train_pool_size: int, training images with a target before the label subset (0 if
            train was not read).
        resize_policy: str, one of `RESIZE_POLICIES`.
        image_size: int, `S`.
        description: str, one line for logs, naming only the splits read.
        train_stream: function `start_batch -> tf.data.Dataset`, the training split as an
            endless stream of `(image, targets)` batches whose pass p is ordered by
            `(seed, p)`, startable at any batch (see `epoch_stream.py`); every pass holds
            every training image, in `ceil(N / batch_size)` batches. `shuffle=False` gives
            the rows of the stream's table in order (row r of every pass is table row r), so
            per-row data computed from one such pass lines up with the shuffled stream of the
            same seed. None for TFDS sources and when train was not read.
        repaired: dict split -> dict reason -> count of what was read after a fix (image
            conversions, sizes fixed from the image, clipped boxes; see
            `voc.load_voc_records`). Defaults to empty.
        messages: list of str, one line per left-out or repaired file, naming it and the
            reason, for logs. Defaults to empty.
        targets: dict split -> `{"boxes": float32 [N, 4], "labels": int32 [N]}`, the target
            of every image, aligned with `image_ids[split]` (for train: the label subset, in
            `train_ids` order), read without decoding any image. The boxes are normalized
            `(ymin, xmin, ymax, xmax)` in the ORIGINAL image frame, the frame of IoU; the
            datasets yield the same boxes moved into the resized frame, i.e.
            `boxes_to_resized(boxes, original_hw[split], image_size, resize_policy)` (equal to
            `boxes` under `stretch`). Defaults to empty.
        split_overlap: dict `"val"` / `"test"` -> number of ids that split shares with
            train.txt (split leakage; VOC only), present only when non-zero; the shared ids
            stay in train unless `drop_split_overlap`. Defaults to empty.
    """

    train: typing.Optional[tf.data.Dataset]
    val: typing.Optional[tf.data.Dataset]
    test: typing.Optional[tf.data.Dataset]
    class_names: tuple
    num_images: dict
    skipped: dict
    train_ids: list
    image_ids: dict
    original_hw: dict
    train_pool_size: int
    resize_policy: str
    image_size: int
    description: str
    train_stream: typing.Optional[typing.Callable] = None
    repaired: dict = dataclasses.field(default_factory=dict)
    messages: list = dataclasses.field(default_factory=list)
    targets: dict = dataclasses.field(default_factory=dict)
    split_overlap: dict = dataclasses.field(default_factory=dict)


# Target selection.


def _pixel_area(bbox, image_hw):
    """VOC pixel area of a TFDS-normalized box: TFDS divides the 1-based coordinates without
    subtracting 1, so `(ymax - ymin) * H` is VOC's extent minus one. Rounding the extents
    makes ties exact for VOC's integer coordinates."""
    ymin, xmin, ymax, xmax = bbox
    height, width = image_hw
    return (round((ymax - ymin) * height) + 1) * (round((xmax - xmin) * width) + 1)


def select_target(objects, *, image_hw=None, skip_difficult=True):
    """Picks the target of one image: its largest non-difficult object.

    Args:
        objects: list of object dicts with `"bbox"`, `"label"` and `"is_difficult"`, as in
            `voc.parse_voc_annotation`. The area is `"area_pixels"` when present, else
            computed from the normalized `"bbox"` (TFDS convention) and `image_hw`.
        image_hw: `(height, width)` of the original image, needed only without
            `"area_pixels"`. Defaults to None.
        skip_difficult: bool, whether difficult objects are excluded. Defaults to True
            (False gives the README's "largest object" over all objects).

    Returns:
        `(box, label)`: `box` float32 `[4]` normalized `(ymin, xmin, ymax, xmax)` and `label`
        int; or None when no object qualifies. Ties go to the first object.

    Example:

    >>> objects = [
    ...     {"bbox": (0, 0, 1, 1), "label": 3, "is_difficult": True, "area_pixels": 900},
    ...     {"bbox": (0, 0, .5, .5), "label": 7, "is_difficult": False, "area_pixels": 200},
    ... ]
    >>> select_target(objects)[1]
    7
    """
    best, best_area = None, -1.0
    for obj in objects:
        if skip_difficult and obj["is_difficult"]:
            continue
        area = obj.get("area_pixels")
        if area is None:
            if image_hw is None:
                raise ValueError(
                    "objects without 'area_pixels' need `image_hw`, the original (height, "
                    "width), to compare areas in pixels. Received: image_hw=None"
                )
            area = _pixel_area(obj["bbox"], image_hw)
        if area > best_area:  # Strict: ties keep the first.
            best, best_area = obj, area
    if best is None:
        return None
    return np.asarray(best["bbox"], dtype=np.float32), int(best["label"])


def select_target_tf(features, image_hw=None):
    """`select_target` for TFDS `voc` features, safe to use inside a tf.data map.

    Args:
        features: dict with `"objects"` (`"bbox"` float `[K, 4]`, `"label"` int `[K]`,
            `"is_difficult"` bool `[K]`) and, without `image_hw`, a decoded `"image"`.
        image_hw: int tensor `[2]`, the original `(height, width)`. Defaults to the shape of
            `features["image"]`.

    Returns:
        `(box, label, found)`: float32 `[4]`, int32 `[]`, bool `[]`; when `found` is False
        (no non-difficult object, or none at all) box and label are zeros.

    Example:

    >>> dataset = load_tfds_voc("voc/2007", "validation")
    >>> dataset = dataset.map(select_target_tf).filter(lambda box, label, found: found)
    """
    objects = features["objects"]
    if image_hw is None:
        image_hw = tf.shape(features["image"])[:2]
    height, width = tf.unstack(tf.cast(image_hw, tf.float32))
    bbox = tf.reshape(tf.cast(objects["bbox"], tf.float32), (-1, 4))
    labels = tf.cast(tf.reshape(objects["label"], (-1,)), tf.int32)
    extent_h = tf.round((bbox[:, 2] - bbox[:, 0]) * height) + 1.0
    extent_w = tf.round((bbox[:, 3] - bbox[:, 1]) * width) + 1.0
    area = tf.where(tf.reshape(objects["is_difficult"], (-1,)), -1.0, extent_h * extent_w)
    count = tf.shape(area)[0]
    best = tf.reduce_max(tf.concat([area, [-1.0]], axis=0))
    found = best >= 0.0
    # tf.argmax does not promise the first of several maxima; the smallest index does.
    first = tf.reduce_min(tf.where(tf.equal(area, best), tf.range(count), count))
    index = tf.where(found, first, count)  # Row `count` is the zero padding below.
    box = tf.gather(tf.concat([bbox, tf.zeros((1, 4))], axis=0), index)
    label = tf.gather(tf.concat([labels, tf.zeros((1,), tf.int32)], axis=0), index)
    return box, label, found


# Resizing and box frames.


def _check_resize(resize):
    if resize not in RESIZE_POLICIES:
        raise ValueError(
            f"`resize` must be one of {', '.join(RESIZE_POLICIES)}. Received: resize={resize!r}"
        )


def letterbox_geometry(original_hw, image_size):
    """Where `letterbox` puts an image: its resized size and padding offsets.

    The longer side becomes `image_size`; the shorter is scaled by the same factor and
    rounded half up, in integer arithmetic so NumPy and TensorFlow agree exactly. The image is
    centred (extra pixel of odd padding at the bottom/right).

    Args:
        original_hw: int array-like `[..., 2]`, original `(height, width)`.
        image_size: int, `S`.

    Returns:
        Tuple of int64 arrays `(new_h, new_w, top, left)`, each of shape `[...]`.
    """
    hw = np.asarray(original_hw, dtype=np.int64)
    height, width = hw[..., 0], hw[..., 1]
    longest = np.maximum(height, width)
    new_h = np.maximum((2 * height * image_size + longest) // (2 * longest), 1)
    new_w = np.maximum((2 * width * image_size + longest) // (2 * longest), 1)
    return new_h, new_w, (image_size - new_h) // 2, (image_size - new_w) // 2


def _letterbox_geometry_tf(original_hw, image_size):
    hw = tf.cast(original_hw, tf.int64)
    height, width = hw[0], hw[1]
    size = tf.constant(image_size, tf.int64)
    longest = tf.maximum(height, width)
    new_h = tf.maximum((2 * height * size + longest) // (2 * longest), 1)
    new_w = tf.maximum((2 * width * size + longest) // (2 * longest), 1)
    return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def boxes_to_resized(boxes, original_hw, image_size, resize):
    """Maps normalized boxes from the original image frame into the resized `S x S` frame.

    Args:
        boxes: float array-like `[..., 4]`, normalized `(ymin, xmin, ymax, xmax)`.
        original_hw: int array-like `[..., 2]` (or `[2]`), original `(height, width)`.
        image_size: int, `S`.
        resize: str, one of `RESIZE_POLICIES`.

    Returns:
        float32 array `[..., 4]`, the boxes in the resized frame.
    """
    _check_resize(resize)
    boxes = np.asarray(boxes, dtype=np.float64)
    if resize == "stretch":
        return boxes.astype(np.float32)
    new_h, new_w, top, left = letterbox_geometry(original_hw, image_size)
    scale = np.stack([new_h, new_w, new_h, new_w], axis=-1)
    offset = np.stack([top, left, top, left], axis=-1)
    return ((boxes * scale + offset) / image_size).astype(np.float32)


def boxes_to_original(boxes, original_hw, image_size, resize):
    """Maps normalized boxes from the resized `S x S` frame back to the original image frame.

    Use it on predictions before computing IoU against the original boxes or drawing on the
    original image. Results are clipped to [0, 1] (a prediction on letterbox padding lands on
    the image border).

    Args:
        boxes: float array-like `[..., 4]`, normalized `(ymin, xmin, ymax, xmax)` in the
            resized frame.
        original_hw: int array-like `[..., 2]` (or `[2]`), original `(height, width)`.
        image_size: int, `S`.
        resize: str, one of `RESIZE_POLICIES`.

    Returns:
        float32 array `[..., 4]`, normalized in the original image frame.

    Example:

    >>> resized = boxes_to_resized([0.1, 0.2, 0.5, 0.9], (375, 500), 64, "letterbox")
    >>> boxes_to_original(resized, (375, 500), 64, "letterbox")  # ~ [0.1, 0.2, 0.5, 0.9]
    """
    _check_resize(resize)
    boxes = np.asarray(boxes, dtype=np.float64)
    if resize == "letterbox":
        new_h, new_w, top, left = letterbox_geometry(original_hw, image_size)
        scale = np.stack([new_h, new_w, new_h, new_w], axis=-1)
        offset = np.stack([top, left, top, left], axis=-1)
        boxes = (boxes * image_size - offset) / scale
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def resize_example(image, box, *, image_size, resize):
    """Resizes one image and moves its box into the resized frame; safe inside tf.data.

    Args:
        image: uint8 or float tensor `[H, W, 3]`.
        box: float32 `[4]`, normalized `(ymin, xmin, ymax, xmax)` in the original frame.
        image_size: int, `S`.
        resize: str, one of `RESIZE_POLICIES`.

    Returns:
        `(image, box)`: float32 `[S, S, 3]` in [0, 255] (bilinear with antialiasing, as the
        pretraining pipeline) and float32 `[4]` in the resized frame.
    """
    _check_resize(resize)
    box = tf.cast(box, tf.float32)
    if resize == "stretch":
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    else:
        geometry = _letterbox_geometry_tf(tf.shape(image)[:2], image_size)
        new_h, new_w, top, left = (tf.cast(value, tf.int32) for value in geometry)
        image = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
        padding = [[top, image_size - new_h - top], [left, image_size - new_w - left], [0, 0]]
        image = tf.pad(image, padding, constant_values=LETTERBOX_FILL)
        scale = tf.cast(tf.stack([new_h, new_w, new_h, new_w]), tf.float32)
        offset = tf.cast(tf.stack([top, left, top, left]), tf.float32)
        box = (box * scale + offset) / image_size
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((image_size, image_size, 3))
    return image, box


# Label subsets.


def _round_half_up(value):
    return int(math.floor(value + 0.5))


class LabelCountError(ValueError):
    """More labelled images asked for (`num`) than the training split has (`available`)."""

    def __init__(self, message, *, num, available):
        super().__init__(message)
        self.num, self.available = num, available

    def __reduce__(self):
        return _label_count_error, (str(self), self.num, self.available)


def _label_count_error(message, num, available):
    return LabelCountError(message, num=num, available=available)


def check_label_fraction(fraction=None, num=None, *, available=None):
    """Raises ValueError unless `fraction` is in (0, 1] and `num` in [1, available]."""
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"`num` must be an int >= 1. Received: num={num!r}")
        if available is not None and num > available:
            raise LabelCountError(
                f"`num` must be at most the {available} labeled images available. "
                f"Received: num={num}",
                num=num,
                available=available,
            )
        return
    if fraction is None or not (0.0 < float(fraction) <= 1.0):
        raise ValueError(
            f"`fraction` must be in the range (0, 1]; use 1.0 for all images. "
            f"Received: fraction={fraction!r}"
        )


def stratified_subset(ids, labels, *, fraction=None, num=None, seed=0):
    """A seeded, class-stratified subset of labeled images.

    With `fraction`, each class keeps `round(fraction * count)` images (half rounds up), at
    least 1 for every class present. With `num` (overrides `fraction`) the per-class counts
    start from `fraction = num / len(ids)` and are moved one image at a time, from the
    classes furthest above their exact share or to those furthest below it, until they sum
    to `num`; a class keeps its one image while others can give. Within a class the images
    are a seeded random choice.

    Args:
        ids: list of unique str image ids.
        labels: list of int class labels, aligned with `ids`.
        fraction: float in (0, 1], the share of each class to keep. Defaults to None.
        num: int in [1, len(ids)], the total to keep; overrides `fraction`. Defaults to None.
        seed: int, the selection seed: same seed, same subset. Defaults to 0.

    Returns:
        Sorted list of the kept ids.

    Raises:
        ValueError: `fraction` outside (0, 1], `num` outside [1, len(ids)], or `ids` and
            `labels` of different lengths.

    Example:

    >>> stratified_subset(["a", "b", "c", "d"], [0, 0, 1, 1], fraction=0.5, seed=1)
    ['a', 'c']  # one of each class; which one depends on the seed
    """
    ids = list(ids)
    labels = [int(label) for label in labels]
    if len(ids) != len(labels):
        raise ValueError(
            "`ids` and `labels` must have the same length. "
            f"Received: len(ids)={len(ids)}, len(labels)={len(labels)}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("`ids` must be unique.")
    check_label_fraction(fraction, num, available=len(ids))
    if num is not None:
        fraction = num / len(ids)
    fraction = float(fraction)
    by_class = {}
    for image_id, label in sorted(zip(ids, labels)):
        by_class.setdefault(label, []).append(image_id)
    classes = sorted(by_class)
    exact = {c: fraction * len(by_class[c]) for c in classes}
    keep = {c: min(max(_round_half_up(exact[c]), 1), len(by_class[c])) for c in classes}
    if num is not None:
        while sum(keep.values()) > num:
            givers = [c for c in classes if keep[c] > 1] or [c for c in classes if keep[c] > 0]
            c = max(givers, key=lambda c: keep[c] - exact[c])  # First class on ties.
            keep[c] -= 1
        while sum(keep.values()) < num:
            takers = [c for c in classes if keep[c] < len(by_class[c])]
            c = max(takers, key=lambda c: exact[c] - keep[c])
            keep[c] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = by_class[c]
        order = rng.permutation(len(members))
        chosen.extend(members[i] for i in order[: keep[c]])
    return sorted(chosen)


# Sources.


@dataclasses.dataclass
class _Split:
    """One split before batching: ids, target labels and boxes (original frame, float32
    `[N, 4]`), original sizes, what was left out or fixed."""

    ids: list
    labels: list
    boxes: np.ndarray
    original_hw: np.ndarray
    skipped: dict
    repaired: dict = dataclasses.field(default_factory=dict)
    messages: list = dataclasses.field(default_factory=list)
    overlap: dict = dataclasses.field(default_factory=dict)


def _check_splits(splits):
    """The requested splits in `SPLITS` order; raises ValueError unless a non-empty subset."""
    if isinstance(splits, str):
        # A bare "test" would otherwise be read as the splits "t", "e", "s", "t".
        raise ValueError(
            f"`splits` must be a tuple of split names, not one string; use splits=({splits!r},). "
            f"Received: splits={splits!r}"
        )
    try:
        requested = list(splits)
    except TypeError:
        raise ValueError(
            f"`splits` must be a non-empty tuple of {', '.join(SPLITS)}. Received: splits={splits!r}"
        ) from None
    for split in requested:
        if split not in SPLITS:
            raise ValueError(
                f"`splits` must be a subset of {', '.join(SPLITS)}; {split!r} is not a split. "
                f"Received: splits={splits!r}"
            )
    if not requested:
        raise ValueError(
            f"`splits` must name at least one of {', '.join(SPLITS)}. Received: splits={splits!r}"
        )
    return tuple(split for split in SPLITS if split in requested)


def _image_sets_needed(splits):
    """Why the image sets are needed, for errors: all three for detect, else those asked for."""
    names = list(splits)
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    plural = "s" if len(names) > 1 else ""
    if tuple(splits) == SPLITS:
        return f"detect needs the {listed} image sets"
    return f"splits={tuple(splits)!r} asks for the {listed} image set{plural}"


def _parse_spec(spec):
    text = os.fspath(spec).strip()
    try:
        parsed = source_spec.parse_source(text)
    except SourceError as error:
        raise SourceError(f"source {spec!r}: {error}; detect takes {SPEC_FORMS}") from None
    if parsed.kind == "folder":
        raise SourceError(
            f"source {spec!r}: detect needs boxes, which an image folder does not have; "
            f"use {SPEC_FORMS}"
        )
    if parsed.kind == "voc" and parsed.split is not None:
        raise SourceError(
            f"source {spec!r}: detect uses the train, val and test image sets together; "
            f"drop :{parsed.split} (voc:{parsed.path})"
        )
    if parsed.kind == "tfds":
        if parsed.name not in _TFDS_SPLITS:
            raise SourceError(
                f"source {spec!r}: detect supports TFDS {', '.join(_TFDS_SPLITS)} only, "
                f"without a split or version; use {SPEC_FORMS}"
            )
        if text != f"tfds:{parsed.name}":
            raise SourceError(
                f"source {spec!r}: detect uses the train, validation and test splits "
                f"together; use tfds:{parsed.name}"
            )
    return parsed


def _finish_split(dataset, count, *, batch_size):
    # filter() hides the size; the scan already counted it, so tell tf.data (and Keras).
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _example_map(image_size, resize):
    def to_example(features):
        box, label, _ = select_target_tf(features)
        image, box = resize_example(features["image"], box, image_size=image_size, resize=resize)
        return image, {"boxes": box, "labels": label}

    return to_example


def _has_target(features):
    return select_target_tf(features)[2]


def _read_image_sets(parsed, splits):
    """split -> ids of each requested image set, all checked before any image is loaded, so a
    missing one fails at once; the others are not looked at (a folder with only test.txt can
    be evaluated on)."""
    root = parsed.path
    listed = {}
    for split in splits:
        try:
            listed[split] = voc.read_image_set(root, split)
        except SourceError as error:
            raise SourceError(
                f"source {parsed.spec!r}: {error} ({_image_sets_needed(splits)})"
            ) from None
    for split, ids in listed.items():
        if not ids:
            raise SourceError(
                f"source {parsed.spec!r}: {os.path.join(root, 'ImageSets', 'Main', f'{split}.txt')} "
                "lists no image id; write one image id per line"
            )
    return listed


def split_overlap(listed):
    """The ids each evaluation split shares with train: split -> sorted list of ids.

    Args:
        listed: dict split -> list of ids, as in the image sets.

    Returns:
        dict `"val"` / `"test"` -> sorted ids also in `listed["train"]`, only for splits
        that share some; empty when train is absent or the sets are disjoint.
    """
    train = set(listed.get("train", ()))
    shared = {
        split: sorted(train & set(listed[split])) for split in ("val", "test") if split in listed
    }
    return {split: ids for split, ids in shared.items() if ids}


def _overlap_lines(overlap, drop):
    """One warning line per evaluation split that shares ids with train."""
    lines = []
    for split, ids in overlap.items():
        examples = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        action = (
            "dropped from train"
            if drop
            else "trained on AND evaluated on, which inflates the metrics; "
            "remove them from train.txt, or load with drop_split_overlap=True"
        )
        lines.append(
            f"warning: ImageSets/Main/train.txt and {split}.txt share {len(ids)} "
            f"id{'s' if len(ids) != 1 else ''} ({examples}): {action}"
        )
    return lines


def _scan_voc_split(parsed, split, exclude=frozenset()):
    """`(records, _Split)` of one VOC split: the records with a target (less the ids in
    `exclude`, counted as `OVERLAP_DROPPED`), and what was kept, left out or fixed."""
    root = parsed.path
    loaded = voc.load_voc_records(root, split)
    kept, targets = [], []
    skipped, messages = dict(loaded.skipped), list(loaded.messages)
    loaded_records = [r for r in loaded.records if r["image_id"] not in exclude]
    if len(loaded_records) < len(loaded.records):
        skipped[OVERLAP_DROPPED] = len(loaded.records) - len(loaded_records)
    line_of = {line: i for i, line in enumerate(messages)}
    for record in loaded_records:
        target = select_target(record["objects"])
        if target is not None:
            kept.append(record)
            targets.append(target)
            continue
        if any(reason in voc.DROP_REASONS for reason, _ in record.get("problems", ())):
            # The file already has its line (the dropped boxes); say what followed there.
            reason, i = NO_TARGET_LEFT, line_of[record["message"]]
            messages[i] = f"{messages[i]}; no target left, image skipped"
        else:
            reason = NO_TARGET  # All difficult: ordinary VOC data, counted, no line.
        skipped[reason] = skipped.get(reason, 0) + 1
    if not kept:
        left_out = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "none"
        list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        raise SourceError(
            f"source {parsed.spec!r}: image set {split} has no usable image "
            f"(left out: {left_out}); check {list_file} and the files it lists"
        )
    return kept, _Split(
        ids=[r["image_id"] for r in kept],
        labels=[label for _, label in targets],
        boxes=np.asarray([box for box, _ in targets], dtype=np.float32).reshape(-1, 4),
        original_hw=np.asarray([(r["height"], r["width"]) for r in kept], dtype=np.int64),
        skipped=skipped,
        repaired=dict(loaded.repaired),
        messages=messages,
    )


def _voc_splits(
    parsed, *, image_size, batch_size, seed, fraction, num, resize, splits, drop_overlap=False
):
    listed = _read_image_sets(parsed, splits)
    overlap = split_overlap(listed)
    exclude = {i for ids in overlap.values() for i in ids} if drop_overlap else set()
    scanned, records = {}, {}
    for split in splits:
        records[split], scanned[split] = _scan_voc_split(
            parsed, split, exclude if split == "train" else frozenset()
        )
    if "train" in splits:
        scanned["train"].overlap = {split: len(ids) for split, ids in overlap.items()}
        scanned["train"].messages[:0] = _overlap_lines(overlap, drop_overlap)
    return _voc_datasets(
        parsed,
        records,
        scanned,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        fraction=fraction,
        num=num,
        resize=resize,
        splits=splits,
    )


def _voc_datasets(
    parsed, records, scanned, *, image_size, batch_size, seed, fraction, num, resize, splits
):
    """The tf.data datasets of the scanned VOC splits, and what `_assemble` takes."""
    root = parsed.path
    train_ids = []
    if "train" in splits:
        train_ids = _train_subset(scanned["train"], fraction=fraction, num=num, seed=seed)
        chosen = set(train_ids)
        records["train"] = [r for r in records["train"] if r["image_id"] in chosen]
    to_example = _example_map(image_size, resize)
    datasets = {}
    for split in splits:
        train = split == "train"
        dataset = voc.voc_feature_dataset(records[split], shuffle=train, seed=seed)
        dataset = dataset.filter(_has_target).map(
            to_example,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not train or seed is not None,
        )
        datasets[split] = _finish_split(dataset, len(records[split]), batch_size=batch_size)
    if "train" in splits:
        table, decode = voc.voc_feature_table(records["train"])
        datasets["train_stream"] = functools.partial(
            epoch_stream.epoch_stream,
            table,
            lambda row: to_example(decode(row)),
            num_items=len(records["train"]),
            batch_size=batch_size,
            seed=seed or 0,
            drop_remainder=False,
        )
    return datasets, scanned, train_ids, voc.VOC_CLASSES, f"VOC {root}"


def _encoded_hw(encoded):
    """(height, width) of encoded image bytes, reading only the header of JPEGs."""
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.extract_jpeg_shape(encoded)[:2],
        lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2],
    )


def _scan_features(dataset):
    """One pass over TFDS `voc` features: `_Split` of the images with a target.

    Images may be decoded (uint8) or encoded bytes (`SkipDecoding`); only the headers of
    encoded JPEGs are read.
    """
    encoded = dataset.element_spec["image"].dtype == tf.string

    def summary(features):
        hw = _encoded_hw(features["image"]) if encoded else tf.shape(features["image"])[:2]
        box, label, found = select_target_tf(features, hw)
        return features["image/filename"], box, label, found, hw

    ids, labels, boxes, sizes, missing = [], [], [], [], 0
    mapped = dataset.map(summary, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    for filename, box, label, found, hw in mapped.as_numpy_iterator():
        if not found:
            missing += 1
            continue
        ids.append(os.path.splitext(filename.decode("utf-8"))[0])
        labels.append(int(label))
        boxes.append(box)
        sizes.append(hw)
    return _Split(
        ids=ids,
        labels=labels,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        original_hw=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        skipped={NO_TARGET: missing} if missing else {},
    )


def _decode_features(features):
    image = tf.io.decode_image(features["image"], channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return {**features, "image": image}


def _tfds_splits(parsed, *, image_size, batch_size, seed, fraction, num, resize, splits):
    name = parsed.name
    tfds_splits = _TFDS_SPLITS[name]
    scanned = {}
    for split in splits:
        raw = voc.load_tfds_voc(name, tfds_splits[split], decode_images=False)
        scanned[split] = _scan_features(raw)
        if not scanned[split].ids:
            raise SourceError(
                f"source {parsed.spec!r}: TFDS split {tfds_splits[split]!r} has no image "
                "with a non-difficult object"
            )
    train_ids = []
    if "train" in splits:
        train_ids = _train_subset(scanned["train"], fraction=fraction, num=num, seed=seed)
    to_example = _example_map(image_size, resize)
    datasets = {}
    for split in splits:
        train = split == "train"
        dataset = voc.load_tfds_voc(
            name, tfds_splits[split], shuffle=train, seed=seed, decode_images=False
        )
        count = len(scanned[split].ids)
        if train:
            if len(train_ids) < count:
                table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant([f"{i}.jpg" for i in train_ids]),
                        tf.ones((len(train_ids),), tf.int32),
                    ),
                    default_value=0,
                )
                dataset = dataset.filter(lambda f: table.lookup(f["image/filename"]) > 0)
                count = len(train_ids)
            # Shuffling encoded images keeps the buffer small; decoding comes after.
            dataset = dataset.shuffle(
                min(count, _TFDS_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True
            )
        dataset = dataset.filter(_has_target_encoded).map(
            lambda f: to_example(_decode_features(f)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not train or seed is not None,
        )
        datasets[split] = _finish_split(dataset, count, batch_size=batch_size)
    return datasets, scanned, train_ids, voc.VOC_CLASSES, f"TFDS {name}"


def _has_target_encoded(features):
    return select_target_tf(features, _encoded_hw(features["image"]))[2]


def _synthetic_splits(parsed, *, image_size, batch_size, seed, fraction, num, resize, splits):
    total = parsed.num_images
    num_train = _round_half_up(total * SYNTHETIC_SPLIT[0])
    num_val = _round_half_up(total * SYNTHETIC_SPLIT[1])
    bounds = {
        "train": (0, num_train),
        "val": (num_train, num_train + num_val),
        "test": (num_train + num_val, total),
    }
    bounds = {split: bounds[split] for split in splits}
    if any(stop <= start for start, stop in bounds.values()):
        raise SourceError(
            f"source {parsed.spec!r}: {total} scenes leave a split empty after the 70/15/15 "
            "split; use synthetic:N with N >= 7"
        )
    # Scenes use sequence 0 whatever the seed: the seed picks the label subset and the order,
    # so runs with different seeds see the same data. All N scenes are drawn even for one
    # split, so a scene is the same whichever splits are asked for.
    arrays = synthetic.make_synthetic_arrays(num_images=total, image_size=image_size, seed=0)
    ids = np.asarray([f"synthetic-{i:05d}" for i in range(total)])
    boxes, labels = arrays["boxes"][:, 0], arrays["labels"][:, 0]
    scanned = {
        split: _Split(
            ids=[str(image_id) for image_id in ids[start:stop]],
            labels=[int(label) for label in labels[start:stop]],
            boxes=np.asarray(boxes[start:stop], dtype=np.float32),
            original_hw=np.full((stop - start, 2), image_size, dtype=np.int64),
            skipped={},
        )
        for split, (start, stop) in bounds.items()
    }
    train_ids, chosen = [], set()
    if "train" in splits:
        train_ids = _train_subset(scanned["train"], fraction=fraction, num=num, seed=seed)
        chosen = set(train_ids)

    def to_example(image, box, label):
        image, box = resize_example(image, box, image_size=image_size, resize=resize)
        return image, {"boxes": box, "labels": label}

    datasets = {}
    for split, (start, stop) in bounds.items():
        rows = np.arange(start, stop)
        if split == "train":
            rows = np.asarray([i for i in rows if ids[i] in chosen])
        dataset = tf.data.Dataset.from_tensor_slices(
            (arrays["image"][rows], boxes[rows], labels[rows].astype(np.int32))
        )
        if split == "train":
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
        datasets[split] = _finish_split(dataset, len(rows), batch_size=batch_size)
        if split == "train":
            table = (
                tf.constant(arrays["image"][rows]),
                tf.constant(boxes[rows]),
                tf.constant(labels[rows].astype(np.int32)),
            )
            datasets["train_stream"] = functools.partial(
                epoch_stream.epoch_stream,
                table,
                lambda row: to_example(*row),
                num_items=len(rows),
                batch_size=batch_size,
                seed=seed or 0,
                drop_remainder=False,
            )
    return datasets, scanned, train_ids, synthetic.SYNTHETIC_CLASSES, "synthetic shapes"


def _train_subset(split, *, fraction, num, seed):
    if num is None and float(fraction) == 1.0:
        return sorted(split.ids)
    return stratified_subset(split.ids, split.labels, fraction=fraction, num=num, seed=seed)


_LOADERS = {"voc": _voc_splits, "tfds": _tfds_splits, "synthetic": _synthetic_splits}


def load_localization_data(
    spec,
    *,
    image_size,
    batch_size,
    seed=0,
    label_fraction=1.0,
    num_labeled=None,
    resize="stretch",
    splits=SPLITS,
    drop_split_overlap=False,
):
    """Opens a localization source: train/val/test, one target box and class per image.

    Splits: `voc:PATH` uses `ImageSets/Main/{train,val,test}.txt`; `tfds:voc/2007` the TFDS
    splits train/validation/test; `tfds:voc/2012` (whose test set has no annotations)
    `train[:90%]`/`train[90%:]`/validation; `synthetic[:N]` scenes 0..N-1 split 70/15/15 in
    order, the target being the main object `boxes[0]`. The label subset applies to train only.
    Only the splits in `splits` are read, so evaluating needs only its own split's image set.

    Args:
        spec: str, `voc:PATH`, `tfds:voc/2007`, `tfds:voc/2012` or `synthetic[:N]`.
        image_size: int, `S`, the side of the square model input.
        batch_size: int, images per batch (the last batch may be short).
        seed: int or None, the label-subset and shuffle seed. Defaults to 0.
        label_fraction: float in (0, 1], the class-stratified share of the training images
            to use (see `stratified_subset`). Defaults to 1.0.
        num_labeled: int or None, the number of training images; overrides
            `label_fraction`. Defaults to None.
        resize: str, `"stretch"` or `"letterbox"` (pad value `LETTERBOX_FILL`), applied to
            every split. Defaults to `"stretch"`.
        splits: non-empty tuple of str, a subset of `SPLITS`, the splits to read (order and
            repeats do not matter). The others are neither opened nor checked, and are
            None / absent in the result (see `LocalizationData`). Defaults to `SPLITS`.
        drop_split_overlap: bool, whether VOC train ids also in val or test are dropped
            from train (`OVERLAP_DROPPED`); they are counted either way. Defaults to False.

    Returns:
        A `LocalizationData`.

    Raises:
        SourceError: an unsupported spec, a missing folder, a missing or empty image set of a
            requested split, an unprepared TFDS dataset while offline, or a requested split
            with no usable image. Bad files and annotations do not raise: they are counted
            (`skipped`, `repaired`) and named (`messages`).
        ValueError: invalid `image_size`, `batch_size`, `resize`, `label_fraction`,
            `num_labeled` or `splits`.

    Example:

    >>> data = load_localization_data("voc:VOCdevkit/VOC2007", image_size=240, batch_size=32,
    ...                               label_fraction=0.1)
    >>> images, targets = next(iter(data.train))
    >>> targets["boxes"].shape, targets["labels"].shape
    (TensorShape([32, 4]), TensorShape([32]))
    >>> test_only = load_localization_data("voc:VOCdevkit/VOC2007", image_size=240,
    ...                                    batch_size=32, splits=("test",))
    >>> test_only.train is None, test_only.train_ids, list(test_only.targets)
    (True, [], ['test'])
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"`image_size` must be an int > 0. Received: image_size={image_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be an int > 0. Received: batch_size={batch_size!r}")
    _check_resize(resize)
    check_label_fraction(label_fraction, num_labeled)
    splits = _check_splits(splits)
    parsed = _parse_spec(spec)
    opened = _LOADERS[parsed.kind](
        parsed,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        fraction=label_fraction,
        num=num_labeled,
        resize=resize,
        splits=splits,
        **({"drop_overlap": drop_split_overlap} if parsed.kind == "voc" else {}),
    )
    return _assemble(*opened, splits=splits, resize=resize, image_size=image_size)


def _assemble(datasets, scanned, train_ids, class_names, what, *, splits, resize, image_size):
    """The `LocalizationData` of a loader's output: each split's ids, targets, sizes and counts.

    Args:
        datasets: dict, the loader's tf.data datasets by split (and `train_stream`).
        scanned: dict, each split's scan (ids, boxes, labels, original sizes, skips, repairs).
        train_ids: the ids of the label subset.
        class_names: the class names, in label order.
        what: str, the source's description, for `description`.
    """
    # Rows of each scanned split that the dataset yields, in `image_ids` order: all of val
    # and test, and of train the label subset sorted by id.
    rows = {split: np.arange(len(scanned[split].ids)) for split in splits}
    if "train" in splits:
        chosen = set(train_ids)
        train_rows = [i for i, image_id in enumerate(scanned["train"].ids) if image_id in chosen]
        train_rows.sort(key=lambda i: scanned["train"].ids[i])
        rows["train"] = np.asarray(train_rows, dtype=np.int64)
    image_ids = {
        split: list(train_ids) if split == "train" else list(scanned[split].ids) for split in splits
    }
    original_hw = {
        split: scanned[split].original_hw[rows[split]].reshape(-1, 2) for split in splits
    }
    targets = {
        split: {
            "boxes": scanned[split].boxes[rows[split]].reshape(-1, 4).astype(np.float32),
            "labels": np.asarray(scanned[split].labels, dtype=np.int32)[rows[split]],
        }
        for split in splits
    }
    num_images = {split: len(image_ids[split]) for split in splits}
    pool = len(scanned["train"].ids) if "train" in splits else 0
    counts = []
    for split in splits:
        subset = f" (of {pool})" if split == "train" and num_images[split] < pool else ""
        counts.append(f"{split} {num_images[split]}{subset}")
    description = f"{what}: {', '.join(counts)} images; {resize} to {image_size}x{image_size}"
    return LocalizationData(
        train=datasets.get("train"),
        val=datasets.get("val"),
        test=datasets.get("test"),
        class_names=tuple(class_names),
        num_images=num_images,
        skipped={split: dict(scanned[split].skipped) for split in splits},
        train_ids=list(train_ids),
        image_ids=image_ids,
        original_hw=original_hw,
        train_pool_size=pool,
        resize_policy=resize,
        image_size=image_size,
        description=description,
        train_stream=(
            lambda start_batch, shuffle=True: datasets["train_stream"](
                start_batch=start_batch, shuffle=shuffle
            )
        )
        if "train_stream" in datasets
        else None,
        repaired={split: dict(scanned[split].repaired) for split in splits},
        # An id listed in two image sets has one line.
        messages=list(dict.fromkeys(m for split in splits for m in scanned[split].messages)),
        targets=targets,
        split_overlap=dict(scanned["train"].overlap) if "train" in splits else {},
    )
