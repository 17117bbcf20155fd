"""Resumable training: checkpoints at epoch ends and on Ctrl-C, restored RNG state, NaN stops.

`fit_resumable` wraps `model.fit` for the training commands:

- Every epoch end writes `checkpoints/epoch-NNNN.keras` and `state.json` (see
  `RunCheckpoint`). SIGINT or SIGTERM lets the current step finish, writes
  `epoch-NNNN-step-SSSSSS.keras` and raises `TrainingInterrupted`; a second signal stops at
  once.
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
import math
import os
import re
import signal
import sys
import threading

import keras
import numpy as np

from ssl_keras.data.epoch_stream import lost_files_as_error
from ssl_keras.runs.signal_watchdog import SignalWatchdog
from ssl_keras.runs.run_directory import read_json, save_model_atomic, write_json_atomic

STATE_FILE = "state.json"
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


def checkpoint_state(directory):
    """The content of `directory/state.json` (newest checkpoint), or None if there is none."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None
    state = read_json(path)
    state.setdefault("step", 0)
    state["path"] = os.path.join(directory, state["checkpoint"])
    return state


def load_checkpoint(state):
    """Loads the checkpoint described by `checkpoint_state(...)`, RNG states included."""
    model = keras.saving.load_model(state["path"])
    stored = state.get("seed_generators")
    if stored is not None:
        variables = seed_generator_states(model)
        if len(variables) != len(stored):
            raise ValueError(
                f"checkpoint {state['path']}: {len(stored)} seed generator states stored but the "
                f"model has {len(variables)}; the checkpoint does not match state.json"
            )
        for variable, value in zip(variables, stored):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    return model


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
        sys.stderr.write(f"\n{request.signal_name}: stopping after the current step and saving a checkpoint "
                         "(send it again to stop at once, without saving)\n")
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
        os.makedirs(directory, exist_ok=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._step = self.start[1] if epoch == self.start[0] else 0

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            last = checkpoint_state(self.directory)
            kept = (f"the last good checkpoint is {last['path']} (epoch {last['epoch']}"
                    + (f", step {last['step']}" if last["step"] else "") + ")") if last else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"loss became {float(loss)} at epoch {self._epoch + 1}, step {self._step}; training stopped "
                f"without saving these weights; {kept}"
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
            + (f", step {state['step']}" if state["step"] else " (end)") + f"; checkpoint {path}",
            checkpoint=path, epoch=state["epoch"], step=state["step"],
        )

    def save(self, epoch, step, logs=None):
        """Writes the checkpoint of `epoch` completed epochs plus `step` steps; returns its path."""
        name = f"epoch-{epoch:04d}" + (f"-step-{step:06d}" if step else "") + ".keras"
        path = os.path.join(self.directory, name)
        save_model_atomic(self.model, path)
        write_json_atomic(os.path.join(self.directory, STATE_FILE), {
            "epoch": epoch,
            "step": step,
            "checkpoint": name,
            "logs": {k: float(v) for k, v in (logs or {}).items()},
            "seed_generators": [np.asarray(keras.ops.convert_to_numpy(v)).tolist()
                                for v in seed_generator_states(self.model)],
        })
        self._prune()
        return path

    def _prune(self):
        found = []
        for path in glob.glob(os.path.join(self.directory, "epoch-*.keras")):
            match = _CHECKPOINT_NAME.search(os.path.basename(path))
            if match:
                found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
        for _, path in sorted(found)[: -self.keep]:
            os.unlink(path)


def fit_resumable(model, stream, *, epochs, steps_per_epoch, checkpoints, start=(0, 0), callbacks=(),
                  stop_request=None, **fit_kwargs):
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
            with lost_files_as_error():  # A stream whose files vanished: one line, not a traceback.
                fit = model.fit(stream(run_start[0] * steps_per_epoch + run_start[1]), epochs=last,
                                initial_epoch=first, steps_per_epoch=steps,
                                callbacks=[*callbacks, checkpoint], shuffle=False, **fit_kwargs)
            for key, values in fit.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
    return history
