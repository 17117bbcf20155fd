"""SIGINT and SIGTERM end a real process whose main thread is blocked inside tf.data."""

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.large  # real processes

# A tf.data iterator that never yields: the main thread stays inside native code, where
# Python signal handlers cannot run.
BLOCKED = """
import sys
import tensorflow as tf
from ssl_keras.runs import signal_watchdog
from ssl_keras.runs.resumable import StopRequest, stop_on_signals
signal_watchdog.FIRST_SIGNAL_GRACE_S = float(sys.argv[1])
blocked = tf.data.Dataset.range(1).repeat().filter(lambda x: x < 0)
iterator = iter(blocked)
with stop_on_signals(StopRequest()):
    print("ready", flush=True)
    next(iterator)
"""


def blocked_process(first_grace_s):
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKED, str(first_grace_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # Inside `next`.
    return process


def finish(process, timeout):
    try:
        return process.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the blocked process ignored the signal for {timeout} s")


def test_sigterm_ends_a_blocked_process_after_the_grace_period_with_143():
    process = blocked_process(first_grace_s=2)
    process.send_signal(signal.SIGTERM)
    stderr = finish(process, timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: the main thread did not respond within 2 s" in stderr


def test_a_second_sigint_ends_a_blocked_process_at_once_with_130():
    process = blocked_process(first_grace_s=600)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    stderr = finish(process, timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert time.monotonic() - started < 30
    assert "SIGINT: the main thread did not respond within 3 s" in stderr
