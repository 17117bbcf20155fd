"""Resumable training: checkpoints, stop requests, RNG state, NaN stops (`ssl_keras/runs/resumable.py`)."""

import errno
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from stand_ins import half_written_save

from ssl_keras.data.epoch_stream import epoch_stream, pass_order, steps_per_pass
from ssl_keras.optimizers import AdamW
from ssl_keras.runs import run_directory
from ssl_keras.runs.run_directory import RunWriteError, save_model_atomic, write_json_atomic
from ssl_keras.runs.resumable import (
    CheckpointError,
    NonFiniteLossError,
    RunCheckpoint,
    StopRequest,
    TrainingInterrupted,
    checkpoint_state,
    fit_resumable,
    load_checkpoint,
    seed_generator_states,
)

STEPS = 5


def toy_data(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1))).astype("float32")
    return x, y


def toy_stream(x, y, batch_size=8):
    table = (tf.constant(x), tf.constant(y))
    return lambda start_batch: epoch_stream(
        table,
        lambda row: row,
        num_items=len(x),
        batch_size=batch_size,
        seed=5,
        start_batch=start_batch,
    )


def toy_model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3, seed=3),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=AdamW(learning_rate=1e-2, weight_decay=0.1), loss="mse")
    return model


def fit_toy(model, stream, folder, *, epochs, stop_request=None, **kwargs):
    """`fit_resumable` as these tests run it: `STEPS` steps an epoch, checkpoints in `folder`,
    quiet, and a fresh `StopRequest` (no signal handlers) unless one is given."""
    return fit_resumable(
        model,
        stream,
        epochs=epochs,
        steps_per_epoch=STEPS,
        checkpoints=str(folder),
        stop_request=StopRequest() if stop_request is None else stop_request,
        verbose=0,
        **kwargs,
    )


class StopAfter(keras.callbacks.Callback):
    """Plays the SIGINT handler: requests a stop after `steps` training steps."""

    def __init__(self, request, steps):
        super().__init__()
        self.request, self.steps, self.seen = request, steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            self.request.signal_name = "SIGINT"


def max_difference(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a.get_weights(), b.get_weights()))


# Epoch streams.


def test_stream_started_anywhere_continues_the_full_stream():
    items = tf.constant(np.arange(10))
    full = [
        b.numpy().tolist()
        for b in epoch_stream(items, lambda i: i, num_items=10, batch_size=3, seed=1).take(9)
    ]
    for start in (1, 3, 4, 8):
        part = epoch_stream(
            items, lambda i: i, num_items=10, batch_size=3, seed=1, start_batch=start
        )
        assert [b.numpy().tolist() for b in part.take(9 - start)] == full[start:]
    # Each pass is 3 full batches of distinct items in a new order; item 10 - 9 = 1 is dropped.
    passes = [sum(full[i : i + 3], []) for i in (0, 3, 6)]
    assert all(len(set(p)) == 9 for p in passes) and len({tuple(p) for p in passes}) == 3


def test_pass_order_is_a_seeded_permutation():
    a = pass_order(50, 7, 3).numpy()
    assert sorted(a.tolist()) == list(range(50))
    assert np.array_equal(a, pass_order(50, 7, 3).numpy())
    assert not np.array_equal(a, pass_order(50, 7, 4).numpy())
    assert not np.array_equal(a, pass_order(50, 8, 3).numpy())


def test_stream_without_drop_remainder_keeps_every_item_each_pass():
    stream = epoch_stream(
        tf.constant(np.arange(7)),
        lambda i: i,
        num_items=7,
        batch_size=3,
        seed=0,
        drop_remainder=False,
    )
    batches = [b.numpy().tolist() for b in stream.take(6)]
    assert steps_per_pass(7, 3, drop_remainder=False) == 3
    assert [len(b) for b in batches] == [3, 3, 1, 3, 3, 1]
    assert sorted(sum(batches[:3], [])) == list(range(7)) == sorted(sum(batches[3:], []))


# Checkpoints, RNG state and resuming.


