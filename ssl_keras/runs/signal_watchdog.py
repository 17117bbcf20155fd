"""A watchdog that makes SIGINT/SIGTERM work while the main thread is blocked in native code.

Python runs a signal handler only when the main thread next executes Python code. A main
thread blocked inside a native call (a tf.data iterator waiting on a pipeline that yields
nothing, a read from a hung network drive) never does, so the handlers of `stop_on_signals`
never run and only SIGKILL ends the process. The C-level part of Python's handler still
writes the signal number to the wakeup file descriptor (`signal.set_wakeup_fd`), even then;
a thread reading it sees every signal, and ends the process with `128 + signal` when the main
thread has not reacted within a grace period.
"""

import os
import signal
import socket
import sys
import threading
import time

FIRST_SIGNAL_GRACE_S = 30.0
"""Seconds the main thread has to start handling a first signal (it stops after the current
training step, which may be long on a CPU) before the process exits at once."""

NEXT_SIGNAL_GRACE_S = 3.0
"""Seconds a process has to end after a second signal before it exits at once."""


class SignalWatchdog:
    """Ends the process when a signal is not handled in time because the main thread is stuck.

    Use as a context manager, from the main thread, around code whose Python signal handlers
    call `handled()` (the first signal) or exit (the next ones).

    Args:
        first_grace_s: float, seconds for the main thread to call `handled()` after a first
            signal. Defaults to None: `FIRST_SIGNAL_GRACE_S`.
        next_grace_s: float, seconds for the process to end after a later signal. Defaults
            to None: `NEXT_SIGNAL_GRACE_S`.
    """

    def __init__(self, *, first_grace_s=None, next_grace_s=None):
        self.first_grace_s = FIRST_SIGNAL_GRACE_S if first_grace_s is None else first_grace_s
        self.next_grace_s = NEXT_SIGNAL_GRACE_S if next_grace_s is None else next_grace_s
        self._handled = threading.Event()
        self._closed = threading.Event()
        self._reader = self._writer = None
        self._previous_fd = None

    def handled(self):
        """Called by the Python handler of the first signal: the main thread is responsive."""
        self._handled.set()

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        try:
            self._previous_fd = signal.set_wakeup_fd(
                self._writer.fileno(), warn_on_full_buffer=False
            )
        except ValueError:  # Not the main interpreter: nothing to watch.
            self._close_sockets()
            return self
        threading.Thread(target=self._watch, name="signal-watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        if self._reader is None:
            return
        self._closed.set()
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        self._close_sockets()

    def _close_sockets(self):
        for sock in (self._writer, self._reader):
            sock.close()
        self._reader = self._writer = None

    def _watch(self):
        reader, seen = self._reader, 0
        while not self._closed.is_set():
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                seen += 1
                first = seen == 1
                threading.Thread(target=self._deadline, args=(signum, first), daemon=True).start()

    def _deadline(self, signum, first):
        deadline = time.monotonic() + (self.first_grace_s if first else self.next_grace_s)
        while time.monotonic() < deadline:
            if self._closed.is_set() or (first and self._handled.is_set()):
                return
            time.sleep(0.05)
        name = signal.Signals(signum).name
        waited = self.first_grace_s if first else self.next_grace_s
        sys.stderr.write(
            f"\n{name}: the main thread did not respond within {waited:g} s (blocked in the "
            "data pipeline or a file read?); exiting at once, without a new checkpoint; "
            "--resume continues from the last one\n"
        )
        sys.stderr.flush()
        os._exit(128 + signum)
