"""Resumable training: checkpoints at epoch ends and on Ctrl-C, restored RNG state, NaN stops.

`fit_resumable` wraps `model.fit` for the training commands:

- Every epoch end writes `checkpoints/epoch-NNNN.keras` and `state.json` (see
  `RunCheckpoint`). SIGINT or SIGTERM lets the current step finish, writes
  `epoch-NNNN-step-SSSSSS.keras` and raises `TrainingInterrupted`; a second signal stops at
  once.
- A checkpoint and its state are one unit: the state is stored inside the `.keras` archive
  (`ssl_keras_state.json`) before the archive is renamed into place, and `state.json` only
  repeats the newest one's. `checkpoint_state` takes the newest checkpoint that is a complete
  archive holding its state, says which newer ones it skipped and why, and refuses
  (`CheckpointError`) rather than start over when checkpoints are there but none is intact.
- A `.keras` file does not hold the state of the `keras.random.SeedGenerator`s (augmenters,
  dropout); `state.json` does, and `load_checkpoint` puts it back, so a resumed run draws the
  same augmentations as an uninterrupted one.
- The data come from an epoch stream (`data/epoch_stream.py`) that can start at any batch, so a
  run resumed mid-epoch reads the same batches as an uninterrupted one.
- A non-finite loss stops the run before anything is saved (`NonFiniteLossError`), so the
  last checkpoint stays the last good one.
"""

import contextlib
import glob
import json
import math
import os
import re
import signal
import sys
import threading
import zipfile

import keras
import numpy as np

from ssl_keras.data.epoch_stream import lost_files_as_error
from ssl_keras.runs.signal_watchdog import SignalWatchdog
from ssl_keras.runs.run_directory import (
    RunDirectoryError,
    RunFileError,
    RunWriteError,
    make_directory,
    read_json,
    write_file_atomic,
    write_json_atomic,
)

STATE_FILE = "state.json"
EMBEDDED_STATE = "ssl_keras_state.json"
"""The checkpoint's own state record, stored inside its `.keras` archive."""
_CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})(?:-step-(\d{6,}))?\.keras$")


class TrainingInterrupted(Exception):
    """The user stopped training (SIGINT/SIGTERM); a checkpoint was written first.

    Attributes:
        checkpoint: str, the checkpoint written.
        epoch: int, epochs completed.
        step: int, steps completed in the next epoch (0 at an epoch end).
    """

    def __init__(self, message, *, checkpoint, epoch, step):
        super().__init__(message)
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step

    def __reduce__(self):
        # Keyword-only arguments: without this, pickling (from a worker process) loses them.
        return _training_interrupted, (str(self), self.checkpoint, self.epoch, self.step)


def _training_interrupted(message, checkpoint, epoch, step):
    return TrainingInterrupted(message, checkpoint=checkpoint, epoch=epoch, step=step)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


def seed_generator_states(model):
    """The states of every `keras.random.SeedGenerator` in `model`, in a stable order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


class CheckpointError(RunDirectoryError):
    """Checkpoints are there but none can be resumed from (damaged, or without a state record)."""


def _checkpoint_files(directory):
    """Checkpoint file names in `directory`, newest `(epoch, step)` first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(directory), "epoch-*.keras")):
        match = _CHECKPOINT_NAME.fullmatch(os.path.basename(path))
        if match:
            found.append(((int(match.group(1)), int(match.group(2) or 0)), os.path.basename(path)))
    return [name for _, name in sorted(found, reverse=True)]


