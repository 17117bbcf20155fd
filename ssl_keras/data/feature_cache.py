"""Frozen-backbone feature caches: compute a backbone's outputs once, train a head on them.

With the backbone frozen (inference mode, weights fixed), its output for an image never
changes, so running it in every epoch repeats the same work. `backbone_outputs` runs it once
per image, and once more per horizontally flipped image; `cached_train_stream` then serves
these features as an epoch stream (`epoch_stream.py`: resumable at any batch, the same order
as the image stream with the same seed), choosing per image and per step between the plain and
the flipped copy, with a box flipped to match. The scale/translate jitter of `BoxAugmenter`
needs the image and cannot be cached; the cached path augments by flips only.
"""

import numpy as np
import tensorflow as tf

from ssl_keras.data import epoch_stream


def flip_boxes(boxes):
    """Horizontal flip of normalized `(ymin, xmin, ymax, xmax)` boxes: x -> 1 - x."""
    boxes = np.asarray(boxes, dtype="float32")
    return np.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], axis=-1)


def backbone_outputs(backbone, batches, *, flip=False):
    """Runs `backbone` in inference mode over `(images, targets)` batches.

    Args:
        backbone: a Keras model (images in [0, 255] -> features).
        batches: iterable of `(images [B, S, S, 3], {"boxes": [B, 4], "labels": [B]})`.
        flip: bool, whether each image (and its box) is also flipped horizontally and run
            again. Defaults to False.

    Returns:
        dict of NumPy arrays aligned by row: `features` `[N, ...]`, `boxes` `[N, 4]`,
        `labels` `[N]`, and with `flip`, `flipped_features` and `flipped_boxes`.
    """
    import keras

    parts = {"features": [], "boxes": [], "labels": []}
    if flip:
        parts.update(flipped_features=[], flipped_boxes=[])
    for images, targets in batches:
        images = np.asarray(images, dtype="float32")
        parts["features"].append(keras.ops.convert_to_numpy(backbone(images, training=False)))
        parts["boxes"].append(np.asarray(targets["boxes"], dtype="float32"))
        parts["labels"].append(np.asarray(targets["labels"], dtype="int32"))
        if flip:
            flipped = np.ascontiguousarray(images[:, :, ::-1])
            parts["flipped_features"].append(
                keras.ops.convert_to_numpy(backbone(flipped, training=False))
            )
            parts["flipped_boxes"].append(flip_boxes(parts["boxes"][-1]))
    if not parts["features"]:
        raise ValueError("no batch to compute features of")
    return {key: np.concatenate(value) for key, value in parts.items()}


def cached_dataset(cache, *, batch_size):
    """`({"features": f}, {"boxes", "labels"})` batches of a cache, in row order (val/test)."""
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"features": cache["features"]}, {"boxes": cache["boxes"], "labels": cache["labels"]})
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cached_train_stream(cache, *, batch_size, seed, flip_seed=None, flip_probability=0.5):
    """`start_batch -> dataset`: an endless stream of cached training batches.

    Row `r` of the cache must be row `r` of the image stream's table, so that with the same
    `seed` both streams visit the images in the same order.

    Args:
        cache: dict from `backbone_outputs` (with `flipped_*` when `flip_seed` is given).
        batch_size: int.
        seed: int, the order seed (the image stream's).
        flip_seed: int or None, the seed of the flips: batch `b` draws its flips from
            `(flip_seed, b)`, so a resumed stream draws the same. None: no flips. Defaults to None.
        flip_probability: float, the chance of the flipped copy. Defaults to 0.5.

    Returns:
        A function of `start_batch` returning a `tf.data.Dataset` of
        `({"features": [B, ...]}, {"boxes": [B, 4], "labels": [B]})`.
    """
    flips = flip_seed is not None
    if flips and "flipped_features" not in cache:
        raise ValueError("flips need a cache computed with flip=True")
    items = {
        key: tf.constant(cache[key])
        for key in (
            ("features", "boxes", "labels", "flipped_features", "flipped_boxes")
            if flips
            else ("features", "boxes", "labels")
        )
    }
    num_items = len(cache["labels"])

    def choose(batch_index, rows):
        if not flips:
            return {"features": rows["features"]}, {
                "boxes": rows["boxes"],
                "labels": rows["labels"],
            }
        size = tf.shape(rows["labels"])[0]
        key = tf.stack([tf.constant(flip_seed, tf.int64), tf.cast(batch_index, tf.int64)])
        flip = tf.random.stateless_uniform([size], seed=key) < flip_probability
        features = tf.where(
            tf.reshape(flip, [-1] + [1] * (len(rows["features"].shape) - 1)),
            rows["flipped_features"],
            rows["features"],
        )
        boxes = tf.where(flip[:, None], rows["flipped_boxes"], rows["boxes"])
        return {"features": features}, {"boxes": boxes, "labels": rows["labels"]}

    def stream(start_batch):
        batches = epoch_stream.epoch_stream(
            items,
            lambda row: row,
            num_items=num_items,
            batch_size=batch_size,
            seed=seed,
            start_batch=start_batch,
            drop_remainder=False,
        )
        counted = tf.data.Dataset.zip(tf.data.Dataset.counter(start_batch), batches)
        return counted.map(choose, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return stream