def test_seed_generator_state_is_restored_from_state_json(tmp_path):
    model = toy_model()
    x, _ = toy_data()
    for _ in range(3):
        model(x, training=True)
    checkpoint = RunCheckpoint(str(tmp_path))
    checkpoint.set_model(model)
    checkpoint.save(1, 0)
    state = checkpoint_state(str(tmp_path))
    plain = keras.saving.load_model(state["path"])
    restored = load_checkpoint(state)
    expected = model(x, training=True)
    # Without the stored state, the dropout masks restart from the seed; with it they continue.
    assert not np.allclose(plain(x, training=True), expected)
    assert np.array_equal(restored(x, training=True), expected)
    assert len(state["seed_generators"]) == len(seed_generator_states(model)) == 1


def test_weight_decay_exclusions_survive_save_and_load(tmp_path):
    model = toy_model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    bias = next(v for v in loaded.trainable_variables if "bias" in v.path)
    kernel = next(v for v in loaded.trainable_variables if "kernel" in v.path)
    assert not loaded.optimizer._use_weight_decay(bias)
    assert loaded.optimizer._use_weight_decay(kernel)


@pytest.mark.large
@pytest.mark.parametrize("stop_after", [7, 10])  # mid-epoch 2, and the last step of epoch 2
def test_stopped_then_resumed_run_matches_an_uninterrupted_one(tmp_path, stop_after):
    x, y = toy_data()
    stream = toy_stream(x, y)
    reference = toy_model()
    fit_toy(reference, stream, tmp_path / "a", epochs=3)

    model = toy_model()
    request = StopRequest()
    with pytest.raises(TrainingInterrupted) as stopped:
        fit_toy(
            model,
            stream,
            tmp_path / "b",
            epochs=3,
            callbacks=[StopAfter(request, stop_after)],
            stop_request=request,
        )
    state = checkpoint_state(str(tmp_path / "b"))
    assert (
        (state["epoch"], state["step"])
        == divmod(stop_after, STEPS)
        == (stopped.value.epoch, stopped.value.step)
    )
    assert stopped.value.checkpoint == state["path"] and os.path.isfile(state["path"])
    assert "stopped by SIGINT" in str(stopped.value)

    resumed = load_checkpoint(state)
    history = fit_toy(
        resumed, stream, tmp_path / "b", epochs=3, start=(state["epoch"], state["step"])
    )
    assert len(history["loss"]) == 3 - state["epoch"]
    assert max_difference(resumed, reference) == 0.0
    assert checkpoint_state(str(tmp_path / "b"))["epoch"] == 3


@pytest.mark.large
def test_resuming_without_the_rng_state_would_differ(tmp_path):
    """The check above can fail: dropout masks restarted from the seed change the weights."""
    x, y = toy_data()
    stream = toy_stream(x, y)
    reference = toy_model()
    fit_toy(reference, stream, tmp_path / "a", epochs=2)
    model = toy_model()
    fit_toy(model, stream, tmp_path / "b", epochs=1)
    state = checkpoint_state(str(tmp_path / "b"))
    plain = keras.saving.load_model(state["path"])  # no seed-generator state
    fit_toy(plain, stream, tmp_path / "b", epochs=2, start=(1, 0))
    assert max_difference(plain, reference) > 1e-4


@pytest.mark.large
def test_non_finite_loss_stops_before_saving_and_names_the_step(tmp_path):
    x, y = toy_data()
    model = toy_model()
    stream = toy_stream(x, y)
    fit_toy(model, stream, tmp_path, epochs=1)
    good = checkpoint_state(str(tmp_path))
    # Poison the targets of epoch 2 from step 3 on (a ReLU would swallow NaN inputs).
    poisoned = y.copy()
    order = pass_order(len(x), 5, 1).numpy()
    poisoned[order[2 * 8 :]] = np.nan
    with pytest.raises(NonFiniteLossError) as error:
        fit_toy(load_checkpoint(good), toy_stream(x, poisoned), tmp_path, epochs=3, start=(1, 0))
    message = str(error.value)
    assert "loss became nan at epoch 2, step 3" in message and good["path"] in message
    state = checkpoint_state(str(tmp_path))
    assert state["checkpoint"] == "epoch-0001.keras" == good["checkpoint"]
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.keras", "state.json"]
    assert all(np.isfinite(w).all() for w in keras.saving.load_model(state["path"]).get_weights())


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    model = toy_model()
    checkpoint = RunCheckpoint(str(tmp_path), keep=2)
    checkpoint.set_model(model)
    for epoch, step in [(1, 0), (1, 3), (2, 0), (2, 4), (3, 0)]:
        checkpoint.save(epoch, step)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".keras")) == [
        "epoch-0002-step-000004.keras",
        "epoch-0003.keras",
    ]
    assert json.loads((tmp_path / "state.json").read_text())["checkpoint"] == "epoch-0003.keras"