def embedded_state(path):
    """The state record stored inside checkpoint `path`, or None if it holds none.

    Raises:
        CheckpointError: `path` is not a complete, undamaged `.keras` archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # the CRC of every member
            if damaged is not None:
                raise CheckpointError(f"{path}: {damaged} inside it is damaged")
            if EMBEDDED_STATE not in archive.namelist():
                return None
            return json.loads(archive.read(EMBEDDED_STATE).decode("utf-8"))
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise CheckpointError(
            f"{path}: truncated or damaged (not a complete .keras archive)"
        ) from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from None


def _state_record(directory):
    """`(state.json's content or None, why it cannot be used or None)`."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None, None
    try:
        record = read_json(path)
    except RunFileError as error:
        return None, str(error)
    if not isinstance(record, dict) or not isinstance(record.get("checkpoint"), str):
        return None, f"{path}: names no checkpoint"
    return record, None


def checkpoint_state(directory, *, log=None):
    """The state of the newest intact checkpoint in `directory`, or None if it holds none.

    A checkpoint counts when its file is a complete archive that holds its own state record
    (or, for a checkpoint from before that record, when `state.json` names it). Newer ones
    that do not count are skipped, and so is a damaged `state.json`, each with a line to `log`.

    Args:
        directory: str, the checkpoint folder.
        log: function receiving one-line notes on what was skipped, or None.

    Returns:
        dict with `epoch`, `step`, `checkpoint` (file name), `path`, `logs`, `seed_generators`.

    Raises:
        CheckpointError: checkpoints or a `state.json` are there but no checkpoint is intact,
            so resuming would silently start over.
    """
    record, record_problem = _state_record(directory)
    skipped = [record_problem] if record_problem else []
    for name in _checkpoint_files(directory):
        path = os.path.join(directory, name)
        try:
            state = embedded_state(path)
        except CheckpointError as error:
            skipped.append(str(error))
            continue
        if state is None and record is not None and record["checkpoint"] == name:
            state = record
        if state is None:
            skipped.append(f"{path}: holds no state record and {STATE_FILE} does not name it")
            continue
        state = {**state, "checkpoint": name, "path": path}
        state.setdefault("step", 0)
        for reason in skipped if log else ():
            log(f"skipped {reason}; resuming from the newest intact checkpoint, {name}")
        if log and record is None and not record_problem:
            log(
                f"note: {os.path.join(directory, STATE_FILE)} is missing; the state stored in {name} "
                "is used"
            )
        return state
    if record is not None:
        skipped.append(f"{STATE_FILE} names {record['checkpoint']}, which is missing")
    if skipped:
        raise CheckpointError(
            f"no intact checkpoint to resume from in {directory}: "
            + "; ".join(skipped)
            + ". Nothing was changed; start a new run with another --out"
        )
    return None


def last_good_checkpoint(directory):
    """A phrase naming the newest intact checkpoint in `directory`, for error messages."""
    try:
        last = checkpoint_state(directory)
    except CheckpointError:
        last = None
    if not last:
        return "no checkpoint was written yet"
    return (
        f"the last good checkpoint is {last['path']} (epoch {last['epoch']}"
        + (f", step {last['step']}" if last["step"] else "")
        + ")"
    )


def load_checkpoint(state):
    """Loads the checkpoint described by `checkpoint_state(...)`, RNG states included.

    Raises:
        CheckpointError: the file cannot be loaded, or does not match its state.
    """
    try:
        model = keras.saving.load_model(state["path"])
    except Exception as error:  # Keras raises many types; the user needs the file and the reason
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {state['path']}: cannot be loaded ({reason})") from error
    stored = state.get("seed_generators")
    if stored is not None:
        variables = seed_generator_states(model)
        if len(variables) != len(stored):
            raise CheckpointError(
                f"checkpoint {state['path']}: {len(stored)} seed generator states stored but the "
                f"model has {len(variables)}; the checkpoint does not match its state record"
            )
        for variable, value in zip(variables, stored):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return model


def save_checkpoint(model, path, state):
    """Writes `model` and its `state` record as one `.keras` file, atomically (one rename)."""

    def write(tmp):
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(EMBEDDED_STATE, json.dumps(state, sort_keys=True))

    return write_file_atomic(path, write)


