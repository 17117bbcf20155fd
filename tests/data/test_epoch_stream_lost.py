"""Epoch streams whose files vanish: skipped and named, then a clear error, never a spin."""

import os

import pytest
import tensorflow as tf

from bad_files import good_jpeg
from ssl_keras.data import epoch_stream, image_files


def stream_of(paths, **kwargs):
    return epoch_stream.epoch_stream(
        tf.constant(paths),
        lambda path: image_files.read_image(path, image_size=16),
        num_items=len(paths),
        batch_size=4,
        seed=0,
        ignore_errors=True,
        **kwargs,
    )


def test_one_lost_file_is_skipped_and_named(tmp_path, capfd):
    paths = [good_jpeg(tmp_path, name=f"{i}.jpg", seed=i) for i in range(9)]
    os.remove(paths[3])
    batches = iter(stream_of(paths))
    shapes = [next(batches).shape for _ in range(4)]  # Two passes of 2 full batches.
    assert shapes == [(4, 16, 16, 3)] * 4
    assert f"image {paths[3]} could not be read any more; skipped" in capfd.readouterr().err


def test_a_pass_that_loses_all_its_files_stops_with_an_error_naming_them(tmp_path):
    paths = [good_jpeg(tmp_path, name=f"{i}.jpg", seed=i) for i in range(8)]
    batches = iter(stream_of(paths))
    next(batches)
    for path in paths:
        os.remove(path)
    with pytest.raises(epoch_stream.ImagesLostError) as caught:
        with epoch_stream.lost_files_as_error():
            for _ in range(10):  # Without the check: an endless stream that yields nothing.
                next(batches)
    message = str(caught.value)
    assert "image files in a row could not be read" in message
    assert sum(path in message for path in paths) == 3 and "and 5 more" in message
    assert "\n" not in message and "assertion failed" not in message


def test_consecutive_losses_stop_the_stream_before_the_pass_ends(tmp_path):
    paths = [good_jpeg(tmp_path, name=f"{i}.jpg", seed=i) for i in range(40)]
    for path in paths[:39]:
        os.remove(path)
    with pytest.raises(
        epoch_stream.ImagesLostError, match="image files in a row could not be read in pass 0"
    ):
        with epoch_stream.lost_files_as_error():
            next(iter(stream_of(paths, max_consecutive_lost=5)))


def test_other_errors_pass_unchanged():
    with pytest.raises(tf.errors.InvalidArgumentError, match="unrelated"):
        with epoch_stream.lost_files_as_error():
            raise tf.errors.InvalidArgumentError(None, None, "unrelated")


def test_a_strict_stream_that_loses_a_file_names_it(tmp_path):
    paths = [good_jpeg(tmp_path, name=f"{i}.jpg", seed=i) for i in range(4)]
    stream = epoch_stream.epoch_stream(
        tf.constant(paths),
        lambda path: image_files.read_image(path, image_size=16),
        num_items=4,
        batch_size=4,
        seed=0,
    )
    os.remove(paths[2])
    with pytest.raises(epoch_stream.ImagesLostError) as caught:
        with epoch_stream.lost_files_as_error():
            next(iter(stream))
    assert str(caught.value).startswith(f"image file {paths[2]} could not be read any more")
