"""Run directories: refusal to overwrite, one run at a time, atomic file writes, environment records.

- `open_run_directory` takes the directory's lock (`.run.lock`, holding the PID) for the run's
  lifetime, so a second run on the same `--out` is refused with the PID that holds it. The lock
  is an `fcntl.flock`, which the kernel drops when its process dies however it dies, so the file
  a killed run leaves behind is recognised as stale and taken over.
- Every writer here goes through a temporary file beside the target, named per process and per
  call, created with the umask's mode, and renamed into place; an `OSError` (disk full,
  read-only folder) becomes one `RunWriteError` line naming the file.
- `read_json` turns a truncated or hand-edited JSON file into one `RunFileError` line naming it.
"""

import datetime
import errno
import fcntl
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import weakref

LOCK_FILE = ".run.lock"
"""The run directory's lock file (removed when the run ends)."""


class RunDirectoryError(RuntimeError):
    """The output directory cannot be used as asked (exists, or nothing to resume)."""


class RunLockedError(RunDirectoryError):
    """Another process is running in this run directory."""


class RunWriteError(RunDirectoryError, OSError):
    """A run file cannot be written (disk full, read-only folder); the message names the file.

    An `OSError` too, so code that catches write errors by that class still does.
    """

    def __init__(self, message, *, errno=None, path=None):
        super().__init__(message)
        self.errno, self.path = errno, path

    def __reduce__(self):
        # Keyword-only arguments: without this, pickling (from a worker process) loses them.
        return _run_write_error, (str(self), self.errno, self.path)


def _run_write_error(message, errno, path):
    return RunWriteError(message, errno=errno, path=path)


class RunFileError(RunDirectoryError, ValueError):
    """A run file (JSON) left by a user or a previous run cannot be read or parsed."""


def write_error(path, error, *, what="cannot write"):
    """The one-line `RunWriteError` for an `OSError` raised while writing `path`."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason += " (the disk is full: free some space)"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason += " (the folder is not writable by this user)"
    return RunWriteError(f"{what} {path}: {reason}", errno=error.errno, path=path)


def _check_run_directory(out, *, resume, command):
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirectoryError(f"--out {out} is a file, not a directory; choose another --out")
    if resume:
        if not os.path.isfile(os.path.join(out, "config.json")):
            raise RunDirectoryError(
                f"--resume: {out} holds no config.json, so there is no {command} run to continue; "
                "drop --resume to start a new run"
            )
    elif os.path.isdir(out) and [name for name in os.listdir(out) if name != LOCK_FILE]:
        raise RunDirectoryError(
            f"--out {out} exists and is not empty; pass --resume to continue the run in it, or "
            "choose a new --out (nothing there was changed)"
        )


def make_directory(path, *, what="--out"):
    """`os.makedirs(path, exist_ok=True)`, with an `OSError` as one line naming `path`."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise write_error(path, error, what=f"cannot create {what}") from None


def prepare_run_directory(out, *, resume=False, command="pretrain"):
    """Creates `out`, refusing to reuse a non-empty directory unless resuming.

    It takes no lock; `open_run_directory` does the same under the directory's lock.

    Args:
        out: path of the run directory.
        resume: bool, continue the run stored in `out`.
        command: string, the command name used in messages.

    Returns:
        The absolute path of the run directory.
    """
    out = os.path.abspath(os.fspath(out))
    _check_run_directory(out, resume=resume, command=command)
    make_directory(out)
    return out


def open_run_directory(out, *, resume=False, command="pretrain"):
    """`prepare_run_directory` under the directory's lock, which the returned `RunLock` holds.

    The checks run again once the lock is held, since another run may have filled the
    directory meanwhile. A directory with a lock file is locked before any refusal, so that a
    second run is told which process holds it rather than that the directory is not empty.

    Args:
        out: path of the run directory.
        resume: bool, continue the run stored in `out`.
        command: string, the command name, written to the lock and used in messages.

    Returns:
        A `RunLock` (its `directory` is the absolute run directory); call its `release()`, or
        use it as a context manager.

    Raises:
        RunLockedError: another live process holds the directory.
        RunDirectoryError: the directory cannot be used as asked, or cannot be written.
    """
    out = os.path.abspath(os.fspath(out))
    if not os.path.lexists(os.path.join(out, LOCK_FILE)):
        _check_run_directory(out, resume=resume, command=command)  # before creating anything
    make_directory(out)
    lock = RunLock(out, command=command)
    try:
        _check_run_directory(out, resume=resume, command=command)
    except BaseException:
        lock.release()
        raise
    return lock


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _read_holder(fd):
    """The `{"pid", "command", "host", ...}` a lock file holds, or {} while it is being written."""
    for _ in range(20):  # the holder writes its record right after taking the lock
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
        try:
            holder = json.loads(text)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except ValueError:
            pass
        time.sleep(0.05)
    return {}


