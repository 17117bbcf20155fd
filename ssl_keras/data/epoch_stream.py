"""Epoch streams: training data whose order is a function of (seed, pass), so runs can resume.

`tf.data.Dataset.shuffle(reshuffle_each_iteration=True)` draws each pass's order from a
generator that restarts with the process, so a run resumed at epoch k would see pass 0's order
again. Here pass `p` is ordered by a stateless permutation of `(seed, p)`, and a stream can
start at any batch: a resumed run reads exactly the batches the uninterrupted run would have
read, without decoding the skipped ones (the skip happens on indices, before decoding).

With `ignore_errors`, a row whose decoding fails (an image file deleted, or changed, after the
scan) is dropped, named on stderr, and counted; when `max_consecutive_lost` rows in a row, or
a whole pass, fail, the stream stops with an error naming some of them (`ImagesLostError`
once `lost_files_as_error` translates it), rather than spinning for ever on an endless stream
that yields nothing, as when the drive holding the images is unmounted mid-run.
"""

import contextlib
import re
import sys

import tensorflow as tf

from ssl_keras.data.source_spec import SourceError

MAX_CONSECUTIVE_LOST = 16
"""Rows in a row whose decoding may fail before an epoch stream stops with an error."""

_LOST_MARKER = "image files lost during training:"
_NAMED_LOST = 3  # Names in the error message.
# How `tf.io.read_file` inside a tf.data map reports a missing file.
_NOT_FOUND = re.compile(r"(?:\}\} |Iterator::[\w:]+: )([^\n]+?); No such file or directory")


class ImagesLostError(SourceError):
    """Files of a training stream could not be read any more (moved, deleted, unmounted)."""


@contextlib.contextmanager
def lost_files_as_error():
    """Turns the errors of a stream whose files vanished into `ImagesLostError`, one line.

    Wrap the loop that iterates the stream (e.g. `model.fit`). Translated: the error an
    `ignore_errors` epoch stream stops with, and a file that a strict pipeline cannot find
    any more (`tf.errors.NotFoundError`); other errors pass unchanged.

    Raises:
        ImagesLostError: the stream lost `MAX_CONSECUTIVE_LOST` rows in a row, or a pass, or
            a file it reads no longer exists.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        message = error.message or ""
        start = message.find(_LOST_MARKER)
        if start < 0:
            raise
        # `tf.debugging.Assert` prints its data as "[text]" and appends the op's context.
        text = message[start:].split("\n")[0].rstrip()
        text = text[:-1] if text.endswith("]") else text
        raise ImagesLostError(text) from None
    except tf.errors.NotFoundError as error:
        found = _NOT_FOUND.search(error.message or "")
        if found is None:
            raise
        raise ImagesLostError(
            f"image file {found.group(1)} could not be read any more (no such file) during "
            "training; was it moved or deleted, or is its drive unmounted? Restore it and "
            "continue with --resume"
        ) from None


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
    names=None,
    max_consecutive_lost=MAX_CONSECUTIVE_LOST,
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
            Each dropped row is named on stderr; `max_consecutive_lost` dropped in a row, or
            a whole pass dropped, stop the stream with an error (see `lost_files_as_error`).
            Defaults to False.
        names: string tensor `[num_items]` naming the rows in messages, or None: `items` if
            it is a string tensor (paths), else the row numbers. Defaults to None.
        max_consecutive_lost: int, with `ignore_errors`, how many rows in a row may fail.
            Defaults to `MAX_CONSECUTIVE_LOST`.

    Returns:
        An infinite `tf.data.Dataset` of batches.

    Example:

    >>> stream = epoch_stream(path_tensor(paths), read, num_items=len(paths), batch_size=64,
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
    names = _row_names(items, names, num_items)

    def row(i):
        return decode(tf.nest.map_structure(lambda t: tf.gather(t, i), items))

    def one_pass(pass_index):
        order = pass_order(num_items, seed, pass_index, shuffle=shuffle)[:used]
        skip = tf.where(tf.equal(pass_index, first_pass), skip_batches * batch_size, 0)
        if ignore_errors:
            rows = _checked_rows(
                row, order, skip, pass_index, names=names, limit=max_consecutive_lost
            )
        else:
            rows = tf.data.Dataset.from_tensor_slices(order[skip:])
            rows = rows.map(row, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return rows.batch(batch_size, drop_remainder=drop_remainder)

    stream = tf.data.Dataset.counter(first_pass).flat_map(one_pass)
    return stream.prefetch(tf.data.AUTOTUNE)


def _row_names(items, names, num_items):
    """The names of the rows in messages: `names`, else `items` when they are paths."""
    if names is not None:
        return tf.convert_to_tensor(names)
    if isinstance(items, tf.Tensor) and items.dtype == tf.string:
        return items
    return tf.strings.as_string(tf.range(num_items))


def _placeholder(spec):
    """A dummy element of `spec` (dense tensors only), unknown dimensions set to 0."""
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            "with `ignore_errors`, `decode` must return dense tensors. "
            f"Received: an element of spec {spec}"
        )
    return tf.zeros([0 if d is None else d for d in spec.shape.as_list()], spec.dtype)


def _checked_rows(row, order, skip, pass_index, *, names, limit):
    """Decoded rows of one pass, dropping those that fail, stopping when too many do.

    Each row carries its position in the pass, and an end marker follows the last one, so a
    gap in the positions is a run of dropped rows, even when nothing after it survives.
    """
    used = tf.shape(order, out_type=tf.int64)[0]
    positions = tf.range(tf.cast(skip, tf.int64), used)
    rows = tf.data.Dataset.from_tensor_slices(positions).map(
        lambda position: (position, row(tf.gather(order, position))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    rows = rows.ignore_errors()
    end = tf.nest.map_structure(_placeholder, rows.element_spec[1])
    rows = rows.concatenate(tf.data.Dataset.from_tensors((used, end)))

    def check(expected, element):
        position = element[0]
        lost = tf.gather(names, tf.gather(order, tf.range(expected, position)))
        joined = tf.strings.reduce_join(lost[:_NAMED_LOST], separator=", ")
        more = tf.size(lost, out_type=tf.int64) - _NAMED_LOST
        joined += tf.where(
            more > 0, tf.strings.join([" and ", tf.strings.as_string(more), " more"]), ""
        )
        whole_pass = tf.equal(position, used) & tf.equal(expected, tf.cast(skip, tf.int64))
        too_many = (tf.size(lost) >= limit) | (whole_pass & (tf.size(lost) > 0))
        message = tf.strings.join(
            [
                f"{_LOST_MARKER} ",
                tf.strings.as_string(tf.size(lost)),
                " image files in a row could not be read in pass ",
                tf.strings.as_string(pass_index),
                " (",
                joined,
                "); were they moved or deleted, or is their drive unmounted? Restore them and "
                "continue with --resume",
            ]
        )
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(too_many), [message])]):
            warn = tf.cond(
                tf.size(lost) > 0,
                lambda: _print_lost(lost),
                lambda: tf.constant(True),
            )
        with tf.control_dependencies([warn]):
            return position + 1, element

    rows = rows.scan(tf.cast(skip, tf.int64), check)
    return rows.filter(lambda position, _: position < used).map(lambda _, value: value)


def _print_lost(lost):
    line = tf.strings.reduce_join(
        tf.strings.join(["warning: image ", lost, " could not be read any more; skipped"]),
        separator="\n",
    )
    with tf.control_dependencies([tf.print(line, output_stream=sys.stderr)]):
        return tf.constant(True)
