"""Epoch streams: training data whose order is a function of (seed, pass), so runs can resume.

`tf.data.Dataset.shuffle(reshuffle_each_iteration=True)` draws each pass's order from a
generator that restarts with the process, so a run resumed at epoch k would see pass 0's order
again. Here pass `p` is ordered by a stateless permutation of `(seed, p)`, and a stream can
start at any batch: a resumed run reads exactly the batches the uninterrupted run would have
read, without decoding the skipped ones (the skip happens on indices, before decoding).
"""

import tensorflow as tf


def steps_per_pass(num_items, batch_size, *, drop_remainder=True):
    """Batches in one pass over `num_items` items."""
    if drop_remainder:
        return num_items // batch_size
    return -(-num_items // batch_size)


def pass_order(num_items, seed, pass_index, *, shuffle=True):
    """The item order of one pass: a stateless permutation of `(seed, pass_index)`.

    Safe to use inside tf.data.

    Args:
        num_items: int, items per pass.
        seed: int, the run's data seed.
        pass_index: int or int64 scalar tensor, which pass (0-based).
        shuffle: bool, False gives `0..num_items-1` in every pass. Defaults to True.

    Returns:
        int64 tensor `[num_items]`.
    """
    if not shuffle:
        return tf.range(num_items, dtype=tf.int64)
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(pass_index, tf.int64)])
    return tf.cast(
        tf.argsort(tf.random.stateless_uniform([num_items], seed=key), stable=True), tf.int64
    )


def epoch_stream(
    items,
    decode,
    *,
    num_items,
    batch_size,
    seed,
    start_batch=0,
    shuffle=True,
    drop_remainder=True,
    ignore_errors=False,
):
    """An endless, batched stream of passes over `items`, starting at any batch.

    Pass `p` visits the items in `pass_order(num_items, seed, p)`; with `drop_remainder` it
    stops at the last full batch, so every pass has `steps_per_pass` batches and batch `b` of
    the stream is batch `b % steps_per_pass` of pass `b // steps_per_pass`, whatever
    `start_batch` was. Give Keras `steps_per_epoch` with it (the stream has no end).

    Args:
        items: a tensor, or a nest of tensors (ragged allowed), with `num_items` rows.
        decode: function of one row (the nest structure of `items`) returning one element;
            runs in a parallel, deterministic tf.data map.
        num_items: int, rows in `items`.
        batch_size: int.
        seed: int, the order seed.
        start_batch: int >= 0, the first batch of the stream. Defaults to 0.
        shuffle: bool, whether passes are shuffled. Defaults to True.
        drop_remainder: bool, whether each pass drops its last short batch. Defaults to True.
        ignore_errors: bool, whether rows whose `decode` fails are dropped (a last-resort
            safety net for image files: a dropped row shifts the rest of its pass by one).
            Defaults to False.

    Returns:
        An infinite `tf.data.Dataset` of batches.

    Example:

    >>> stream = epoch_stream(tf.constant(paths), read, num_items=len(paths), batch_size=64,
    ...                       seed=2, start_batch=3 * steps_per_pass(len(paths), 64))
    """
    if num_items <= 0 or batch_size <= 0:
        raise ValueError(
            f"`num_items` and `batch_size` must be > 0. Received: num_items={num_items}, "
            f"batch_size={batch_size}"
        )
    per_pass = steps_per_pass(num_items, batch_size, drop_remainder=drop_remainder)
    if per_pass == 0:
        raise ValueError(f"{num_items} items make no full batch of {batch_size}")
    if start_batch < 0:
        raise ValueError(f"`start_batch` must be >= 0. Received: start_batch={start_batch}")
    first_pass, skip_batches = divmod(int(start_batch), per_pass)
    used = per_pass * batch_size if drop_remainder else num_items

    def one_pass(pass_index):
        order = pass_order(num_items, seed, pass_index, shuffle=shuffle)[:used]
        skip = tf.where(tf.equal(pass_index, first_pass), skip_batches * batch_size, 0)
        rows = tf.data.Dataset.from_tensor_slices(order[skip:])
        rows = rows.map(
            lambda i: decode(tf.nest.map_structure(lambda t: tf.gather(t, i), items)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if ignore_errors:
            rows = rows.ignore_errors()
        return rows.batch(batch_size, drop_remainder=drop_remainder)

    stream = tf.data.Dataset.counter(first_pass).flat_map(one_pass)
    return stream.prefetch(tf.data.AUTOTUNE)
