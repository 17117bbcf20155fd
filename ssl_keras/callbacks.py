"""Callbacks shared by the training commands: checkpoints, throughput, learning rate, images.

These run on the host, outside the compiled step. TensorBoard image summaries need TensorFlow,
imported lazily, as `keras.callbacks.TensorBoard` does.
"""

import glob
import os
import time

import keras
import numpy as np

from ssl_keras.run_directory import read_json, write_json_atomic

STATE_FILE = "state.json"


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, optimizer state, RNG state) as `.keras` after each epoch.

    Files go to `directory/epoch-NNNN.keras`, written under a temporary name and renamed, and
    `state.json` records the last complete epoch, so a run killed at any moment resumes from
    the last finished epoch. Only the newest `keep` checkpoints are kept.

    Args:
        directory: checkpoint folder.
        keep: int >= 1, number of checkpoints kept. Defaults to 2.
    """

    def __init__(self, directory, *, keep=2):
        super().__init__()
        self.directory = directory
        self.keep = keep
        os.makedirs(directory, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        path = os.path.join(self.directory, f"epoch-{epoch + 1:04d}.keras")
        tmp = os.path.join(self.directory, f".tmp-epoch-{epoch + 1:04d}.keras")
        self.model.save(tmp)
        os.replace(tmp, path)
        write_json_atomic(
            os.path.join(self.directory, STATE_FILE),
            {"epoch": epoch + 1, "checkpoint": os.path.basename(path),
             "logs": {k: float(v) for k, v in (logs or {}).items()}},
        )
        for old in sorted(glob.glob(os.path.join(self.directory, "epoch-*.keras")))[: -self.keep]:
            os.unlink(old)


def last_checkpoint(directory):
    """Returns `(epoch, path)` of the newest complete checkpoint, or `(0, None)`."""
    state_path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(state_path):
        return 0, None
    state = read_json(state_path)
    return int(state["epoch"]), os.path.join(directory, state["checkpoint"])


class Throughput(keras.callbacks.Callback):
    """Measures images per second per training step (host wall clock, after the step returns)."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.step_seconds = []
        self.train_seconds = 0.0

    def on_train_begin(self, logs=None):
        self._train_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_seconds.append(time.perf_counter() - self._step_start)

    def on_train_end(self, logs=None):
        self.train_seconds = time.perf_counter() - self._train_start

    def summary(self):
        """Median images/s over steps (the first step, which compiles, excluded) and overall."""
        steps = self.step_seconds[1:] or self.step_seconds
        median = float(np.median(steps)) if steps else float("nan")
        total = len(self.step_seconds) * self.batch_size
        return {
            "images_per_second": self.batch_size / median if steps else 0.0,
            "images_per_second_overall": total / self.train_seconds if self.train_seconds else 0.0,
            "median_step_seconds": median,
            "steps": len(self.step_seconds),
            "train_seconds": self.train_seconds,
        }


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs (History, TensorBoard)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def image_grid(rows):
    """Tiles a list of equally long lists of [H, W, 3] images into one uint8 image."""
    tiles = [np.concatenate([np.asarray(img) for img in row], axis=1) for row in rows]
    return np.clip(np.concatenate(tiles, axis=0), 0, 255).astype("uint8")


class ImageSummary(keras.callbacks.Callback):
    """Writes an image, made by `make_image(model)`, to TensorBoard at train start and each epoch.

    Args:
        log_dir: TensorBoard folder (a `images` sub-folder is used).
        tag: summary name.
        make_image: function of the model returning a uint8 [H, W, 3] array.
    """

    def __init__(self, log_dir, tag, make_image):
        super().__init__()
        self.log_dir = os.path.join(log_dir, "images")
        self.tag = tag
        self.make_image = make_image

    def _write(self, step):
        import tensorflow as tf

        image = self.make_image(self.model)
        writer = tf.summary.create_file_writer(self.log_dir)
        with writer.as_default():
            tf.summary.image(self.tag, image[None], step=step)
        writer.flush()
        writer.close()

    def on_train_begin(self, logs=None):
        self._write(0)

    def on_epoch_end(self, epoch, logs=None):
        self._write(epoch + 1)
