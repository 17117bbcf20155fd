"""`run_parallel`: independent training runs (grid cells, pretraining stages) in worker processes.

On a small CPU a grid of small models leaves cores idle: a cell spends much of its wall time in
single-threaded Python (tracing the train and eval functions, writing checkpoints, data
preparation), so one process uses about 1.1 of 2 cores. Running two cells at once fills them.

Each worker is a fresh `spawn` process (TensorFlow must not be forked) that runs one task at a
time and sends back the task's result, its log lines and its exception, if any. A task is a
module-level function named `"module:function"`, called with its keyword arguments and `log=`.
Tasks write their outputs to their own run directories, so results do not depend on which worker
ran a task, or on how many workers there were.

Stopping. The workers sit in their own process group, so a Ctrl-C in a terminal reaches only
the parent, which then sends each busy worker exactly one SIGTERM: a worker inside `fit` saves a
checkpoint and reports `TrainingInterrupted` (resume works as after a sequential run), one
outside `fit` exits at once (every file is written atomically). The parent then raises the
first `TrainingInterrupted` (or the `KeyboardInterrupt`). A SIGTERM to the parent acts the same,
and so does a SIGINT to a parent that a shell started with SIGINT ignored (in the background).
A worker that dies (killed, out of memory) stops the run with an error naming its task.
"""

import importlib
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time

STOP_GRACE_SECONDS = 600
"""How long stopped workers get to write their checkpoints before they are killed."""


def _portable(error):
    """`error` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _worker(tasks, results, parent_pid):
    # Own process group: the terminal's Ctrl-C goes to the parent only, which stops us once.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:  # the parent is gone: nobody would read a result
                return
            continue
        if task is None:
            return
        key, target, kwargs = task
        try:
            module, name = target.split(":")
            function = getattr(importlib.import_module(module), name)
            result = function(
                log=lambda line, key=key: results.put(("log", key, str(line))), **kwargs
            )
            results.put(("done", key, result))
        except BaseException as error:  # noqa: B902 - the parent decides; KeyboardInterrupt included
            results.put(("error", key, _portable(error)))


class _Workers:
    """The worker processes, each with its own task queue, and the parent's view of them."""

    def __init__(self, count):
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.queues = [context.Queue() for _ in range(count)]
        self.processes = [
            context.Process(target=_worker, args=(q, self.results, os.getpid()), daemon=True)
            for q in self.queues
        ]
        for process in self.processes:
            process.start()
        self.busy = {}  # worker index -> task key

    def idle(self):
        return [i for i in range(len(self.processes)) if i not in self.busy]

    def submit(self, index, key, target, kwargs):
        self.busy[index] = key
        self.queues[index].put((key, target, kwargs))

    def release(self, key):
        self.busy = {i: k for i, k in self.busy.items() if k != key}

    def dead_task(self):
        """(key, exit code) of a busy worker that has died, or None."""
        for index, key in self.busy.items():
            process = self.processes[index]
            if not process.is_alive():
                return key, process.exitcode
        return None

    def close(self):
        for q in self.queues:
            q.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    def stop(self, on_message):
        """SIGTERM to every busy worker, then waits for them, passing on what they still report."""
        for index in self.busy:
            process = self.processes[index]
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.busy and time.monotonic() < deadline:
            try:
                on_message(*self.results.get(timeout=0.5))
            except queue.Empty:
                self.busy = {i: k for i, k in self.busy.items() if self.processes[i].is_alive()}
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)


def _signal_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _submit_to_idle(pool, pending, prepare):
    """Gives each idle worker the next pending key that `prepare` does not leave out."""
    for index in pool.idle():
        task = None
        while pending and task is None:
            key = pending.pop(0)
            task = prepare(key)
        if task is None:
            break
        pool.submit(index, key, *task)


def _next_message(pool):
    """The next `(kind, key, payload)` from the workers, or None after a second without one.

    Raises:
        RuntimeError: a worker process died without reporting (killed, out of memory).
    """
    try:
        return pool.results.get(timeout=1.0)
    except queue.Empty:
        dead = pool.dead_task()
        if dead:
            raise RuntimeError(
                f"the worker process running {dead[0]} died (exit code {dead[1]}); rerun "
                "the same command to continue (finished runs are kept)"
            )
        return None


def run_parallel(keys, *, workers, prepare, on_log=None, on_done=None, on_error=None):
    """Runs one task per key in `workers` processes, in the order of `keys`, and returns the results.

    Args:
        keys: list of hashable task keys.
        workers: int >= 1, the number of processes.
        prepare: callable `(key)` returning `("module:function", kwargs)` (picklable keyword
            arguments; the function also receives `log=`), or None to leave the task out. It is
            called just before the task starts, so it can look at what earlier tasks left on
            disk (e.g. whether to resume, or that a backbone was found missing).
        on_log: None, or callable `(key, line)`, for each line a task logs.
        on_done: None, or callable `(key, result)`.
        on_error: None, or callable `(key, error)` returning True when the error is handled (the
            run goes on); otherwise the run stops and the error is raised.

    Returns:
        {key: result} of the tasks that finished.

    Raises:
        The first unhandled error of a task (after the other workers were stopped), or
        `TrainingInterrupted` / `KeyboardInterrupt` when stopped by SIGINT or SIGTERM.
    """
    from ssl_keras.runs.resumable import TrainingInterrupted

    pending = list(keys)
    done = {}
    interrupted = []
    pool = _Workers(min(workers, max(1, len(pending))))

    def on_message(kind, key, payload):
        if kind == "log":
            if on_log:
                on_log(key, payload)
            return
        pool.release(key)
        if kind == "done":
            done[key] = payload
            if on_done:
                on_done(key, payload)
        elif isinstance(payload, TrainingInterrupted):
            interrupted.append(payload)
        elif isinstance(payload, KeyboardInterrupt):
            pass
        elif not (on_error and on_error(key, payload)):
            raise payload

    in_main_thread = threading.current_thread() is threading.main_thread()
    # Both signals explicitly: a process started in the background by a shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler of its own.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = (
        {sig: signal.signal(sig, _signal_as_interrupt) for sig in stop_signals}
        if in_main_thread
        else {}
    )
    try:
        while pending or pool.busy:
            _submit_to_idle(pool, pending, prepare)
            if not pool.busy:
                break
            message = _next_message(pool)
            if message is None:
                continue
            on_message(*message)
            if interrupted:  # a worker was stopped from outside: stop the others the same way
                raise KeyboardInterrupt
    except BaseException as error:
        try:
            pool.stop(lambda *message: _quietly(on_message, message))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if isinstance(error, KeyboardInterrupt) and interrupted:
            raise interrupted[0] from None
        raise
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    pool.close()
    return done


def _quietly(on_message, message):
    # While stopping, a second task's error must not hide the first one.
    try:
        on_message(*message)
    except Exception:
        pass