class StopRequest:
    """Set by the SIGINT/SIGTERM handler of `stop_on_signals`; read by `RunCheckpoint`."""

    def __init__(self):
        self.signal_name = None

    @property
    def requested(self):
        return self.signal_name is not None


@contextlib.contextmanager
def stop_on_signals(request):
    """Turns the first SIGINT/SIGTERM into `request.signal_name`; a second one acts as usual.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    watchdog = SignalWatchdog()  # Signals still end a main thread blocked in native code.

    def handler(signum, frame):
        watchdog.handled()
        request.signal_name = signal.Signals(signum).name
        for sig, old in previous.items():
            signal.signal(sig, old)
        sys.stderr.write(
            f"\n{request.signal_name}: stopping after the current step and saving a checkpoint "
            "(send it again to stop at once, without saving)\n"
        )
        sys.stderr.flush()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        with watchdog:
            yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class RunCheckpoint(keras.callbacks.Callback):
    """Checkpoints each epoch end, checkpoints and stops on request, stops on a non-finite loss.

    Files: `directory/epoch-NNNN.keras` after epoch NNNN, `epoch-NNNN-step-SSSSSS.keras` when
    stopped SSSSSS steps into epoch NNNN+1, each written under a temporary name then renamed,
    and `state.json` naming the newest, with the seed generator states. Only the newest `keep`
    checkpoints are kept.

    Args:
        directory: str, the checkpoint folder.
        keep: int >= 1, checkpoints kept. Defaults to 2.
        stop_request: `StopRequest` or None, polled after every step.
        start: `(epoch, step)` of the first step this fit runs. Defaults to `(0, 0)`.
    """

    def __init__(self, directory, *, keep=2, stop_request=None, start=(0, 0)):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.stop_request = stop_request
        self.start = start
        self._epoch, self._step = start
        make_directory(directory, what="the checkpoint folder")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._step = self.start[1] if epoch == self.start[0] else 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self._epoch + 1}, step {self._step}; training stopped "
                f"without saving these weights; {last_good_checkpoint(self.directory)}"
            )
        steps = (self.params or {}).get("steps")
        last_step = steps is not None and batch + 1 >= steps
        if self.stop_request is not None and self.stop_request.requested and not last_step:
            # On an epoch's last step, on_epoch_end saves a full-epoch checkpoint instead.
            self._stop(self.save(self._epoch, self._step, logs))

    def on_epoch_end(self, epoch, logs=None):
        path = self.save(epoch + 1, 0, logs)
        if self.stop_request is not None and self.stop_request.requested:
            self._stop(path)

    def _stop(self, path):
        state = checkpoint_state(self.directory)
        raise TrainingInterrupted(
            f"stopped by {self.stop_request.signal_name} at epoch {state['epoch'] + (1 if state['step'] else 0)}"
            + (f", step {state['step']}" if state["step"] else " (end)")
            + f"; checkpoint {path}",
            checkpoint=path,
            epoch=state["epoch"],
            step=state["step"],
        )

    def save(self, epoch, step, logs=None):
        """Writes the checkpoint of `epoch` completed epochs plus `step` steps; returns its path.

        Raises:
            RunWriteError: the checkpoint or `state.json` cannot be written (disk full, ...);
                the message names the file and the last good checkpoint, which is kept.
        """
        name = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "") + ".keras"
        path = os.path.join(self.directory, name)
        state = {
            "epoch": epoch,
            "step": step,
            "checkpoint": name,
            "logs": {k: float(v) for k, v in (logs or {}).items()},
            "seed_generators": [
                np.asarray(keras.ops.convert_to_numpy(v)).tolist()
                for v in seed_generator_states(self.model)
            ],
        }
        try:
            save_checkpoint(self.model, path, state)
            write_json_atomic(os.path.join(self.directory, STATE_FILE), state)
        except RunWriteError as error:
            raise RunWriteError(
                f"{error}; {last_good_checkpoint(self.directory)}",
                errno=error.errno,
                path=error.path,
            ) from None
        self._prune(epoch, step)
        return path

    def _prune(self, epoch, step):
        # Only older ones: a newer file (damaged, skipped on resume) is overwritten when reached.
        older = []
        for name in _checkpoint_files(self.directory):
            match = _CHECKPOINT_NAME.fullmatch(name)
            if (int(match.group(1)), int(match.group(2) or 0)) < (epoch, step):
                older.append(name)
        for name in older[self.keep - 1 :]:
            os.unlink(os.path.join(self.directory, name))


def create_variables_before_fit(model, dataset):
    """Builds the model and its optimizer from `dataset`'s element shapes, before `fit` traces.

    On TensorFlow without a distribution strategy, `fit` leaves building to the trace of the
    first step. Variables created there (a projection head built on first call, every
    optimizer slot) make `tf.function` trace the whole step a second time: about a third of a
    short run's wall time with EfficientNetB1 (see `benchmarks/time_to_first_step.py`).
    Creating them here first gives one trace. A model whose layers cannot all be built from
    its input shape is left to `fit`, as before.

    Args:
        model: a compiled `keras.Model` whose `build(input_shape)` builds its sub-layers.
        dataset: `tf.data.Dataset` of `x` or `(x, y[, sample_weight])` batches.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built:
        return
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not model.built:
        model.build(keras.tree.map_structure(lambda s: tuple(s.shape), x_spec))
    if all(layer.built for layer in model._flatten_layers()):
        optimizer.build(model.trainable_variables)