# Atomic writes.


class Boom(RuntimeError):
    pass


def test_crash_while_saving_a_model_keeps_the_old_one(tmp_path, monkeypatch):
    model = toy_model()
    path = str(tmp_path / "model.keras")
    save_model_atomic(model, path)
    before = open(path, "rb").read()
    monkeypatch.setattr(
        keras.Model, "save", half_written_save(b"PK\x03\x04 half a zip", Boom("disk full"))
    )
    with pytest.raises(Boom):
        save_model_atomic(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.keras"]  # the partial temporary file is removed
    keras.saving.load_model(path)


def test_crash_while_writing_json_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.json")
    write_json_atomic(path, {"mean_iou": 0.5})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"mean_iou": object()})  # not serialisable
    assert json.loads(open(path).read()) == {"mean_iou": 0.5}

    def crash(fd):  # the new text is in the temporary file, not yet renamed
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"mean_iou": 0.75})
    assert json.loads(open(path).read()) == {"mean_iou": 0.5}
    assert os.listdir(tmp_path) == ["metrics.json"]  # the temporary file is removed


# Damaged checkpoints, missing state and disk-full writes (issue 14).


def two_epochs(folder):
    """Trains 2 epochs of the toy model into `folder`: epoch-0001.keras, epoch-0002.keras."""
    x, y = toy_data()
    model = toy_model()
    fit_toy(model, toy_stream(x, y), folder, epochs=2)
    return model


