"""Filters TensorFlow's C++ start-up lines out of a command's stderr.

Importing TensorFlow prints, from C++ and whatever `TF_CPP_MIN_LOG_LEVEL` says (they are
logged before absl's logging is set up), lines such as:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796158699.760321    6713 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796158699.760667    6713 cudart_stub.cc:31] Could not find cuda drivers ...

and they come twice, because two of TensorFlow's extension modules
(`_pywrap_cpu_feature_guard`, then `_pywrap_profiler_plugin`) each carry their own copy of its
logging. The first use of a device adds `E0000 ... failed call to cuInit: ... (303)` on a
machine without a GPU, which reads like a failure. The CLI (unless `--verbose`) points file
descriptor 2 at a temporary file while TensorFlow is imported and its devices are listed, then
writes back every line that is not one of these known start-up lines: a Python warning or a real
error still shows.

The CLI asks for it with the environment variable `QUIET_ENV`, which the worker processes of
`ssl_keras.runs.parallel_runs` inherit; `ssl_keras/__init__.py` installs the filter in them.
"""

import contextlib
import os
import re
import sys
import tempfile

QUIET_ENV = "SSL_KERAS_QUIET_TF_STARTUP"
"""Set to "1" by the CLI (without --verbose): filter TensorFlow's start-up lines."""

STARTUP_LINES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    # absl's "I0000 00:00:1796158699.760321    6713 file.cc:153] ..." info lines.
    re.compile(r"^I\d{4} [\d:.]+ +\d+ \S+:\d+\] "),
    re.compile(
        r"^[EW]\d{4} [\d:.]+ +\d+ \S+:\d+\] .*("
        r"failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
        r"TF-TRT Warning|Could not find TensorRT|computation placer already registered)"
    ),
    # The second line of cpu_feature_guard's info message.
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow"),
)
"""TensorFlow's start-up lines: absl's notice, info lines, and the GPU probes' errors."""


def is_startup_line(line):
    """True for one of TensorFlow's known start-up lines (see `STARTUP_LINES`)."""
    return any(pattern.search(line) for pattern in STARTUP_LINES)


@contextlib.contextmanager
def filtered_stderr():
    """Sends file descriptor 2 to a temporary file inside the block, then writes back the
    lines that `is_startup_line` does not match."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        _flush_stderr()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not is_startup_line(line)
            ]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))


def _flush_stderr():
    with contextlib.suppress(Exception):
        sys.stderr.flush()


@contextlib.contextmanager
def quiet_tensorflow_import():
    """The import of TensorFlow, and its first listing of devices, with `filtered_stderr`.

    It reads `QUIET_ENV` again when the import starts: `--verbose` clears it after
    `ssl_keras/__init__.py` has installed the filter (from a parent's environment).
    """
    if os.environ.get(QUIET_ENV) != "1":
        yield
        return
    with filtered_stderr():
        yield
    # The import is done here; the CUDA probe (cuInit) runs at the first device listing.
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()


LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_defaulted = []  # [True] once `default_tensorflow_log_level` has set LOG_LEVEL_ENV itself


def default_tensorflow_log_level():
    """Sets `TF_CPP_MIN_LOG_LEVEL=2` (warnings and errors only) unless the user has set it.

    TensorFlow reads it when it loads, so this must run before anything imports TensorFlow.
    """
    if LOG_LEVEL_ENV not in os.environ:
        os.environ[LOG_LEVEL_ENV] = "2"
        _defaulted.append(True)


def restore_tensorflow_log_level():
    """Undoes `default_tensorflow_log_level` (`--verbose`): TensorFlow logs as it would by itself."""
    if _defaulted:
        os.environ.pop(LOG_LEVEL_ENV, None)
        _defaulted.clear()
    os.environ.pop(QUIET_ENV, None)


def install_if_requested():
    """Filters TensorFlow's start-up lines in this process if `QUIET_ENV` asks for it."""
    if os.environ.get(QUIET_ENV) == "1":
        from ssl_keras.import_hooks import around_import

        around_import("tensorflow", quiet_tensorflow_import)
