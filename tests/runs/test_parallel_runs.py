"""`run_parallel`: results, handled and unhandled task errors, left-out tasks, a dead worker, SIGTERM."""

import os
import pickle
import signal
import threading
import time

import pytest

from ssl_keras.runs.parallel_runs import run_parallel
from ssl_keras.runs.resumable import TrainingInterrupted

TARGET = "test_parallel_runs:task"


def task(*, value, log, fail=None, sleep=0.0):
    """What the workers run: logs, optionally sleeps or fails, and returns value squared with its pid."""
    log(f"working on {value}")
    time.sleep(sleep)
    if fail == "value":
        raise ValueError(f"value {value} is bad")
    if fail == "exit":
        os._exit(3)
    if fail == "interrupted":
        raise TrainingInterrupted(f"stopped at {value}", checkpoint="c.keras", epoch=value, step=0)
    return value * value, os.getpid()


def test_training_interrupted_keeps_its_fields_through_pickling():
    error = pickle.loads(
        pickle.dumps(TrainingInterrupted("stopped", checkpoint="x.keras", epoch=3, step=7))
    )
    assert (str(error), error.checkpoint, error.epoch, error.step) == ("stopped", "x.keras", 3, 7)


@pytest.mark.large
def test_two_workers_run_every_task_and_pass_on_logs_and_results():
    logs, done = [], []
    results = run_parallel(
        list(range(5)),
        workers=2,
        prepare=lambda key: (TARGET, {"value": key, "sleep": 0.2}),
        on_log=lambda key, line: logs.append((key, line)),
        on_done=lambda key, result: done.append(key),
    )
    assert {key: value for key, (value, _) in results.items()} == {k: k * k for k in range(5)}
    assert sorted(done) == list(range(5)) and sorted(logs) == [
        (k, f"working on {k}") for k in range(5)
    ]
    pids = {pid for _, pid in results.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two processes, neither of them this one


@pytest.mark.large
def test_prepare_returning_none_leaves_a_task_out_and_a_handled_error_goes_on():
    errors = []

    def prepare(key):
        if key == 1:
            return None
        return TARGET, {"value": key, "fail": "value" if key == 2 else None}

    results = run_parallel(
        [0, 1, 2, 3],
        workers=2,
        prepare=prepare,
        on_error=lambda key, error: errors.append((key, str(error))) or True,
    )
    assert sorted(results) == [0, 3] and errors == [(2, "value 2 is bad")]


@pytest.mark.large
def test_an_unhandled_task_error_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="value 2 is bad"):
        run_parallel([2], workers=2, prepare=lambda key: (TARGET, {"value": key, "fail": "value"}))


@pytest.mark.large
def test_a_worker_that_dies_stops_the_run_with_an_error_naming_its_task():
    with pytest.raises(RuntimeError, match=r"running 7 died \(exit code 3\)"):
        run_parallel([7], workers=1, prepare=lambda key: (TARGET, {"value": key, "fail": "exit"}))


@pytest.mark.large
def test_a_task_interrupted_in_a_worker_stops_the_run_with_training_interrupted():
    with pytest.raises(TrainingInterrupted, match="stopped at 4") as error:
        run_parallel(
            [4, 5], workers=1, prepare=lambda key: (TARGET, {"value": key, "fail": "interrupted"})
        )
    assert error.value.epoch == 4


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_parent_stops_the_busy_workers_even_if_sigint_was_ignored(signum):
    # A shell starts a background job with SIGINT ignored; Python then has no KeyboardInterrupt handler.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        threading.Timer(3.0, lambda: os.kill(os.getpid(), signum)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_parallel(
                [0, 1], workers=2, prepare=lambda key: (TARGET, {"value": key, "sleep": 120})
            )
        # The sleeping workers were stopped (SIGTERM outside training ends a worker at once), not waited for.
        assert time.monotonic() - started < 60
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the caller's handler is back
    finally:
        signal.signal(signal.SIGINT, previous)