def _same_file(fd, path):
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _release_lock(fd, path):
    # Removed while still locked, so a run waiting on the old file sees it vanish and retries.
    if _same_file(fd, path):
        try:
            os.unlink(path)
        except OSError:
            pass
    os.close(fd)


class RunLock:
    """This process's exclusive lock on a run directory (`directory/.run.lock`).

    The file holds `{"pid", "command", "host", "started"}` of the run that holds it. The lock
    itself is an `fcntl.flock` on the file: the kernel drops it when the process ends, even by
    SIGKILL, so a lock file whose lock nobody holds is stale and is taken over
    (`previous_holder` then records what it held). `release()` removes the file; it also runs
    when the lock is garbage-collected and at interpreter exit, for a lock never released.

    Args:
        directory: str, an existing run directory.
        command: str, the command name, recorded in the lock and used in messages.

    Raises:
        RunLockedError: a live process holds the lock.
        RunWriteError: the lock file cannot be created (read-only directory, ...).
    """

    def __init__(self, directory, *, command):
        self.directory, self.command = directory, command
        self.path = os.path.join(directory, LOCK_FILE)
        self.previous_holder = None
        self._release = weakref.finalize(self, _release_lock, self._acquire(), self.path)

    def _open(self):
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(self.path, error, what="cannot create the run's lock file") from None

    def _acquire(self):
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._locked_error(holder) from None
            except OSError:  # no flock on this file system: trust a live PID in the file
                holder = _read_holder(fd)
                if holder.get("pid") not in (None, os.getpid()) and _process_alive(holder["pid"]):
                    os.close(fd)
                    raise self._locked_error(holder) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it between our open and flock: take the new one
        self._take_over(fd)
        return fd

    def _take_over(self, fd):
        os.lseek(fd, 0, os.SEEK_SET)
        left = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if left:
            try:
                self.previous_holder = json.loads(left)
            except ValueError:
                self.previous_holder = {"pid": None, "text": left[:80]}
        record = {
            "pid": os.getpid(),
            "command": self.command,
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except OSError as error:
            os.close(fd)
            raise write_error(self.path, error) from None

    def _locked_error(self, holder):
        if holder.get("pid") is None:
            who = "another process (its PID is not recorded yet)"
        else:
            command = holder.get("command")
            who = f"another ssl-keras {command + ' ' if command else ''}run, PID {holder['pid']}"
            if holder.get("host") and holder["host"] != socket.gethostname():
                who += f" on {holder['host']}"
            if holder.get("started"):
                who += f", started {holder['started']}"
        return RunLockedError(
            f"--out {self.directory} is in use by {who}; wait for it to finish or stop it, or choose "
            f"another --out (nothing there was changed)"
        )

    def takeover_note(self):
        """A line saying whose stale lock was taken over, or None if the lock file was new."""
        holder = self.previous_holder
        if not holder:
            return None
        pid = holder.get("pid")
        if pid is None:
            return f"note: {self.path} held no valid record; took the lock over"
        state = "is no longer running" if not _process_alive(pid) else "no longer holds it"
        return (
            f"note: {self.directory} was locked by PID {pid} ({holder.get('command') or 'a run'}), "
            f"which {state} (killed?); took the lock over"
        )

    @property
    def held(self):
        """Whether this lock is still held."""
        return self._release.alive

    def release(self):
        """Removes the lock file and drops the lock; does nothing the second time."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


def write_json_atomic(path, payload):
    """Writes JSON through a temporary file and a rename, so a crash never leaves half a file."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_text_atomic(path, text)


def write_text_atomic(path, text):
    """Writes a text file through a temporary file and a rename, so a crash never leaves half a file.

    The file gets the mode any new file gets here (0666 less the umask), as `open` would give.
    """

    def write(tmp):
        # O_EXCL with 0o666: the kernel applies the umask (mkstemp would give 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_file_atomic(path, write)


_TEMPORARY_NAME = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}-")