def truncate(path, fraction=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def test_a_deleted_state_json_resumes_from_the_checkpoints_own_record(tmp_path):
    two_epochs(tmp_path)
    expected = checkpoint_state(str(tmp_path))
    os.unlink(tmp_path / "state.json")
    lines = []
    state = checkpoint_state(str(tmp_path), log=lines.append)
    assert (state["epoch"], state["step"], state["checkpoint"]) == (2, 0, "epoch-0002.keras")
    assert (
        state["seed_generators"] == expected["seed_generators"]
        and state["logs"] == expected["logs"]
    )
    assert lines == [
        f"note: {tmp_path / 'state.json'} is missing; the state stored in epoch-0002.keras is used"
    ]


def test_a_truncated_last_checkpoint_falls_back_to_the_intact_one_and_says_so(tmp_path):
    model = two_epochs(tmp_path)
    truncate(tmp_path / "epoch-0002.keras")
    lines = []
    state = checkpoint_state(str(tmp_path), log=lines.append)
    assert state["checkpoint"] == "epoch-0001.keras" and state["epoch"] == 1
    assert lines == [
        f"skipped {tmp_path / 'epoch-0002.keras'}: truncated or damaged (not a complete "
        ".keras archive); resuming from the newest intact checkpoint, epoch-0001.keras"
    ]
    # The fallback loads, and training from it rewrites epoch 2 as an uninterrupted run would.
    x, y = toy_data()
    resumed = load_checkpoint(state)
    fit_toy(resumed, toy_stream(x, y), tmp_path, epochs=2, start=(1, 0))
    assert max_difference(resumed, model) == 0.0
    assert checkpoint_state(str(tmp_path))["checkpoint"] == "epoch-0002.keras"


def test_a_checkpoint_damaged_inside_is_skipped(tmp_path):
    two_epochs(tmp_path)
    path = tmp_path / "epoch-0002.keras"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # the archive's index is intact, a member is not
    path.write_bytes(bytes(data))
    lines = []
    assert checkpoint_state(str(tmp_path), log=lines.append)["checkpoint"] == "epoch-0001.keras"
    assert len(lines) == 1 and "epoch-0002.keras" in lines[0] and "damaged" in lines[0]


def test_no_intact_checkpoint_is_refused_rather_than_started_over(tmp_path):
    two_epochs(tmp_path)
    for name in ("epoch-0001.keras", "epoch-0002.keras"):
        truncate(tmp_path / name)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with pytest.raises(CheckpointError) as refused:
        checkpoint_state(str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message and "no intact checkpoint to resume from" in message
    assert "epoch-0001.keras: truncated" in message and "epoch-0002.keras: truncated" in message
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    # A state.json naming a checkpoint that is gone is refused too.
    for name in ("epoch-0001.keras", "epoch-0002.keras"):
        os.unlink(tmp_path / name)
    with pytest.raises(
        CheckpointError, match="state.json names epoch-0002.keras, which is missing"
    ):
        checkpoint_state(str(tmp_path))


def test_an_old_checkpoint_without_a_record_needs_state_json(tmp_path):
    # Checkpoints written before the record was stored inside: state.json is their only state.
    model = toy_model()
    save_model_atomic(model, str(tmp_path / "epoch-0001.keras"))
    write_json_atomic(str(tmp_path / "state.json"), {"epoch": 1, "checkpoint": "epoch-0001.keras"})
    assert checkpoint_state(str(tmp_path))["epoch"] == 1
    os.unlink(tmp_path / "state.json")
    with pytest.raises(
        CheckpointError, match="holds no state record and state.json does not name it"
    ):
        checkpoint_state(str(tmp_path))


def test_a_truncated_state_json_is_named_and_the_checkpoints_are_used(tmp_path):
    two_epochs(tmp_path)
    truncate(tmp_path / "state.json")
    lines = []
    assert checkpoint_state(str(tmp_path), log=lines.append)["epoch"] == 2
    assert len(lines) == 1 and lines[0].startswith(
        f"skipped {tmp_path / 'state.json'}: not valid JSON"
    )


def full_disk_at(name, monkeypatch):
    """Makes the write of files called `name` fail as a full disk does, half-way through."""
    real = run_directory.write_text_atomic

    def write_text_atomic(path, text):
        if os.path.basename(path) != name:
            return real(path, text)

        def half_then_enospc(tmp):
            with open(tmp, "w") as f:
                f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        return run_directory.write_file_atomic(path, half_then_enospc)

    monkeypatch.setattr(run_directory, "write_text_atomic", write_text_atomic)


def test_a_full_disk_at_the_state_write_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    x, y = toy_data()
    model = toy_model()
    full_disk_at("state.json", monkeypatch)
    with pytest.raises(RunWriteError) as failed:
        fit_toy(model, toy_stream(x, y), tmp_path, epochs=2)
    message = str(failed.value)
    assert "\n" not in message and failed.value.errno == errno.ENOSPC
    assert message.startswith(
        f"cannot write {tmp_path / 'state.json'}: No space left on device (the disk is full"
    )
    assert f"the last good checkpoint is {tmp_path / 'epoch-0001.keras'} (epoch 1)" in message
    assert os.listdir(tmp_path) == ["epoch-0001.keras"]  # no half state.json, no temporary file
    monkeypatch.undo()
    state = checkpoint_state(str(tmp_path))  # the checkpoint holds its own state: epoch 1, not 0
    assert (state["epoch"], state["step"]) == (1, 0)
    load_checkpoint(state)


def test_a_full_disk_at_the_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    x, y = toy_data()
    fit_toy(toy_model(), toy_stream(x, y), tmp_path, epochs=1)
    good = (tmp_path / "epoch-0001.keras").read_bytes()
    enospc = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(keras.Model, "save", half_written_save(b"PK\x03\x04 half", enospc))
    with pytest.raises(
        RunWriteError,
        match=r"cannot write .*epoch-0002\.keras: No space left on device .*"
        r"the last good checkpoint is .*epoch-0001\.keras \(epoch 1\)$",
    ):
        fit_toy(
            load_checkpoint(checkpoint_state(str(tmp_path))),
            toy_stream(x, y),
            tmp_path,
            epochs=2,
            start=(1, 0),
        )
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.keras", "state.json"]
    assert (tmp_path / "epoch-0001.keras").read_bytes() == good


def test_a_checkpoint_that_cannot_be_loaded_is_one_line_naming_it(tmp_path):
    two_epochs(tmp_path)
    state = checkpoint_state(str(tmp_path))
    truncate(state["path"])  # damaged after it was chosen
    with pytest.raises(
        CheckpointError, match=rf"^checkpoint {re.escape(state['path'])}: cannot be loaded \("
    ):
        load_checkpoint(state)