def fit_resumable(
    model,
    stream,
    *,
    epochs,
    steps_per_epoch,
    checkpoints,
    start=(0, 0),
    callbacks=(),
    stop_request=None,
    **fit_kwargs,
):
    """`model.fit` from any `(epoch, step)`, checkpointing into `checkpoints`.

    Args:
        model: a compiled `keras.Model`.
        stream: function `start_batch -> tf.data.Dataset`, an endless batch stream in which
            batch `b` is step `b % steps_per_epoch` of epoch `b // steps_per_epoch` (see
            `data.epoch_stream.epoch_stream`).
        epochs: int, the epoch to train up to (exclusive, as in `fit`).
        steps_per_epoch: int.
        checkpoints: str, the checkpoint folder (`RunCheckpoint`).
        start: `(epoch, step)` to start from, as stored in `state.json`. Defaults to `(0, 0)`.
        callbacks: other callbacks; `RunCheckpoint` runs after them.
        stop_request: `StopRequest` or None; None installs the SIGINT/SIGTERM handlers here.
        **fit_kwargs: passed to `fit` (e.g. `validation_data`, `verbose`).

    Returns:
        dict metric -> list of per-epoch floats (epochs run by this call).

    Raises:
        TrainingInterrupted: stopped by a signal, after writing a checkpoint.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    epoch, step = start
    if step >= steps_per_epoch:
        epoch, step = epoch + 1, 0
    history = {}
    if epoch >= epochs:
        return history
    owns_request = stop_request is None
    request = StopRequest() if owns_request else stop_request
    context = stop_on_signals(request) if owns_request else contextlib.nullcontext()
    with context:
        runs = []
        if step:
            runs.append((epoch, epoch + 1, steps_per_epoch - step, (epoch, step)))
            epoch += 1
        if epoch < epochs:
            runs.append((epoch, epochs, steps_per_epoch, (epoch, 0)))
        for first, last, steps, run_start in runs:
            checkpoint = RunCheckpoint(checkpoints, stop_request=request, start=run_start)
            batches = stream(run_start[0] * steps_per_epoch + run_start[1])
            create_variables_before_fit(model, batches)
            with lost_files_as_error():  # files that vanished: one line, not a traceback
                fit = model.fit(
                    batches,
                    epochs=last,
                    initial_epoch=first,
                    steps_per_epoch=steps,
                    callbacks=[*callbacks, checkpoint],
                    shuffle=False,
                    **fit_kwargs,
                )
            for key, values in fit.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
    return history