def remove_stale_temporaries(directory):
    """Removes the temporary files that killed processes left in `directory`; returns their names.

    Only names that `temporary_name` makes, and only those of processes no longer running.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in sorted(names):
        match = _TEMPORARY_NAME.match(name)
        path = os.path.join(directory, name)
        if match and not _process_alive(int(match.group(1))) and os.path.isfile(path):
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
    return removed


def temporary_name(path):
    """A temporary path beside `path`, unique to this process and call, ending with `path`'s name."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(
        directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{os.path.basename(path)}"
    )


def write_file_atomic(path, write):
    """Calls `write(tmp)` on a temporary path beside `path`, then renames the result to `path`.

    `path` only ever appears complete: an existing file stays untouched until the new one is
    whole, and no temporary file is left behind, whether `write` succeeds or raises. The
    temporary name holds the process id and a random part, so two processes (or two calls)
    writing the same file never share one, and ends with `path`'s own name, so writers that
    pick the format from the extension (`model.save`, `figure.savefig`) still see it. The
    folder is created if needed. An `OSError` (disk full, read-only folder) is raised as a
    `RunWriteError` naming `path`; other exceptions of `write` pass through unchanged.

    Args:
        path: the file to write.
        write: function taking the temporary path (a string) and writing the whole file there.

    Returns:
        `path`.

    Raises:
        RunWriteError: an `OSError` while writing or renaming.

    Example:

    >>> write_file_atomic("plot.png", lambda tmp: figure.savefig(tmp, format="png"))  # doctest: +SKIP
    """
    make_directory(os.path.dirname(os.path.abspath(path)), what="the folder of")
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, RunWriteError):
            raise write_error(path, error) from error
        raise
    return path


def save_png_atomic(image, path):
    """Writes a `[H, W, 3]` uint8 array (or a PIL image) as a PNG, through `write_file_atomic`."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    return write_file_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary file and a rename: a crash never leaves half a model.

    An existing file at `path` stays untouched until the new one is complete.
    """
    return write_file_atomic(path, model.save)


def replace_path_atomic(tmp_path, final_path):
    """Moves a finished file or directory into place; an older one is removed only afterwards."""
    if os.path.isdir(final_path) and not os.path.islink(final_path):
        old = temporary_name(final_path) + ".old"
        os.replace(final_path, old)
        os.replace(tmp_path, final_path)
        shutil.rmtree(old)
    else:
        os.replace(tmp_path, final_path)


def read_json(path):
    """The JSON value in `path`.

    Raises:
        FileNotFoundError: `path` does not exist.
        RunFileError: it cannot be read, or is not valid JSON (truncated, edited by hand).
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RunFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise RunFileError(
            f"{path}: not valid JSON (not UTF-8 text); it was damaged or edited"
        ) from None
    except json.JSONDecodeError as error:
        empty = " (it is empty)" if os.path.getsize(path) == 0 else ""
        raise RunFileError(
            f"{path}: not valid JSON{empty} ({error.msg} at line {error.lineno}, column "
            f"{error.colno}); the file is truncated (a full disk or a killed run?) or was edited"
        ) from None


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        result = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_info():
    """Library versions, backend, devices and the package's git commit, for the run record."""
    import keras
    import numpy

    import ssl_keras

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ssl_keras": ssl_keras.__version__,
        "ssl_keras_git_commit": _git_commit(),
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "backend": keras.config.backend(),
        "devices": accelerator_devices() or ["cpu"],
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for module in ("tensorflow", "jax", "torch"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", None)
    return info


def accelerator_devices():
    """Names of the accelerators visible to the active Keras backend (empty on CPU)."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def resolved_jit_compile():
    """XLA only with an accelerator: on CPU, TF graph mode is about 8x faster than XLA here."""
    return "auto" if accelerator_devices() else False
