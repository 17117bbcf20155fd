"""Callbacks shared by the training commands: throughput, learning rate, images.

Checkpoints, interruptions and NaN stops are in `resumable.py`.

These run on the host, outside the compiled step. TensorBoard image summaries need TensorFlow,
imported lazily, as `keras.callbacks.TensorBoard` does.
"""

import os
import time

import keras
import numpy as np


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
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


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


class BestEpoch(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best validation metric (model selection on val).

    After each epoch whose `monitor` beats the best so far, the weights go to `weights_path`
    (through a temporary file and a rename) and `{"epoch", "monitor", "value"}` to
    `record_path`. An existing record is read first, so a resumed run keeps the best epoch of
    its earlier part.

    Args:
        weights_path: str, ending in `.weights.h5`.
        record_path: str, the JSON record.
        monitor: str, a `logs` key. Defaults to `"val_mean_iou"`.
        mode: `"max"` or `"min"`. Defaults to `"max"`.
    """

    def __init__(self, weights_path, record_path, *, monitor="val_mean_iou", mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'. Received: mode={mode!r}")
        self.weights_path, self.record_path = weights_path, record_path
        self.monitor, self.mode = monitor, mode
        self.record = read_best_epoch(record_path)

    def _better(self, value):
        if self.record is None:
            return True
        return value > self.record["value"] if self.mode == "max" else value < self.record["value"]

    def on_epoch_end(self, epoch, logs=None):
        from ssl_keras.runs.run_directory import write_file_atomic, write_json_atomic

        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(float(value)) or not self._better(float(value)):
            return
        write_file_atomic(self.weights_path, self.model.save_weights)
        self.record = {"epoch": int(epoch) + 1, "monitor": self.monitor, "value": float(value)}
        write_json_atomic(self.record_path, self.record)


def read_best_epoch(record_path):
    """The record `BestEpoch` wrote, or None.

    Raises:
        RunFileError: the record is damaged (truncated, edited); the message names it.
    """
    from ssl_keras.runs.run_directory import RunFileError, read_json

    if not os.path.isfile(record_path):
        return None
    record = read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("value"), (int, float)):
        raise RunFileError(f"{record_path}: holds no best-epoch value; was it edited?")
    return record
